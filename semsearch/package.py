"""`semsearch package`: build the model.tar.gz the ``custom`` endpoint flavor deploys.

Layout (what SageMaker unpacks into /opt/ml/model)::

    config.json, model.safetensors, tokenizer.json, modules.json, 1_Pooling/, ...   the model
    semsearch.json            catalog entry: dimension, max tokens, pooling, prefixes
    onnx/model.onnx           fp32 graph for the exact mode on CPU
    onnx/model_int8.onnx      int8 graph for the fast mode on CPU
    corpus/embeddings.npy     with --corpus: passage embeddings for mode nn_train_data
    corpus/ids.json
    code/inference.py ...     inference_code/, the handler; code/requirements.txt
    code/wheels/*.whl         what the handler needs beyond the container's packages, which
                              code/requirements.txt installs from there: the endpoint has no
                              network (semsearch/container_wheels.py)

Before writing anything the catalog entry is checked against the model's own files
(dimension, pooling, normalization, prefixes): a mismatch would deploy an index whose
vectors do not mean what the catalog says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from semsearch import container_wheels
from semsearch.errors import UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent
CODE_DIR = REPO_ROOT / "inference_code"
#: Regenerated for every package, so never copied from the source folder.
_GENERATED = {"code", "onnx", "corpus", "semsearch.json"}
_SKIPPED = {"__pycache__", ".git", ".gitattributes", ".cache"}


def manifest_for(model_id: str) -> dict:
    from stacks.catalog import MODELS

    if model_id not in MODELS:
        raise UsageError(f"--model-id {model_id!r} is not in the catalog; known: {', '.join(sorted(MODELS))}")
    spec = MODELS[model_id]
    return {"model_id": spec.id, "hf_id": spec.hf_id, "dimension": spec.dimension, "max_tokens": spec.max_tokens,
            "pooling": spec.pooling, "normalize": spec.normalize, "query_prefix": spec.query_prefix,
            "passage_prefix": spec.passage_prefix}


def check_against_catalog(model_dir: Path, manifest: dict) -> list[str]:
    """The effective settings (model files first, manifest second) must equal the catalog's."""
    from inference_code.model_info import ModelConfigError, read_model_info

    try:
        info = read_model_info(model_dir, manifest=manifest)
    except ModelConfigError as e:
        raise UsageError(str(e)) from None
    problems = []
    for field in ("dimension", "pooling", "normalize", "query_prefix", "passage_prefix"):
        actual = getattr(info, field)
        if actual != manifest[field]:
            problems.append(f"{field}: the model's files say {actual!r}, catalog entry {manifest['model_id']} "
                            f"says {manifest[field]!r}")
    return problems


def _link_tree(src: Path, dst: Path) -> None:
    """Mirror ``src`` into ``dst`` with symlinks (tar follows them), minus generated parts."""
    for path in sorted(src.iterdir()):
        if path.name in _GENERATED or path.name in _SKIPPED:
            continue
        if path.is_dir():
            (dst / path.name).mkdir()
            _link_tree(path, dst / path.name)
        else:
            os.symlink(path.resolve(), dst / path.name)


def _copy_code(dst: Path, wheels: list[Path]) -> None:
    dst.mkdir()
    for path in sorted(CODE_DIR.iterdir()):
        if path.is_file() and path.suffix in (".py", ".txt"):
            (dst / path.name).write_bytes(path.read_bytes())
    (dst / container_wheels.CODE_SUBDIR).mkdir()
    for wheel in wheels:
        os.symlink(wheel.resolve(), dst / container_wheels.CODE_SUBDIR / wheel.name)


def read_corpus(path: Path) -> tuple[list, list[str]]:
    """(ids, texts) from JSON Lines with "id" and "text" (or "text_inputs") on each line."""
    ids, texts, seen = [], [], set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UsageError(f"--corpus {path}: {e.strerror or e}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise UsageError(f"--corpus {path}, line {number}: not valid JSON") from None
        text = row.get("text", row.get("text_inputs")) if isinstance(row, dict) else None
        if not isinstance(text, str) or "id" not in row:
            raise UsageError(f"--corpus {path}, line {number}: expected an object with 'id' and a string 'text'")
        key = json.dumps(row["id"])
        if key in seen:
            raise UsageError(f"--corpus {path}, line {number}: duplicate id {key}")
        seen.add(key)
        ids.append(row["id"])
        texts.append(text)
    if not texts:
        raise UsageError(f"--corpus {path} holds no documents")
    return ids, texts


def container_wheel_files(wheels_dir: Path | None) -> list[Path]:
    """The locked wheels: from ``wheels_dir`` as they are, or downloaded once into build/."""
    try:
        if wheels_dir is not None:
            return container_wheels.wheel_files(wheels_dir)
        return container_wheels.download()
    except container_wheels.WheelsMissing as e:
        raise UsageError(f"--wheels-dir: {e}") from None
    except subprocess.CalledProcessError as e:
        raise UsageError(f"downloading the wheels in {container_wheels.LOCK.name} from PyPI failed (pip exit "
                         f"status {e.returncode}); offline, pass --wheels-dir with them") from None


def build_package(model_dir: Path, out: Path, *, model_id: str, corpus: Path | None = None,
                  wheels_dir: Path | None = None, log=lambda message: print(message, file=sys.stderr)) -> dict:
    """Write ``out`` (model.tar.gz); returns a summary of what went in."""
    from inference_code.embedder import load_embedder
    from inference_code.model_info import read_model_info
    from inference_code.onnx_export import ONNX_SUBDIR, export
    from inference_code.packaged_corpus import write_corpus

    manifest = manifest_for(model_id)
    problems = check_against_catalog(model_dir, manifest)
    if problems:
        raise UsageError(f"{model_dir} does not match the catalog: " + "; ".join(problems))
    corpus_rows = read_corpus(corpus) if corpus else None
    wheels = container_wheel_files(wheels_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="semsearch-package-") as tmp:
        stage = Path(tmp) / "model"
        stage.mkdir()
        _link_tree(model_dir, stage)
        (stage / "semsearch.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _copy_code(stage / "code", wheels)
        log("exporting ONNX (fp32 and int8)")
        export(read_model_info(stage), stage / ONNX_SUBDIR)
        summary = {"out": str(out), "model_id": model_id, "dimension": manifest["dimension"], "corpus_documents": 0,
                   "wheels": len(wheels)}
        if corpus_rows:
            ids, texts = corpus_rows
            log(f"embedding {len(texts)} corpus documents")
            embedder = load_embedder(stage, mode="exact")  # the exact mode: what queries are compared with
            vectors = [embedder.embed(texts[i : i + 256], "passage") for i in range(0, len(texts), 256)]
            import numpy as np

            write_corpus(stage, ids, np.concatenate(vectors))
            summary["corpus_documents"] = len(ids)
        partial = out.with_name(out.name + ".partial")
        # Weights hardly compress; a low level keeps packaging fast at almost the same size.
        with tarfile.open(partial, "w:gz", compresslevel=3, dereference=True) as tar:
            for path in sorted(stage.rglob("*")):
                if path.is_file():
                    tar.add(path, arcname=path.relative_to(stage).as_posix(), recursive=False)
        partial.replace(out)
    summary["bytes"] = out.stat().st_size
    return summary


def register(subparsers) -> None:
    p = subparsers.add_parser("package", help="build the model.tar.gz the custom endpoint flavor deploys",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", help="sentence-transformers model folder (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--out", required=True, help="where to write model.tar.gz")
    p.add_argument("--model-id", default=None, help="catalog entry the model is checked against and described by "
                   "(default: all-MiniLM-L6-v2)")
    p.add_argument("--corpus", help="JSON Lines of {id, text}: embedded now, searched by mode nn_train_data")
    p.add_argument("--wheels-dir", help="folder holding the wheels of inference_code/wheels.lock, for a machine "
                   "without PyPI (default: build/inference-wheels, downloaded there once)")
    p.set_defaults(func=run)


def run(args) -> int:
    from semsearch.models import DEFAULT_MODEL_ID, resolve_model_dir

    model_dir = resolve_model_dir(args.model_dir)
    corpus = Path(args.corpus) if args.corpus else None
    wheels_dir = Path(args.wheels_dir) if args.wheels_dir else None
    summary = build_package(model_dir, Path(args.out), model_id=args.model_id or DEFAULT_MODEL_ID, corpus=corpus,
                            wheels_dir=wheels_dir)
    print(json.dumps(summary))
    return 0
