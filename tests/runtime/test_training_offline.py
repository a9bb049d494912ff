"""The fine-tune workflow's training job runs with no network (jobs.network_isolation).

With EnableNetworkIsolation the training container reaches neither PyPI nor S3 nor the Hugging
Face Hub: the toolkit's ``pip install -r requirements.txt`` must find every wheel in the source
bundle, which arrives as the "source" channel, and the base model arrives as the "model"
channel. Here the job runs the container's way, inside a network namespace with no network
(tests/runtime/sagemaker_training_container.py says what is real and what stands in), from
the bundle that synth builds (build_training_bundle), on a slice of the Debian sample.

The first run builds a CPython 3.12 venv with torch 2.6.0 under build/ (a few GB from PyPI,
then pip's cache); later runs reuse it.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import sagemaker_training_container as training_container  # tests/runtime/sagemaker_training_container.py
from sagemaker_container import _clean_env, _python312, _site_packages, pack

from semsearch import container_wheels
from training_code.archives import extract_tar
from training_code.contract import METRIC_KEYS, METRICS_FILE, MINER_CHANNEL, PRIMARY_METRIC

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[2]
TRAIN_PAIRS, EVAL_PAIRS, MAX_PAIRS = 96, 32, 48
#: The workflow's hyperparameters (fine_tune_workflow.py _train, isolated: no base-model, the
#: model channel instead), with small values for 2 CPU cores; max-pairs keeps the run short.
#: checkpoint-dir stands in for the CheckpointConfig LocalPath, /opt/ml/checkpoints, which
#: train.py takes as given and which must not be this machine's own /opt/ml.
HYPERPARAMETERS = {"epochs": "1", "batch-size": "16", "learning-rate": repr(5e-5), "max-seq-length": "64",
                   "query-prefix": "", "passage-prefix": "", "max-pairs": str(MAX_PAIRS)}
#: The container's own packages, which requirements.txt leaves alone (wheels.lock's header).
CONTAINER_OWN = ("torch", "numpy")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def requirement_pins() -> dict[str, str | None]:
    """{canonical name: version} of what training_code/requirements.txt names."""
    return container_wheels.requirements(REPO / "training_code/requirements.txt")


@pytest.fixture(scope="module")
def bundle(module_tmp) -> Path:
    """The source tarball exactly as synth builds it."""
    from stacks.components.source_bundle import build_training_bundle

    return build_training_bundle(module_tmp.mktemp("bundle"))


@pytest.fixture(scope="module")
def unpacked(bundle, module_tmp) -> Path:
    code = module_tmp.mktemp("code")
    with tarfile.open(bundle) as tar:
        extract_tar(tar, code)
    return code


def test_requirements_install_from_the_bundle_only(unpacked):
    options = [line.split() for line in (unpacked / "requirements.txt").read_text().splitlines()
               if line.startswith("-")]
    assert ["--no-index"] in options
    assert ["--find-links", container_wheels.CODE_SUBDIR] in options
    assert ["--find-links", f"inference_code/{container_wheels.CODE_SUBDIR}"] in options
    pins, locked = requirement_pins(), container_wheels.locked(container_wheels.TRAINING_LOCK)
    assert pins and {name: locked.get(name) for name in pins} == pins


def test_the_bundle_carries_each_locked_wheel_once(unpacked):
    training = {p.name for p in container_wheels.wheel_files(container_wheels.TRAINING_WHEEL_DIR,
                                                             container_wheels.TRAINING_LOCK)}
    inference = {p.name for p in container_wheels.wheel_files()}
    own = {p.name for p in (unpacked / container_wheels.CODE_SUBDIR).iterdir()}
    shipped = {p.name for p in (unpacked / "inference_code" / container_wheels.CODE_SUBDIR).iterdir()}
    assert shipped == inference  # the handler's set, whole: the model the job writes serves from it
    assert own == training - inference and own


def test_the_wheel_set_is_closed(unpacked, tmp_path):
    """pip resolves requirements.txt from the bundle's two wheel folders alone, into a fresh
    CPython 3.12 that has only the container's own torch and numpy; and every locked wheel is
    one that resolve takes, at its locked version."""
    fresh = tmp_path / "fresh"
    subprocess.run([_python312(), "-m", "venv", str(fresh)], check=True)
    container_pins = container_wheels.requirements(training_container.CONTAINER_REQUIREMENTS)
    for name in CONTAINER_OWN:
        # Installed as far as pip can tell (metadata only): the container's build of each.
        info = _site_packages(fresh) / f"{name}-{container_pins[name]}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {container_pins[name]}\n")
        (info / "RECORD").write_text("")
    report = tmp_path / "report.json"
    result = subprocess.run([str(fresh / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "install",
                             "--dry-run", "--quiet", "--report", str(report), "-r", "requirements.txt"],
                            cwd=unpacked, capture_output=True, text=True, timeout=300, env=_clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    resolved = {container_wheels.canonical(item["metadata"]["name"]): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    assert resolved == container_wheels.locked(container_wheels.TRAINING_LOCK)


@pytest.fixture(scope="module")
def job(bundle, module_tmp, dev_pairs, model_dir) -> dict:
    """One isolated training job: channels source, model, train, eval and miner, the workflow's
    hyperparameters, the toolkit's `train` under ``unshare -n``. The miner channel holds one
    model.tar.gz, as an earlier job's output arrives when the start input names it
    (hard_negative_model_s3_uri)."""
    root = module_tmp.mktemp("training-job")
    data = root / "data"
    write_jsonl(data / "train" / "train.jsonl", dev_pairs[:TRAIN_PAIRS])
    write_jsonl(data / "eval" / "part-0.jsonl", dev_pairs[TRAIN_PAIRS:TRAIN_PAIRS + EVAL_PAIRS])
    miner = pack(model_dir, root / "model.tar.gz")
    opt_ml = root / "opt-ml"
    training_container.write_job(
        opt_ml, source_bundle=bundle,
        channels={"model": model_dir, "train": data / "train", "eval": data / "eval", MINER_CHANNEL: miner},
        hyperparameters={**HYPERPARAMETERS, "checkpoint-dir": str(opt_ml / "checkpoints")})
    result = training_container.run_offline(opt_ml, root / "work")
    return {"result": result, "opt_ml": opt_ml, "env": root / "work" / "container-env"}


def test_the_isolated_job_trains(job):
    result = job["result"]
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    assert "has no wheels/" not in result.stderr


def test_the_requirements_came_from_the_bundle(job):
    """What requirements.txt names is installed on top of the container, at the locked
    versions; with no network, the bundle's wheels are the only place they could come from."""
    installed = {}
    for info in _site_packages(job["env"]).glob("*.dist-info"):
        name, version = info.name.removesuffix(".dist-info").split("-")[:2]
        installed[container_wheels.canonical(name)] = version
    pins = requirement_pins()
    assert {name: installed.get(name) for name in pins} == pins
    # The toolkit's pip looked in the bundle's two folders and nowhere else.
    out = job["result"].stdout + job["result"].stderr
    code = job["opt_ml"] / "code"
    assert f"Looking in links: {code / 'wheels'}, {code / 'inference_code' / 'wheels'}" in out


def test_the_model_has_what_serving_needs(job):
    model = job["opt_ml"] / "model"
    names = {p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json",
            "sentence_bert_config.json", METRICS_FILE, "code/inference.py", "code/requirements.txt"} <= names
    assert not (model / "onnx").exists()  # exported at load time, with the shipped wheels
    # The endpoint serves it with network isolation too: code/ carries the handler's whole set.
    assert sorted(p.name for p in (model / "code" / container_wheels.CODE_SUBDIR).iterdir()) == \
        sorted(p.name for p in container_wheels.wheel_files())
    assert json.loads((model / "sentence_bert_config.json").read_text())["max_seq_length"] == 64


def test_metrics_json_has_the_gate_metrics(job, model_dir):
    metrics = json.loads((job["opt_ml"] / "model" / METRICS_FILE).read_text())
    assert metrics["primary_metric"] == PRIMARY_METRIC
    for stage in ("base", "tuned"):
        assert set(metrics[stage]) == set(METRIC_KEYS)
        assert all(0 <= value <= 1 for value in metrics[stage].values())
    assert metrics["gain"][PRIMARY_METRIC] == pytest.approx(metrics["tuned"][PRIMARY_METRIC]
                                                            - metrics["base"][PRIMARY_METRIC])
    # The base model came from the model channel; the slices from the train and eval channels.
    assert metrics["base_model"] == str(job["opt_ml"] / "input" / "data" / "model")
    assert metrics["train"]["pairs"] == MAX_PAIRS
    assert metrics["eval"]["source"] == "eval channel" and metrics["eval"]["pairs"] == EVAL_PAIRS
    # The default recipe mines hard negatives, here with the miner channel's model (the toolkit
    # set SM_CHANNEL_MINER; train.py unpacked its model.tar.gz): it ran with no network too.
    from training_code.train import CPU_CHUNK_ROWS, Config

    mining = metrics["train"]["hard_negatives"]
    assert mining["model"] == metrics["hyperparameters"]["hard_negative_model"] == str(
        job["opt_ml"] / "input" / "data" / MINER_CHANNEL)
    assert Config.hard_negatives > 0, "the default recipe no longer mines: this check covers nothing"
    assert (mining["per_pair"], mining["range_max"]) == (Config.hard_negatives, Config.hard_negative_range_max)
    assert mining["candidates"] > 1 and 0 <= mining["pairs_filled_randomly"] <= MAX_PAIRS
    # It ran its batches as length-sorted chunks (CPU): training_code/chunks.py travelled in the bundle.
    assert metrics["train"]["chunk_rows"] == CPU_CHUNK_ROWS
    # The lines the workflow's metric definitions scrape, with the metrics.json figures.
    for stage in ("base", "tuned", "gain"):
        (value,) = re.findall(rf"eval:{stage}:{re.escape(PRIMARY_METRIC)}=(-?[0-9.]+);", job["result"].stdout)
        assert float(value) == pytest.approx(metrics[stage][PRIMARY_METRIC], abs=1e-6)
