"""The custom flavor's models start in the SageMaker PyTorch container with no network.

The endpoint and the fine-tune workflow's CreateModel set EnableNetworkIsolation, so the
toolkit's start-up ``pip install -r code/requirements.txt`` cannot reach PyPI. Both model
producers are started here the container's way, inside a network namespace with no network
(tests/runtime/sagemaker_container.py says what is real and what stands in):

- what `semsearch package` builds (onnx/ and a packaged corpus inside), and
- what train.py writes when run from the training job's source bundle (no onnx/: the
  handler exports it at load time with torch, transformers and onnx from the wheels).

Every request shape of inference_code/contracts.py is served and compared with the embedder
run in this process (Python 3.11, the repository's own packages).

The first run builds a CPython 3.12 venv with torch 2.6.0 under build/ (a few GB from PyPI,
then pip's cache); later runs reuse it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import sagemaker_container  # tests/runtime/sagemaker_container.py
from packaging.markers import default_environment
from packaging.requirements import Requirement

from inference_code.embedder import BF16_FLAGS, load_embedder, read_cpu_flags
from semsearch import container_wheels
from training_code.archives import extract_tar

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["ssh client", "portable network graphics library", "a text editor for the terminal"]
CORPUS = [{"id": f"doc-{i}", "text": text} for i, text in enumerate([
    "OpenSSH secure shell client for remote login", "PNG image format reference library",
    "small and friendly console text editor", "network time protocol daemon and utilities",
    "GNU compiler collection for C and C++", "Python HTTP library for humans"])]


def cosine(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def contract_cases() -> list:
    json_type = "application/json"
    return [
        (json.dumps(TEXTS), json_type, json_type),
        (json.dumps({"inputs": TEXTS}), json_type, json_type),
        (json.dumps({"text_inputs": TEXTS}), json_type, json_type),
        (json.dumps({"queries": TEXTS[:2], "corpus": [c["text"] for c in CORPUS], "top_k": 2, "mode": "nn_corpus"}),
         json_type, json_type),
        (json.dumps({"queries": ["ssh client"], "top_k": 3, "mode": "nn_train_data"}), json_type, json_type),
        ("".join(json.dumps({"id": i, "text_inputs": t}) + "\n" for i, t in enumerate(TEXTS)),
         "application/jsonlines", "application/jsonlines"),
        ("[]", json_type, json_type),
        ("a,b", "text/csv", json_type),
    ]


def check_contracts(served: dict, model_dir: Path, with_corpus: bool) -> None:
    """Every shape served offline; embeddings as the in-process embedder gives them."""
    assert served["leaked"] == []
    expected = load_embedder(model_dir).embed(TEXTS)
    (s1, bare), (s2, inputs), (s3, text_inputs), (s4, nn_corpus), (s5, nn_train), (s6, lines), (s7, empty), \
        (s8, csv) = served["results"]
    assert (s1, s2, s3, s4, s6) == (200, 200, 200, 200, 200), served["results"]
    for vectors in (json.loads(bare), json.loads(inputs), json.loads(text_inputs)["embedding"],
                    [json.loads(line)["embedding"] for line in lines.splitlines()]):
        assert cosine(vectors, expected).min() >= 0.9999
    assert [json.loads(line)["id"] for line in lines.splitlines()] == [0, 1, 2]
    hits = json.loads(nn_corpus)
    assert [h[0]["corpus_id"] for h in hits] == [0, 1]  # ssh → OpenSSH, png → PNG
    if with_corpus:
        assert s5 == 200 and json.loads(nn_train)[0][0]["id"] == "doc-0"
    else:
        assert s5 == 400 and "needs corpus embeddings packaged in the model" in nn_train
    assert s7 == 400 and "the array is empty" in empty
    assert s8 == 415 and "unsupported content type" in csv
    # The GPU path's backend (PyTorch + transformers from the wheels) agrees with ONNX Runtime.
    assert cosine(served["torch"], served["onnx"]).min() >= 0.9999
    # OpenVINO from the wheels runs there too (bf16 on a CPU with it), within the exact promise,
    # and the handler picks the same path there as here.
    assert cosine(served["openvino"], served["onnx"]).min() >= 0.9999
    assert served["path"] == ("openvino bf16" if read_cpu_flags() & BF16_FLAGS else "onnx fp32")


@pytest.fixture(scope="module")
def packaged(module_tmp, model_dir) -> Path:
    folder = module_tmp.mktemp("package")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in CORPUS))
    out = folder / "model.tar.gz"
    result = subprocess.run([sys.executable, "-m", "semsearch.cli", "package", "--model-dir", str(model_dir),
                             "--out", str(out), "--corpus", str(corpus)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    return out


def requirement_names() -> set[str]:
    return set(container_wheels.requirements(REPO / "inference_code/requirements.txt"))


def test_requirement_files_read_as_names_and_pins_and_a_bad_line_is_named(tmp_path):
    good = tmp_path / "requirements.txt"
    good.write_text("# why\n--no-index\n--find-links wheels\n\nSentence_Transformers==5.1.0  # pinned\nonnx\n")
    assert container_wheels.requirements(good) == {"sentence_transformers": "5.1.0", "onnx": None}
    bad = tmp_path / "bad.txt"
    bad.write_text("onnx\ntorch>=2.6\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 2: expected name or name==version, got 'torch>=2.6'"):
        container_wheels.requirements(bad)
    lock = tmp_path / "lock.txt"
    lock.write_text("onnx==1.17.0\nnumpy\n")
    with pytest.raises(ValueError, match=r"lock.txt, line 2: expected name==version, got 'numpy'"):
        container_wheels.locked(lock)


def test_the_wheel_lock_is_exactly_the_closure_of_the_requirements():
    """pip resolves every declared dependency, imported or not: each must be locked, or be one
    of the container's own packages that the lock leaves alone; and nothing else is locked."""
    pins = container_wheels.locked()
    needs: dict[str, set[str]] = {}
    env = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.8",
           "platform_machine": "x86_64", "sys_platform": "linux", "platform_system": "Linux",
           "implementation_name": "cpython"}
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    problems = []
    for wheel in container_wheels.wheel_files():
        import zipfile

        with zipfile.ZipFile(wheel) as z:
            (metadata,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
            lines = z.read(metadata).decode().splitlines()
        for line in lines:
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker and not req.marker.evaluate({**env, "extra": ""}):
                continue
            name = container_wheels.canonical(canonicalize_name(req.name))
            needs.setdefault(container_wheels.canonical(wheel.name.split("-")[0]), set()).add(name)
            if name in ("numpy", "torch"):
                continue  # the container's own
            if name not in pins:
                problems.append(f"{wheel.name} needs {req}, not locked")
            elif not req.specifier.contains(Version(pins[name]), prereleases=True):
                problems.append(f"{wheel.name} needs {req}, locked {pins[name]}")
    assert problems == []
    reachable, todo = set(), list(requirement_names())
    while todo:
        name = todo.pop()
        if name not in reachable and name in pins:
            reachable.add(name)
            todo.extend(needs.get(name, ()))
    assert sorted(set(pins) - reachable) == []


def test_requirements_install_only_from_the_shipped_wheels():
    text = (REPO / "inference_code/requirements.txt").read_text()
    options = [line.split() for line in text.splitlines() if line.startswith("-")]
    assert ["--no-index"] in options and ["--find-links", container_wheels.CODE_SUBDIR] in options
    assert requirement_names() and requirement_names() <= set(container_wheels.locked())


def test_synth_without_the_wheels_names_the_make_target(tmp_path):
    from stacks.components.source_bundle import build_training_bundle

    (tmp_path / "wheels").mkdir()
    with pytest.raises(container_wheels.WheelsMissing) as e:
        build_training_bundle(tmp_path / "bundle", wheels_dir=tmp_path / "wheels")
    n = len(container_wheels.locked())
    assert f"lacks {n} of the {n} wheels in inference_code/wheels.lock (onnxruntime==1.31.1," in str(e.value)
    assert "run `make wheels`" in str(e.value)
    assert not (tmp_path / "bundle").exists()


@pytest.mark.slow
def test_the_packaged_model_starts_and_serves_every_contract_with_no_network(packaged, model_dir, tmp_path):
    served = sagemaker_container.start_offline(packaged, tmp_path, contract_cases())
    assert "install_error" not in served, served
    check_contracts(served, model_dir, with_corpus=True)


@pytest.fixture(scope="module")
def trained_model(module_tmp, model_dir) -> tuple[Path, Path]:
    """train.py run from the training job's source bundle (built as synth builds it), on a few
    pairs; returns (model.tar.gz as SageMaker packs /opt/ml/model, the unpacked model dir)."""
    from stacks.components.source_bundle import build_training_bundle

    root = module_tmp.mktemp("training-job")
    code = root / "opt/ml/code"
    code.mkdir(parents=True)
    with tarfile.open(build_training_bundle(root / "bundle")) as tar:
        extract_tar(tar, code)
    assert sorted(p.name for p in (code / "inference_code/wheels").iterdir()) == \
        sorted(p.name for p in container_wheels.wheel_files())
    train = root / "opt/ml/input/data/train"
    train.mkdir(parents=True)
    pairs = [{"query": f"tool number {i}", "text": f"{c['text']} (variant {i})"} for i, c in enumerate(CORPUS * 6)]
    (train / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    model = root / "opt/ml/model"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SM_CHANNEL_TRAIN": str(train), "SM_MODEL_DIR": str(model),
           "SM_OUTPUT_DATA_DIR": str(root / "opt/ml/output/data")}
    args = ["--base-model", str(model_dir), "--epochs", "1", "--batch-size", "8", "--max-seq-length", "32",
            "--eval-fraction", "0.25", "--checkpoint-dir", str(root / "checkpoints")]
    result = subprocess.run([sys.executable, "train.py", *args], cwd=code, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "has no wheels/" not in result.stderr
    return sagemaker_container.pack(model, root / "model.tar.gz"), model


@pytest.mark.slow
def test_a_model_written_by_the_training_job_starts_with_no_network(trained_model, tmp_path):
    archive, model = trained_model
    assert not (model / "onnx").exists()  # exported at load time, with the shipped onnx + transformers
    served = sagemaker_container.start_offline(archive, tmp_path, contract_cases())
    assert "install_error" not in served, served
    check_contracts(served, model, with_corpus=False)
