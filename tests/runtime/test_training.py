"""The training job for real, on a small slice: 64 Debian pairs, 4 steps, 64 tokens.

It runs the way SageMaker runs it: train.py as a script from a folder laid out like
/opt/ml/code (this folder's files plus inference_code/), channels and hyperparameters
from SM_* variables, hyperparameters repeated as ``--name value`` arguments. A second run,
through `semsearch train`, resumes from the first one's checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from semsearch.cli import main
from training_code.contract import METRIC_DEFINITIONS, METRIC_KEYS, STAGES

REPO = Path(__file__).resolve().parents[2]
HPS = {"epochs": 1, "batch_size": 16, "max_seq_length": 64, "checkpoint_steps": 2, "log_steps": 1,
       "learning_rate": 5e-5}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def job(module_tmp, dev_pairs, model_dir):
    """One training job in a SageMaker-like layout; returns its folders and stdout."""
    root = module_tmp.mktemp("sagemaker")
    code = root / "opt/ml/code"
    code.mkdir(parents=True)
    for f in (REPO / "training_code").iterdir():
        if f.suffix in (".py", ".txt"):
            shutil.copy(f, code / f.name)
    shutil.copytree(REPO / "inference_code", code / "inference_code",
                    ignore=shutil.ignore_patterns("__pycache__", "tests"))
    train = write_jsonl(root / "opt/ml/input/data/train/train.jsonl", dev_pairs[:64])
    write_jsonl(root / "opt/ml/input/data/eval/part-0.jsonl", dev_pairs[64:96])
    dirs = {"model": root / "opt/ml/model", "output": root / "opt/ml/output", "checkpoints": root / "checkpoints"}
    for d in dirs.values():
        d.mkdir(parents=True)
    (dirs["output"] / "data").mkdir()
    hps = {**HPS, "checkpoint-dir": str(dirs["checkpoints"])}
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "SM_CHANNEL_TRAIN": str(train.parent),
        "SM_CHANNEL_EVAL": str(root / "opt/ml/input/data/eval"),
        "SM_CHANNEL_MODEL": str(model_dir),
        "SM_MODEL_DIR": str(dirs["model"]),
        "SM_OUTPUT_DIR": str(dirs["output"]),
        "SM_OUTPUT_DATA_DIR": str(dirs["output"] / "data"),
        "SM_HPS": json.dumps(hps),
    }
    argv = [token for name, value in hps.items() for token in (f"--{name}", str(value))]
    proc = subprocess.run([sys.executable, "train.py", *argv], cwd=code, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((dirs["model"] / "metrics.json").read_text())
    return {**dirs, "train": train, "eval": root / "opt/ml/input/data/eval/part-0.jsonl", "stdout": proc.stdout,
            "metrics": metrics}


def test_training_lowers_the_loss(job):
    t = job["metrics"]["train"]
    assert t["pairs"] == 64 and t["steps"] == 4 and t["resumed_from"] is None
    # The MNRL loss on a fixed slice of the training pairs, before vs after.
    assert t["probe_loss_after"] < t["probe_loss_before"]
    assert t["pairs_per_second"] > 0


def test_metrics_json_is_complete_and_in_both_places(job):
    m = job["metrics"]
    assert json.loads((job["output"] / "data" / "metrics.json").read_text()) == m
    assert m["schema_version"] == 1 and m["primary_metric"] == "ndcg@10"
    for stage in STAGES:
        assert set(m[stage]) == set(METRIC_KEYS)
    for key in METRIC_KEYS:
        assert 0 <= m["base"][key] <= 1 and 0 <= m["tuned"][key] <= 1
        assert m["gain"][key] == pytest.approx(m["tuned"][key] - m["base"][key])
    assert m["improved"] is (m["gain"]["ndcg@10"] > 0)
    assert m["eval"] == {"source": "eval channel", "files": [str(job["eval"])], "pairs": 32, "queries": 32,
                         "documents": 32}
    assert m["train"]["files"] == [str(job["train"])]
    assert {k: m["hyperparameters"][k] for k in ("batch_size", "max_seq_length", "checkpoint_steps")} == {
        "batch_size": 16, "max_seq_length": 64, "checkpoint_steps": 2}


def test_log_lines_feed_the_sagemaker_metric_definitions(job):
    for definition in METRIC_DEFINITIONS:
        found = re.findall(definition["Regex"], job["stdout"])
        assert found, definition["Name"]
        if definition["Name"].startswith("eval:"):
            _, stage, key = definition["Name"].split(":")
            # SageMaker keeps the last value; it must be the metrics.json figure.
            assert float(found[-1]) == pytest.approx(job["metrics"][stage][key], abs=1e-6)
    assert len(re.findall(r"train:loss=", job["stdout"])) >= 4  # one per step (log_steps 1)


def test_model_dir_deploys_as_is(job):
    model = job["model"]
    names = {p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json",
            "sentence_bert_config.json", "metrics.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth")) or "checkpoint" in n or "__pycache__" in n]
    # Text Embeddings Inference reads these keys (mean pooling, and the sequence length).
    pooling = json.loads((model / "1_Pooling/config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] is True and pooling["pooling_mode_cls_token"] is False
    assert json.loads((model / "sentence_bert_config.json").read_text())["max_seq_length"] == 64
    # code/ is the repository's inference_code as it was at train time.
    shipped = {p.relative_to(REPO / "inference_code").as_posix() for p in (REPO / "inference_code").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and "tests" not in p.parts}
    assert {n.removeprefix("code/") for n in names if n.startswith("code/")} == shipped


def test_tuned_model_has_moved_and_serves_through_the_handler(job, model_dir, dev_pairs, tmp_path, monkeypatch):
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer

    from inference_code import inference

    tuned, base = load_file(job["model"] / "model.safetensors"), load_file(model_dir / "model.safetensors")
    assert set(tuned) <= set(base)  # (the base also stores the position_ids buffer)
    assert any(not np.array_equal(tuned[k], base[k]) for k in tuned)

    # The custom flavor's handler, on the job's output folder as model.tar.gz unpacks it.
    monkeypatch.setenv("SEMSEARCH_CACHE_DIR", str(tmp_path))  # its ONNX export of this model
    texts = [p["text"] for p in dev_pairs[:4]]
    service = inference.model_fn(str(job["model"]))
    request = inference.input_fn(json.dumps(texts), "application/json")
    served = np.array(json.loads(inference.output_fn(inference.predict_fn(request, service), "application/json")))
    assert served.shape == (4, 384)
    # ... giving what sentence-transformers gives for the tuned model (what was evaluated).
    expected = SentenceTransformer(str(job["model"]), device="cpu").encode(texts)
    assert np.allclose(np.sum(served * expected, axis=1), 1, atol=1e-4)


def test_semsearch_train_resumes_an_interrupted_job(job, tmp_path, capsys):
    # A spot interruption while checkpoint-4 was being written: it lacks trainer_state.json,
    # so the run must go on from checkpoint-2 and redo steps 3 and 4.
    ckpt = tmp_path / "checkpoints"
    shutil.copytree(job["checkpoints"], ckpt)
    assert sorted(p.name for p in ckpt.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    (ckpt / "checkpoint-4" / "trainer_state.json").unlink()
    out = tmp_path / "out"
    status = main(["train", "--train", str(job["train"]), "--eval", str(job["eval"]), "--out", str(out),
                   "--epochs", "1", "--batch-size", "16", "--max-seq-length", "64", "--checkpoint-dir", str(ckpt),
                   "--quiet"])
    assert status == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["train"]["resumed_from"] == str(ckpt / "checkpoint-2")
    assert m["train"]["steps"] == 4
    # The same data, settings and restored state: the same model as the uninterrupted job.
    assert m["train"]["probe_loss_after"] == pytest.approx(job["metrics"]["train"]["probe_loss_after"], rel=1e-3)
    assert m["tuned"] == pytest.approx(job["metrics"]["tuned"], abs=1e-6)
    # The table printed at the end carries the same figures.
    assert re.search(rf"ndcg@10\s+{m['base']['ndcg@10']:.4f}\s+{m['tuned']['ndcg@10']:.4f}", printed)
    assert (out / "code").is_dir()


def test_semsearch_train_rejects_bad_input_before_training(tmp_path, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"query": "q", "text": "t"}, {"query": "q2"}])
    assert main(["train", "--train", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert f"{bad} line 2: missing column 'text'" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["train", "--train", str(bad), "--out", str(tmp_path / "full")]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert main(["train", "--train", str(bad), "--out", str(tmp_path / "o"), "--batch-size", "0"]) == 2
    assert "--batch-size must be positive" in capsys.readouterr().err
