"""Retrieval metrics for query/document pairs: recall@1/3/10, MRR@10, nDCG@10.

The one implementation used by the training job (base vs tuned), `semsearch evaluate` and
`semsearch compare`. From pairs, the corpus is every distinct document of the evaluation
pairs and a query's relevant documents are the ones it is paired with (binary relevance).
From a BEIR folder (training_code/inputs.py) the corpus is corpus.jsonl and relevance is
graded by the qrels' scores: recall and MRR count every document scored above 0 as
relevant, nDCG uses the scores as gains (linear gain, as trec_eval/pytrec_eval, which BEIR
reports with). Scores are cosine similarity, exact (brute force), so the figures measure
the model and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .contract import METRIC_KEYS

CUTOFF = 10  # the deepest rank any metric looks at


@dataclass(frozen=True)
class Qrels:
    """Distinct queries and documents, and for each query the indices of its relevant documents."""

    queries: list[str]
    documents: list[str]
    relevant: list[frozenset[int]]
    #: Per query, the gain of each relevant document (BEIR's graded qrels); None: every one gains 1.
    grades: list[dict[int, float]] | None = None


def build_qrels(pairs: Sequence) -> Qrels:
    """Group (query, text) pairs: a query paired with several texts has several relevant documents."""
    doc_index: dict[str, int] = {}
    query_index: dict[str, int] = {}
    relevant: list[set[int]] = []
    for pair in pairs:
        d = doc_index.setdefault(pair.text, len(doc_index))
        q = query_index.setdefault(pair.query, len(query_index))
        if q == len(relevant):
            relevant.append(set())
        relevant[q].add(d)
    return Qrels(list(query_index), list(doc_index), [frozenset(r) for r in relevant])


def top_k(query_emb: np.ndarray, doc_emb: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Indices of the k best documents per query, best first (a chunk of queries at a time,
    so a 16k x 16k score matrix never sits in memory at once)."""
    k = min(k, doc_emb.shape[0])
    out = np.empty((query_emb.shape[0], k), dtype=np.int64)
    for start in range(0, query_emb.shape[0], chunk):
        scores = query_emb[start:start + chunk] @ doc_emb.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start:start + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def score_rankings(ranked: np.ndarray, relevant: Sequence[frozenset[int]],
                   grades: Sequence[dict[int, float]] | None = None) -> dict[str, float]:
    """Mean metrics over queries from each query's ranked document indices (``grades``:
    each query's gain per relevant document, for nDCG; None: binary relevance)."""
    discounts = 1.0 / np.log2(np.arange(2, CUTOFF + 2))
    totals = dict.fromkeys(METRIC_KEYS, 0.0)
    for i, (row, rel) in enumerate(zip(ranked, relevant, strict=True)):
        hits = np.array([d in rel for d in row[:CUTOFF]], dtype=float)
        for k in (1, 3, 10):
            totals[f"recall@{k}"] += hits[:k].sum() / len(rel)
        first = np.flatnonzero(hits)
        totals["mrr@10"] += 1.0 / (first[0] + 1) if first.size else 0.0
        if grades is None:
            gains, ideal_gains = hits, np.ones(min(len(rel), CUTOFF))
        else:
            gains = np.array([grades[i].get(int(d), 0.0) for d in row[:CUTOFF]])
            ideal_gains = np.array(sorted(grades[i].values(), reverse=True)[:CUTOFF])
        ideal = float(ideal_gains @ discounts[:len(ideal_gains)])
        totals["ndcg@10"] += float(gains @ discounts[:len(gains)]) / ideal
    return {key: float(value / len(relevant)) for key, value in totals.items()}


Encode = Callable[[list[str], str], np.ndarray]
"""encode(texts, kind) -> unit-length vectors, kind being "query" or "passage"."""


def evaluate(encode: Encode, pairs: Sequence) -> dict[str, float]:
    """Metrics of one model (given as its encode function) on the pairs."""
    return evaluate_qrels(encode, build_qrels(pairs))


def evaluate_qrels(encode: Encode, qrels: Qrels) -> dict[str, float]:
    """Metrics of one model on queries, a corpus and their relevance (pairs or a BEIR folder)."""
    query_emb = _unit(encode(qrels.queries, "query"))
    doc_emb = _unit(encode(qrels.documents, "passage"))
    return score_from_embeddings(query_emb, doc_emb, qrels)


def score_from_embeddings(query_emb: np.ndarray, doc_emb: np.ndarray, qrels: Qrels) -> dict[str, float]:
    """Metrics from embeddings already computed (one row per query / document of ``qrels``)."""
    return score_rankings(top_k(_unit(query_emb), _unit(doc_emb), CUTOFF), qrels.relevant, qrels.grades)


def _unit(x: np.ndarray) -> np.ndarray:
    # Cosine similarity whatever the model's own normalization; a zero vector stays zero.
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def sentence_transformer_encoder(model, *, query_prefix: str | None = None, passage_prefix: str | None = None,
                                 batch_size: int = 64, show_progress: bool = False) -> Encode:
    """encode() for a SentenceTransformer; prefixes default to the model's saved prompts."""
    prompts = getattr(model, "prompts", None) or {}
    if query_prefix is None:
        query_prefix = prompts.get("query") or ""
    if passage_prefix is None:
        passage_prefix = prompts.get("document") or prompts.get("passage") or ""
    prefix = {"query": query_prefix, "passage": passage_prefix}

    def encode(texts: list[str], kind: str) -> np.ndarray:
        # An explicit prompt (even "") stops the model from applying a default prompt itself.
        return model.encode(texts, prompt=prefix[kind], batch_size=batch_size, convert_to_numpy=True,
                            normalize_embeddings=True, show_progress_bar=show_progress)

    return encode
