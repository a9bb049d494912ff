"""Which backend and precision the embedder picks on CPU, and that each keeps its mode's promise.

The CPU's flags are injected (``load_embedder(cpu_flags=...)``), so the paths for CPUs with and
without bf16 instructions both run here, whatever this machine has; OpenVINO's bf16 on a CPU
without bf16 instructions computes in fp32, which passes the same checks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bench.inference import recall_at_3
from inference_code import embedder as embedder_module
from inference_code.embedder import EXACT_MIN_COSINE, PROBE_TEXTS, load_embedder, read_cpu_flags

AMX = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"})
AVX512_BF16_ONLY = frozenset({"avx512f", "avx512_bf16", "avx512_vnni"})
PLAIN = frozenset({"sse4_2", "avx2", "fma"})

pytest.importorskip("openvino")


@pytest.fixture(autouse=True)
def no_backend_override(monkeypatch):
    """These tests are about the choice itself (tests/conftest.py sets the override for the suite)."""
    monkeypatch.delenv("SEMSEARCH_BACKEND", raising=False)


@pytest.fixture(scope="module")
def st_model(model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def texts(dev_pairs):
    return [p["text"] for p in dev_pairs[:60]] + ["ssh client", "packaging " * 600]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_cpu_flags_come_from_the_first_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx512_bf16 amx_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n")
    assert read_cpu_flags(cpuinfo) == {"fpu", "avx512_bf16", "amx_bf16"}
    assert read_cpu_flags(tmp_path / "absent") == frozenset()


@pytest.mark.parametrize("flags", [AMX, AVX512_BF16_ONLY], ids=["amx", "avx512_bf16"])
def test_exact_mode_runs_bf16_where_the_cpu_has_it_and_keeps_the_promise(model_dir, st_model, texts, flags):
    embedder = load_embedder(model_dir, mode="exact", cpu_flags=flags)
    assert embedder.path == "openvino bf16"
    assert "probe min cosine to fp32" in embedder.why and sorted(flags & {"amx_bf16", "avx512_bf16"})[0] in embedder.why
    got = embedder.embed(texts)
    assert got.dtype == np.float32 and got.shape == (len(texts), 384)
    assert cosines(got, st_model.encode(texts, batch_size=32)).min() >= EXACT_MIN_COSINE


def test_exact_mode_without_bf16_instructions_runs_onnx_runtime_fp32(model_dir, st_model, texts):
    embedder = load_embedder(model_dir, mode="exact", cpu_flags=PLAIN)
    assert embedder.path == "onnx fp32"
    assert embedder.why == "no amx_bf16 or avx512_bf16 in the CPU flags"
    assert cosines(embedder.embed(texts), st_model.encode(texts, batch_size=32)).min() >= 0.99999


def test_a_failed_probe_falls_back_to_fp32(model_dir, monkeypatch):
    # A bound no bf16 path can meet stands for a CPU or runtime whose bf16 breaks the promise.
    monkeypatch.setattr(embedder_module, "EXACT_MIN_COSINE", 1.0001)
    exact = load_embedder(model_dir, mode="exact", cpu_flags=AMX)
    assert exact.path == "onnx fp32"
    assert "openvino bf16 probe min cosine to fp32" in exact.why and "< 1.0001" in exact.why
    fast = load_embedder(model_dir, mode="fast", cpu_flags=AMX)
    assert fast.path == "onnx int8"


def test_the_environment_names_the_backend_and_a_bad_name_is_refused(model_dir, monkeypatch):
    monkeypatch.setenv("SEMSEARCH_BACKEND", "onnx")
    embedder = load_embedder(model_dir, mode="exact", cpu_flags=AMX)
    assert (embedder.path, embedder.why) == ("onnx fp32", "$SEMSEARCH_BACKEND=onnx")
    monkeypatch.setenv("SEMSEARCH_BACKEND", "tensorrt")
    with pytest.raises(ValueError, match=r"\$SEMSEARCH_BACKEND must be one of onnx, openvino, torch, got 'tensorrt'"):
        load_embedder(model_dir, mode="exact")


def test_without_openvino_the_cpu_runs_onnx_runtime(model_dir, monkeypatch):
    monkeypatch.setattr(embedder_module, "_openvino_installed", lambda: False)
    embedder = load_embedder(model_dir, mode="exact", cpu_flags=AMX)
    assert embedder.path == "onnx fp32" and "openvino is not installed" in embedder.why


def test_fast_mode_runs_bf16_on_amx_only(model_dir):
    assert load_embedder(model_dir, mode="fast", cpu_flags=AMX).path == "openvino bf16"
    assert load_embedder(model_dir, mode="fast", cpu_flags=AVX512_BF16_ONLY).path == "onnx int8"
    assert load_embedder(model_dir, mode="fast", cpu_flags=PLAIN).path == "onnx int8"


def test_openvino_pads_each_call_to_a_few_widths_and_cuts_the_answer_back(model_dir):
    """OpenVINO sees widths padded up to a multiple of OPENVINO_WIDTH_STEP (fewer shapes to compile
    and keep); the real tokens' vectors are those of the unpadded call, at the width asked for."""
    from inference_code.model_info import read_model_info
    from inference_code.onnx_export import onnx_path

    info = read_model_info(model_dir)
    openvino = embedder_module.OpenVinoBackend(onnx_path(info, "exact"), 1, precision="fp32")
    reference = embedder_module.OnnxBackend(onnx_path(info, "exact"), 1)
    shapes = []
    infer = openvino.request.infer
    openvino.request = SimpleNamespace(infer=lambda inputs: shapes.append(inputs["input_ids"].shape) or infer(inputs))
    embedder = load_embedder(model_dir, mode="exact", backend="onnx")
    ids = embedder.token_ids(["ssh client", "portable network graphics (PNG) reference library, runtime files"])
    width = max(map(len, ids))
    assert width % embedder_module.OPENVINO_WIDTH_STEP  # the call needs padding
    input_ids, mask = np.zeros((2, width), np.int64), np.zeros((2, width), np.int64)
    for row, tokens in enumerate(ids):
        input_ids[row, :len(tokens)], mask[row, :len(tokens)] = tokens, 1

    got, expected = openvino(input_ids, mask), reference(input_ids, mask)
    step = embedder_module.OPENVINO_WIDTH_STEP
    assert shapes == [(2, -(-width // step) * step)]
    assert got.shape == expected.shape == (2, width, 384)
    real = mask.astype(bool)
    assert np.abs(got[real] - expected[real]).max() < 1e-3


def test_probe_texts_reach_the_longest_shape(model_dir):
    embedder = load_embedder(model_dir, mode="exact", backend="onnx")
    lengths = [len(ids) for ids in embedder.token_ids(PROBE_TEXTS)]
    assert max(lengths) == embedder.max_tokens and min(lengths) <= 3


def test_fast_mode_recall_at_3_within_half_a_point_of_fp32(model_dir, dev_pairs):
    """The fast mode's promise on the tests' 500 dev pairs, for both of its CPU paths."""
    queries, docs = [p["query"] for p in dev_pairs], [p["text"] for p in dev_pairs]
    fp32 = load_embedder(model_dir, mode="exact", cpu_flags=PLAIN)
    baseline = recall_at_3(fp32.embed(queries, "query"), fp32.embed(docs))
    assert baseline > 0.5  # a real retrieval task, not noise
    for flags in (AMX, PLAIN):
        fast = load_embedder(model_dir, mode="fast", cpu_flags=flags)
        recall = recall_at_3(fast.embed(queries, "query"), fast.embed(docs))
        assert abs(recall - baseline) <= 0.005, (fast.path, recall, baseline)


def test_a_model_without_onnx_files_is_exported_without_torch_in_the_server(model_dir, tmp_path):
    """The export runs in a child process: the serving process never imports torch on CPU."""
    script = ("import sys; from inference_code.embedder import load_embedder; "
              f"e = load_embedder({str(model_dir)!r}, mode='exact'); "
              "print(e.path, 'torch' in sys.modules, len(e.embed(['ssh client'])[0]))")
    assert not (Path(model_dir) / "onnx").exists()
    env = {"SEMSEARCH_CACHE_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}  # no override
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[2], timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    *path, torch_imported, dimension = done.stdout.strip().splitlines()[-1].split()
    assert (torch_imported, dimension) == ("False", "384") and " ".join(path) in ("onnx fp32", "openvino bf16")
    assert list(tmp_path.glob("onnx/*/model.onnx"))
