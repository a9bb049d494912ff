"""`semsearch embed`: the batch-transform contract on a local file, with the real model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semsearch.cli import main


@pytest.fixture(scope="module")
def embedder(model_dir):
    from inference_code.embedder import load_embedder

    return load_embedder(model_dir, mode="exact")


def test_order_kept_nothing_dropped_same_vectors_as_the_endpoint(tmp_path, dev_pairs, model_dir, embedder, capsys):
    rows = [{"id": p["id"] if i % 3 else i, "text_inputs": p["text"]} for i, p in enumerate(dev_pairs[:70])]
    rows[5]["text_inputs"] = rows[6]["text_inputs"]  # a repeated text is still its own line
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows[:40]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[40:]))
    out = tmp_path / "out.jsonl"
    # A small batch: the file goes through in many calls, and the order must survive that.
    assert main(["embed", "--model", str(model_dir), "--in", str(src), "--out", str(out), "--batch-size", "16"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == [r["id"] for r in rows]
    assert all(set(line) == {"id", "embedding"} for line in lines)
    vectors = np.array([line["embedding"] for line in lines], dtype=np.float32)
    assert vectors.shape == (70, embedder.dimension)
    expected = embedder.embed([r["text_inputs"] for r in rows], kind="passage")
    if embedder.backend.precision == "fp32":
        assert np.allclose(vectors, expected, atol=1e-5)
    else:  # bf16 kernels round by the call's shape, and other texts share these calls: the exact promise
        cos = (vectors * expected).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(expected, axis=1)
        assert cos.min() >= 0.9999
    assert np.array_equal(vectors[5], vectors[6])
    assert "embedded 70 texts (71 lines read)" in capsys.readouterr().err


def test_stdin_to_stdout(tmp_path, model_dir, monkeypatch, capsys):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"id": "a", "text_inputs": "apt"}\n')))
    assert main(["embed", "--model", str(model_dir), "--in", "-", "--out", "-"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["id"] == "a" and len(line["embedding"]) == 384


@pytest.mark.parametrize(("bad", "message"), [
    ('{"text_inputs": "no id"}', "line 3 has no 'id'"),
    ('{"id": "x", "text_inputs": 7}', "line 3: text_inputs must be a string"),
    ("{oops", "line 3 is not valid JSON"),
])
def test_a_bad_line_is_named_and_no_output_is_left(tmp_path, model_dir, capsys, bad, message):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text_inputs": "a"}\n{"id": 2, "text_inputs": "b"}\n' + bad + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["embed", "--model", str(model_dir), "--in", str(src), "--out", str(out), "--batch-size", "1"]) == 2
    assert f"semsearch embed: error: {src}: {message}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [src]  # neither the output nor its temporary file


def test_usage_errors(tmp_path, capsys):
    assert main(["embed", "--in", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text_inputs": "a"}\n')
    assert main(["embed", "--in", str(src), "--out", str(tmp_path / "missing" / "o.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
