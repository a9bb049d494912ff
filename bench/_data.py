"""Where the benchmarks find the full Debian query/document pairs, and how they (and the tests,
for their committed sample) read them. Not a benchmark itself."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The default: the shared data folder beside the checkout.
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "debian-descriptions"


def data_dir() -> Path:
    """$SEMSEARCH_DATA_DIR, else ../shared/data/debian-descriptions; a clear error when the
    splits are not there (the tests' 500-pair sample in tests/data is too small to benchmark)."""
    path = Path(os.environ.get("SEMSEARCH_DATA_DIR") or DEFAULT_DATA_DIR)
    missing = [name for name in ("train.jsonl", "dev.jsonl") if not (path / name).is_file()]
    if missing:
        raise SystemExit(f"bench: {', '.join(missing)} not found in {path}; set SEMSEARCH_DATA_DIR to the folder "
                         "with the full Debian pairs (train.jsonl, dev.jsonl)")
    return path


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    """The first ``limit`` rows (every row when None) of a JSON Lines file of pairs."""
    with path.open() as f:
        return [json.loads(line) for line in itertools.islice(f, limit)]
