"""The benchmarks read the full Debian splits from $SEMSEARCH_DATA_DIR and say so when absent; bench and
the tests read JSON Lines pairs with one reader."""

from __future__ import annotations

import pytest

from bench._data import data_dir, read_jsonl
from tests.conftest import DATA_DIR


def test_missing_splits_are_named_with_the_variable_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMSEARCH_DATA_DIR", str(tmp_path))
    (tmp_path / "dev.jsonl").write_text("{}\n")
    with pytest.raises(SystemExit) as raised:
        data_dir()
    assert str(raised.value) == (f"bench: train.jsonl not found in {tmp_path}; set SEMSEARCH_DATA_DIR to the folder "
                                 "with the full Debian pairs (train.jsonl, dev.jsonl)")


def test_the_configured_folder_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMSEARCH_DATA_DIR", str(tmp_path))
    for name in ("train.jsonl", "dev.jsonl"):
        (tmp_path / name).write_text("{}\n")
    assert data_dir() == tmp_path


def test_one_jsonl_reader_for_bench_and_tests(tmp_path):
    pairs = tmp_path / "dev.jsonl"
    pairs.write_text("".join(f'{{"id": {i}, "query": "q{i}", "text": "t{i}"}}\n' for i in range(5)))
    assert read_jsonl(pairs, 2) == [{"id": 0, "query": "q0", "text": "t0"}, {"id": 1, "query": "q1", "text": "t1"}]
    assert [row["id"] for row in read_jsonl(pairs)] == [0, 1, 2, 3, 4]
    assert len(read_jsonl(DATA_DIR / "dev.jsonl", 500)) == 500  # the tests' committed sample (dev_pairs)
