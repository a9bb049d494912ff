"""The benchmarks read the full Debian splits from $SEMSEARCH_DATA_DIR and say so when absent."""

from __future__ import annotations

import pytest

from bench._data import data_dir


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
