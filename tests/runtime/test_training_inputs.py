"""The training job's inputs: pairs files (every error names file, line and column) and
settings from SageMaker's environment, SM_HPS and the command line. No model is loaded."""

from __future__ import annotations

import json
import re

import pytest

from training_code import pairs as pairs_mod
from training_code import train as train_mod
from training_code.pairs import Pair, PairsError, load_pairs, read_pairs, split_off


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_with_either_column_pair(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"id": "a", "query": "q1", "text": "t1"}\n\n'
                                    '{"sentence1": "q2", "sentence2": "t2", "score": 1}\n')
    assert read_pairs(f) == [Pair("q1", "t1"), Pair("q2", "t2")]


@pytest.mark.parametrize(("body", "line", "message"), [
    ('{"query": "q", "text": "t"}\n{"query": "q"}\n', 2, "missing column 'text'"),
    ('{"query": "q", "text": "t"}\n\n{"text": "t"}\n', 3, "missing column 'query'"),
    ('{"sentence1": "q"}\n', 1, "missing column 'sentence2'"),
    ('{"id": "x", "body": "t"}\n', 1, "missing column 'query'"),
    ('{"query": "q", "text": ""}\n', 1, "column 'text' is empty"),
    ('{"query": "q", "text": 5}\n', 1, "column 'text' must be a string"),
    ('{"query": "q", "text": "t"}\n{"query": "q", "text": \n', 2, "not valid JSON"),
    ('["q", "t"]\n', 1, "expected an object"),
])
def test_jsonl_errors_name_file_line_and_column(tmp_path, body, line, message):
    f = write(tmp_path / "pairs.jsonl", body)
    with pytest.raises(PairsError) as info:
        read_pairs(f)
    assert str(info.value).startswith(f"{f} line {line}: ")
    assert message in str(info.value)


def test_json_array_errors_name_the_line_the_record_starts_on(tmp_path):
    ok = write(tmp_path / "ok.json", json.dumps([{"query": "q1", "text": "t1"}, {"query": "q2", "text": "t2"}]))
    assert read_pairs(ok) == [Pair("q1", "t1"), Pair("q2", "t2")]
    bad = write(tmp_path / "bad.json", '[\n  {"query": "q1", "text": "t1"},\n  {"query": "q2",\n   "txt": "t2"}\n]\n')
    with pytest.raises(PairsError, match=re.escape(f"{bad} line 3: missing column 'text'")):
        read_pairs(bad)
    # A .json file holding one object per line is read as JSON lines.
    lines = write(tmp_path / "lines.json", '{"query": "q", "text": "t"}\n{"query": "q"}\n')
    with pytest.raises(PairsError, match=re.escape(f"{lines} line 2: missing column 'text'")):
        read_pairs(lines)


def test_csv_header_and_rows_are_checked(tmp_path):
    ok = write(tmp_path / "ok.csv", 'query,text\nq1,"t1, with a comma"\n')
    assert read_pairs(ok) == [Pair("q1", "t1, with a comma")]
    no_text = write(tmp_path / "h.csv", "query,body\nq,t\n")
    with pytest.raises(PairsError, match=re.escape(f"{no_text} line 1: missing column 'text' in the header")):
        read_pairs(no_text)
    short = write(tmp_path / "short.csv", "sentence1,sentence2\na,b\nc\n")
    with pytest.raises(PairsError, match=re.escape(f"{short} line 3: missing column 'sentence2'")):
        read_pairs(short)
    empty = write(tmp_path / "empty.csv", "query,text\na,b\n ,d\n")
    with pytest.raises(PairsError, match=re.escape(f"{empty} line 3: column 'query' is empty")):
        read_pairs(empty)


def test_unusable_files(tmp_path):
    with pytest.raises(PairsError, match="unsupported file type"):
        read_pairs(write(tmp_path / "p.txt", "q\tt\n"))
    with pytest.raises(PairsError, match="no pairs in the file"):
        read_pairs(write(tmp_path / "blank.jsonl", "\n\n"))
    with pytest.raises(PairsError, match="not UTF-8"):
        (tmp_path / "latin.jsonl").write_bytes(b'{"query": "caf\xe9", "text": "t"}\n')
        read_pairs(tmp_path / "latin.jsonl")
    with pytest.raises(PairsError, match="no such file or folder"):
        load_pairs([tmp_path / "missing.jsonl"])


def test_a_channel_folder_is_read_file_by_file_in_name_order(tmp_path):
    write(tmp_path / "b.jsonl", '{"query": "q2", "text": "t2"}\n')
    write(tmp_path / "a.csv", "query,text\nq1,t1\n")
    write(tmp_path / "notes.md", "not data")
    pairs, files = load_pairs([tmp_path])
    assert [f.name for f in files] == ["a.csv", "b.jsonl"]
    assert pairs == [Pair("q1", "t1"), Pair("q2", "t2")]


def test_held_out_split_keeps_each_query_on_one_side(dev_pairs):
    pairs = [Pair(p["query"], p["text"]) for p in dev_pairs[:200]]
    pairs.append(Pair(pairs[0].query, "a second relevant document"))
    kept, held = split_off(pairs, 0.1, seed=7, max_held_out=1000)
    assert len(kept) + len(held) == len(pairs)
    assert not {p.query for p in kept} & {p.query for p in held}
    assert 15 <= len({p.query for p in held}) <= 25
    assert split_off(pairs, 0.1, seed=7, max_held_out=1000) == (kept, held)  # seeded: the same every run
    _, capped = split_off(pairs, 0.5, seed=7, max_held_out=10)
    assert len({p.query for p in capped}) == 10
    assert pairs_mod.sample(pairs, 50, seed=1) == pairs_mod.sample(pairs, 50, seed=1)
    assert len(set(pairs_mod.sample(pairs, 50, seed=1))) == 50


SM_ENV = {
    "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
    "SM_CHANNEL_EVAL": "/opt/ml/input/data/eval",
    "SM_CHANNEL_MODEL": "/opt/ml/input/data/model",
    "SM_MODEL_DIR": "/opt/ml/model",
    "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data",
}


def test_sagemaker_environment_hyperparameters_and_command_line():
    env = {**SM_ENV, "SM_HPS": json.dumps({"epochs": 2, "batch_size": 64, "learning-rate": "3e-5",
                                           "cached_loss": "true", "max_seq_length": 256,
                                           "query_prefix": "query: ", "sagemaker_program": "train.py"})}
    # SageMaker passes the same hyperparameters as arguments; the command line wins over SM_HPS.
    config = train_mod.parse_config(["--batch_size", "128", "--mini-batch-size=16"], env)
    assert (config.train, config.eval, config.base_model) == ("/opt/ml/input/data/train", "/opt/ml/input/data/eval",
                                                              "/opt/ml/input/data/model")
    assert (config.model_dir, config.output_data_dir, config.checkpoint_dir) == (
        "/opt/ml/model", "/opt/ml/output/data", "/opt/ml/checkpoints")
    assert (config.epochs, config.batch_size, config.learning_rate) == (2.0, 128, 3e-5)
    assert (config.cached_loss, config.mini_batch_size, config.max_seq_length) == (True, 16, 256)
    assert config.query_prefix == "query: " and config.passage_prefix == ""
    assert config.hard_negative_model == ""  # no miner channel: mine with the base model
    # The miner channel, when the workflow's start input names one (hard_negative_model_s3_uri).
    miner = {**env, "SM_CHANNEL_MINER": "/opt/ml/input/data/miner"}
    assert train_mod.parse_config([], miner).hard_negative_model == "/opt/ml/input/data/miner"


def test_local_runs_need_no_sagemaker_environment(tmp_path):
    config = train_mod.parse_config(["--train", "t.jsonl", "--base-model", "m", "--model-dir", str(tmp_path)], {})
    assert config.output_data_dir == str(tmp_path)  # metrics.json beside the model
    assert config.checkpoint_dir is None and config.eval is None
    assert config.learning_rate == train_mod.Config.learning_rate


def test_bad_settings_stop_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as info:
        train_mod.parse_config(["--model-dir", "/tmp/x"], {})
    assert info.value.code == 2
    assert "missing --train, --base-model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_mod.parse_config(["--bach-size", "3"], SM_ENV)  # a typo is an error, not ignored
    with pytest.raises(SystemExit):
        train_mod.parse_config(["--cached-loss", "maybe"], SM_ENV)


def test_a_bad_hyperparameter_is_the_jobs_failure_reason(tmp_path, monkeypatch, capsys):
    # SageMaker passes hyperparameters as strings; one that is not a number is named in the
    # failure file SageMaker shows, not only in the job's log.
    monkeypatch.setenv("SM_OUTPUT_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as info:
        train_mod.parse_config(["--batch-size", "lots"], SM_ENV)
    assert info.value.code == 2
    message = "train.py: error: argument --batch-size: invalid int value: 'lots'"
    assert capsys.readouterr().err.strip().splitlines()[-1] == message
    assert (tmp_path / "failure").read_text() == message


def test_entry_point_reports_a_bad_record_in_one_line(tmp_path, model_dir, capsys):
    data = write(tmp_path / "train.jsonl", '{"query": "q", "text": "t"}\n{"query": "q2", "txt": "t2"}\n')
    (tmp_path / "output").mkdir()
    env = {"SM_OUTPUT_DIR": str(tmp_path / "output")}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        status = train_mod.main(["--train", str(data), "--base-model", str(model_dir),
                                 "--model-dir", str(tmp_path / "model"), "--inference-code", ""])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"train.py: error: {data} line 2: missing column 'text' (expected 'query' and 'text', " \
                  "or 'sentence1' and 'sentence2')"
    # SageMaker shows this file as the job's FailureReason.
    assert (tmp_path / "output" / "failure").read_text() == err
    assert not (tmp_path / "model").exists()
