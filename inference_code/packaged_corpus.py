"""Corpus embeddings packaged inside the model, for the ``nn_train_data`` mode.

``semsearch package --corpus docs.jsonl`` embeds every document once (as passages) and
stores ``corpus/embeddings.npy`` (float32, one row per document) and ``corpus/ids.json``
(the documents' ids, same order) in the model directory. Queries are then answered by
exact cosine search over those rows, with no document text sent at request time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CORPUS_SUBDIR = "corpus"
EMBEDDINGS_FILE = "embeddings.npy"
IDS_FILE = "ids.json"


@dataclass(frozen=True)
class PackagedCorpus:
    ids: list
    #: Unit-length rows, so that a dot product is the cosine.
    embeddings: np.ndarray


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def write_corpus(model_dir: Path, ids: list, embeddings: np.ndarray) -> None:
    if len(ids) != len(embeddings):
        raise ValueError(f"{len(ids)} ids but {len(embeddings)} embeddings")
    folder = Path(model_dir) / CORPUS_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / EMBEDDINGS_FILE, np.ascontiguousarray(embeddings, dtype=np.float32))
    (folder / IDS_FILE).write_text(json.dumps(ids), encoding="utf-8")


def load_corpus(model_dir: str | Path) -> PackagedCorpus | None:
    """The packaged corpus, or None when the model was packaged without one."""
    folder = Path(model_dir) / CORPUS_SUBDIR
    if not (folder / EMBEDDINGS_FILE).is_file():
        return None
    embeddings = np.load(folder / EMBEDDINGS_FILE)
    ids = json.loads((folder / IDS_FILE).read_text(encoding="utf-8"))
    if embeddings.ndim != 2 or len(ids) != len(embeddings):
        raise ValueError(f"{folder}: {len(ids)} ids for an embeddings array of shape {embeddings.shape}")
    return PackagedCorpus(ids=ids, embeddings=unit_rows(embeddings.astype(np.float32)))


def nearest(queries: np.ndarray, corpus: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine scores), each (n_queries, k), best first; ties go to the lower index."""
    scores = unit_rows(queries) @ corpus.T
    k = min(top_k, corpus.shape[0])
    # Stable sort on the negated scores: exact, deterministic, and cheap at these sizes.
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)
