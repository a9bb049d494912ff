"""What a model directory says about how to embed with it.

Everything comes from the model's own sentence-transformers files, never from constants
here, with the optional ``semsearch.json`` manifest (written by ``semsearch package`` from
the model catalog) filling in what those files leave out:

- ``modules.json``: which modules run (Transformer, Pooling, Normalize); anything else
  (Dense, ...) is refused rather than silently skipped.
- ``<pooling dir>/config.json``: the pooling mode, either the new ``pooling_mode`` key or
  the legacy ``pooling_mode_*_tokens`` booleans.
- ``sentence_bert_config.json``: ``max_seq_length`` and ``do_lower_case`` (older layout);
  newer sentence-transformers releases keep the length in ``tokenizer_config.json``
  as ``model_max_length`` instead.
- ``config_sentence_transformers.json``: ``prompts`` ("query", and "passage" or
  "document") used as query / passage prefixes.
- ``config.json``: the hidden size and the position-embedding limit.

Precedence: the model's own files, then the manifest, then (max tokens only) the
tokenizer's ``model_max_length``; the length is always capped by the position limit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "semsearch.json"
POOLING_MODES = ("mean", "cls", "max")


class ModelConfigError(ValueError):
    """The model directory cannot be served as it stands; the message says what is missing."""


@dataclass(frozen=True)
class ModelInfo:
    """How to turn this model's token vectors into one embedding per text."""

    model_dir: Path
    #: Folder holding the Hugging Face config, weights and tokenizer (usually ``model_dir``).
    transformer_dir: Path
    dimension: int
    max_tokens: int
    pooling: str
    normalize: bool
    query_prefix: str = ""
    passage_prefix: str = ""
    do_lower_case: bool = False
    #: Token id written into padding (RoBERTa-style models derive positions from it).
    pad_token_id: int = 0
    #: Catalog id when the manifest names one, else the folder name.
    model_id: str = ""

    def prefix(self, kind: str) -> str:
        if kind == "query":
            return self.query_prefix
        if kind == "passage":
            return self.passage_prefix
        raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelConfigError(f"cannot read {path}: {e}") from None


def _optional_json(path: Path) -> dict[str, Any]:
    return _read_json(path) if path.is_file() else {}


def _pooling_from_config(config: dict[str, Any], path: Path) -> str:
    if "pooling_mode" in config:  # sentence-transformers >= 5 layout
        mode = config["pooling_mode"]
        modes = [mode] if isinstance(mode, str) else list(mode)
    else:  # legacy booleans: pooling_mode_mean_tokens, pooling_mode_cls_token, ...
        names = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                 "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                 "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
        modes = [name for key, name in names.items() if config.get(key)]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise ModelConfigError(f"{path}: pooling {modes} is not supported (one of {', '.join(POOLING_MODES)})")
    if config.get("include_prompt", True) is False:
        raise ModelConfigError(f"{path}: include_prompt=false (prompt tokens left out of pooling) is not supported")
    return modes[0]


def _read_modules(model_dir: Path) -> tuple[Path, str | None, bool]:
    """(transformer folder, pooling mode or None, normalize) from modules.json."""
    modules = _read_json(model_dir / "modules.json")
    transformer_dir, pooling, normalize = model_dir, None, False
    for module in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = model_dir / module.get("path", "")
        if kind == "Transformer":
            transformer_dir = path
        elif kind == "Pooling":
            pooling = _pooling_from_config(_read_json(path / "config.json"), path / "config.json")
        elif kind == "Normalize":
            normalize = True
        else:
            raise ModelConfigError(f"{model_dir / 'modules.json'}: module {module.get('type')!r} is not supported "
                                   "(Transformer, Pooling and Normalize are)")
    return transformer_dir, pooling, normalize


def _position_limit(hf_config: dict[str, Any]) -> int | None:
    limit = hf_config.get("max_position_embeddings")
    if not isinstance(limit, int) or limit <= 0:
        return None
    # RoBERTa-style models (XLM-R, multilingual-e5) number positions from padding_idx + 1.
    if hf_config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2
    return limit


def read_model_info(model_dir: str | Path, *, manifest: dict[str, Any] | None = None) -> ModelInfo:
    """Read pooling, normalization, max tokens and prefixes for the model in ``model_dir``.

    ``manifest`` replaces the folder's own semsearch.json (``semsearch package`` checks a
    catalog entry against the model's files this way before writing it).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelConfigError(f"model directory {model_dir} does not exist")
    if manifest is None:
        manifest = _optional_json(model_dir / MANIFEST_NAME)

    pooling: str | None = None
    normalize: bool | None = None
    transformer_dir = model_dir
    if (model_dir / "modules.json").is_file():
        transformer_dir, pooling, normalize = _read_modules(model_dir)
    if pooling is None:
        pooling = manifest.get("pooling")
        if pooling not in POOLING_MODES:
            raise ModelConfigError(f"{model_dir}: no pooling configured (no Pooling module in modules.json and no "
                                   f"'pooling' in {MANIFEST_NAME}; write one with `semsearch package --model-id`)")
    if normalize is None:
        normalize = bool(manifest.get("normalize", False))

    hf_config = _read_json(transformer_dir / "config.json")
    dimension = hf_config.get("hidden_size") or hf_config.get("d_model")
    if not isinstance(dimension, int):
        raise ModelConfigError(f"{transformer_dir / 'config.json'}: no hidden_size")

    st_config = _optional_json(transformer_dir / "sentence_bert_config.json")
    tokenizer_config = _optional_json(transformer_dir / "tokenizer_config.json")
    max_tokens = st_config.get("max_seq_length") or manifest.get("max_tokens")
    if not max_tokens:
        # Newer sentence-transformers releases save max_seq_length as the tokenizer's limit;
        # values like 1e30 mean "no limit" and fall through to the position limit.
        candidate = tokenizer_config.get("model_max_length")
        max_tokens = candidate if isinstance(candidate, int) and candidate < 1_000_000 else None
    limit = _position_limit(hf_config)
    if max_tokens is None and limit is None:
        raise ModelConfigError(f"{model_dir}: cannot tell the maximum sequence length (no max_seq_length, "
                               f"no max_tokens in {MANIFEST_NAME}, no max_position_embeddings)")
    max_tokens = min(x for x in (max_tokens, limit) if x)

    prompts = _optional_json(model_dir / "config_sentence_transformers.json").get("prompts") or {}
    query_prefix = prompts.get("query") or manifest.get("query_prefix") or ""
    passage_prefix = (prompts.get("passage") or prompts.get("document") or manifest.get("passage_prefix") or "")

    return ModelInfo(
        model_dir=model_dir,
        transformer_dir=transformer_dir,
        dimension=dimension,
        max_tokens=int(max_tokens),
        pooling=pooling,
        normalize=bool(normalize),
        query_prefix=query_prefix,
        passage_prefix=passage_prefix,
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        pad_token_id=int(hf_config.get("pad_token_id") or 0),
        model_id=str(manifest.get("model_id") or model_dir.name),
    )
