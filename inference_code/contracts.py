"""The request and response shapes the ``custom`` endpoint speaks, and their validation.

Every shape gives the same embedding for the same text and kind:

===========================================  ==========================================
request (Content-Type)                        response
===========================================  ==========================================
``["a", "b"]`` (application/json)             ``[[...], [...]]``: ml-commons' default
                                              pre/post-process; what our connector sends
``{"inputs": "a" | ["a", ...]}``              ``[[...], ...]`` (TEI / Hugging Face shape);
                                              optional ``truncate`` (we always truncate)
``{"text_inputs": "a" | ["a", ...]}``         ``{"embedding": [[...], ...]}`` (JumpStart)
``a`` (application/x-text): one text          ``{"embedding": [[...]]}``
``{"queries": [...], "corpus": [...],         per query ``[{"corpus_id", "score"}, ...]``
"top_k": k, "mode": "nn_corpus"}``            best first (cosine; corpus_id = position)
``{"queries": [...], "top_k": k,              per query ``[{"id", "score"}, ...]`` over
"mode": "nn_train_data"}``                    the corpus packaged in the model
lines ``{"id", "text_inputs"}``               lines ``{"id", "embedding"}``, same order,
(application/jsonlines; batch transform)      nothing dropped
===========================================  ==========================================

Texts are embedded as passages, queries (``queries``) as queries; ``inputs`` and
``text_inputs`` take ``"prompt_name": "query" | "passage"`` to choose (as TEI's field).
``top_k`` defaults to 10. A request may embed at most ``max_batch`` texts (default
``DEFAULT_MAX_BATCH``; queries and corpus count together); JSON Lines bodies are embedded
``max_batch`` lines at a time instead, so only the payload size limits them.

Bad input raises ``RequestError`` with an HTTP status and a one-line reason naming what
is wrong. Texts longer than the model's max tokens are truncated, never rejected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

if __package__:  # imported as inference_code.contracts (tests, the semsearch CLI)
    from .packaged_corpus import PackagedCorpus, nearest
else:  # imported from SageMaker's code/ folder, where every module is top-level
    from packaged_corpus import PackagedCorpus, nearest  # type: ignore[no-redef]

#: Texts per request. TEI's client batch is 32; ml-commons sends one array per document
#: batch of an ingest pipeline (bulk batch_size, default 1 document) or per neural query,
#: so 256 leaves room for big bulk batches while one request stays well under 60 s on CPU.
DEFAULT_MAX_BATCH = 256
DEFAULT_TOP_K = 10

JSON = "application/json"
JSONLINES = "application/jsonlines"
TEXT = "application/x-text"
_CONTENT_TYPES = {JSON: JSON, "application/jsonlines": JSONLINES, "application/x-jsonlines": JSONLINES,
                  "application/jsonl": JSONLINES, TEXT: TEXT, "text/plain": TEXT}
#: What a client may ask for: the response format always follows the request's shape (the
#: SageMaker toolkits fill in application/json when a batch transform sends no Accept).
_ACCEPTABLE = {"", "*/*", "application/*", JSON, "application/jsonlines", "application/x-jsonlines",
               "application/jsonl"}
_MODES = ("embedding", "nn_corpus", "nn_train_data")
_KINDS = ("query", "passage")


class RequestError(ValueError):
    """A request the endpoint refuses: ``status`` is the HTTP status, the message one line."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    """A parsed request: what to embed, and which response shape to give back."""

    shape: str  # "array" | "inputs" | "text_inputs" | "nn_corpus" | "nn_train_data" | "jsonlines"
    texts: list[str]
    kind: str = "passage"
    corpus: list[str] = field(default_factory=list)
    top_k: int = DEFAULT_TOP_K
    ids: list[Any] = field(default_factory=list)  # jsonlines only

    @property
    def text_count(self) -> int:
        return len(self.texts) + len(self.corpus)


@dataclass
class Result:
    shape: str
    embeddings: np.ndarray | None = None
    hits: list[list[dict[str, Any]]] | None = None
    ids: list[Any] = field(default_factory=list)


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _describe(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _texts(value: Any, what: str | None, *, allow_single: bool) -> list[str]:
    """``value`` checked as texts; ``what`` names the field (None: the bare top-level array)."""
    if allow_single and isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        expected = "a string or an array of strings" if allow_single else "an array of strings"
        raise RequestError(f"{what} must be {expected}, got {_describe(value)}")
    if not value:
        raise RequestError(f"{what or 'the array'} is empty: send at least one text")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            where = f"{what}[{i}]" if what else f"item {i} of the array"
            raise RequestError(f"{where} is {_describe(item)}, expected a string")
    return value


def _check_keys(obj: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")


def _kind(obj: dict[str, Any]) -> str:
    kind = obj.get("prompt_name", "passage")
    if kind not in _KINDS:
        raise RequestError(f"prompt_name must be 'query' or 'passage', got {kind!r}")
    return kind


def _top_k(obj: dict[str, Any]) -> int:
    top_k = obj.get("top_k", DEFAULT_TOP_K)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise RequestError(f"top_k must be a positive integer, got {json.dumps(top_k)}")
    return top_k


def _parse_object(obj: dict[str, Any]) -> Request:
    mode = obj.get("mode")
    if mode is not None and mode not in _MODES:
        raise RequestError(f"unknown mode {json.dumps(mode)}; expected one of {', '.join(_MODES)}")
    if "inputs" in obj:
        _check_keys(obj, ("inputs", "truncate", "prompt_name"))
        if not isinstance(obj.get("truncate", True), bool):
            raise RequestError("truncate must be true or false (texts are always truncated at the model's limit)")
        return Request("inputs", _texts(obj["inputs"], "inputs", allow_single=True), kind=_kind(obj))
    if "text_inputs" in obj:
        _check_keys(obj, ("text_inputs", "mode", "prompt_name"))
        if mode not in (None, "embedding"):
            raise RequestError(f"mode {mode} takes 'queries', not 'text_inputs'")
        return Request("text_inputs", _texts(obj["text_inputs"], "text_inputs", allow_single=True), kind=_kind(obj))
    if "queries" in obj or mode in ("nn_corpus", "nn_train_data"):
        if mode not in ("nn_corpus", "nn_train_data"):
            raise RequestError("'queries' needs \"mode\": \"nn_corpus\" (with 'corpus') or \"nn_train_data\"")
        if "queries" not in obj:
            raise RequestError(f"mode {mode} needs 'queries', an array of strings")
        queries = _texts(obj["queries"], "queries", allow_single=False)
        if mode == "nn_corpus":
            _check_keys(obj, ("queries", "corpus", "top_k", "mode"))
            if "corpus" not in obj:
                raise RequestError("mode nn_corpus needs 'corpus', an array of strings to search")
            corpus = _texts(obj["corpus"], "corpus", allow_single=False)
            return Request("nn_corpus", queries, kind="query", corpus=corpus, top_k=_top_k(obj))
        _check_keys(obj, ("queries", "top_k", "mode"))
        return Request("nn_train_data", queries, kind="query", top_k=_top_k(obj))
    raise RequestError("expected a JSON array of strings or an object with 'inputs', 'text_inputs' or 'queries'; "
                       f"got an object with keys {sorted(obj)}")


def _parse_jsonlines(text: str) -> Request:
    texts, ids = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        item_id, item_text = _parse_line(line, number)
        ids.append(item_id)
        texts.append(item_text)
    if not texts:
        raise RequestError("no JSON Lines in the body: send one {\"id\", \"text_inputs\"} object per line")
    return Request("jsonlines", texts, ids=ids)


def _parse_line(line: str, number: int) -> tuple[Any, str]:
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise RequestError(f"line {number} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise RequestError(f"line {number} is {_describe(obj)}, expected an object with 'id' and 'text_inputs'")
    if "id" not in obj:
        raise RequestError(f"line {number} has no 'id'")
    if not isinstance(obj.get("text_inputs"), str):
        raise RequestError(f"line {number}: text_inputs must be a string, got {_describe(obj.get('text_inputs'))}")
    return obj["id"], obj["text_inputs"]


def parse_request(body: bytes | str, content_type: str | None) -> Request:
    """Check and parse one request body. Raises RequestError (4xx) on anything bad."""
    kind = _CONTENT_TYPES.get(media_type(content_type) or JSON)
    if kind is None:
        raise RequestError(f"unsupported content type {media_type(content_type)!r}; use application/json, "
                           "application/jsonlines or application/x-text", status=415)
    if isinstance(body, bytes | bytearray):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(f"body is not UTF-8: {e}") from None
    if kind == TEXT:
        if not body:
            raise RequestError("empty body: application/x-text takes one text")
        return Request("text_inputs", [body])
    if kind == JSONLINES:
        return _parse_jsonlines(body)
    try:
        obj = json.loads(body)
    except ValueError as e:
        raise RequestError(f"body is not valid JSON: {e}") from None
    if isinstance(obj, list):
        return Request("array", _texts(obj, None, allow_single=False))
    if isinstance(obj, dict):
        return _parse_object(obj)
    raise RequestError(f"expected a JSON array of strings or an object, got {_describe(obj)}")


def check_accept(accept: str | None) -> None:
    for part in (accept or "").split(","):
        if media_type(part) in _ACCEPTABLE:
            return
    raise RequestError(f"cannot answer with Accept {accept!r}: responses are application/json "
                       "(application/jsonlines for JSON Lines requests)", status=406)


class EmbeddingService:
    """Runs parsed requests against one embedder (and the corpus packaged with it, if any)."""

    def __init__(self, embedder, corpus: PackagedCorpus | None = None, *, max_batch: int = DEFAULT_MAX_BATCH):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.embedder = embedder
        self.corpus = corpus
        self.max_batch = max_batch

    def run(self, request: Request) -> Result:
        if request.shape == "jsonlines":  # embedded max_batch lines at a time; no item limit
            chunks = [self.embedder.embed(request.texts[i : i + self.max_batch], "passage")
                      for i in range(0, len(request.texts), self.max_batch)]
            return Result("jsonlines", embeddings=np.concatenate(chunks), ids=request.ids)
        if request.text_count > self.max_batch:
            raise RequestError(f"{request.text_count} texts is over this endpoint's batch limit of {self.max_batch}; "
                               "split the request", status=413)
        corpus = self.corpus
        if request.shape == "nn_train_data" and corpus is None:
            raise RequestError("mode nn_train_data needs corpus embeddings packaged in the model "
                               "(semsearch package --corpus); this model has none")
        vectors = self.embedder.embed(request.texts, request.kind)
        if request.shape == "nn_corpus":
            corpus_vectors = self.embedder.embed(request.corpus, "passage")
            order, scores = nearest(vectors, corpus_vectors, request.top_k)
            hits = [[{"corpus_id": int(i), "score": float(s)} for i, s in zip(row_i, row_s, strict=True)]
                    for row_i, row_s in zip(order.tolist(), scores.tolist(), strict=True)]
            return Result("nn_corpus", hits=hits)
        if request.shape == "nn_train_data" and corpus is not None:
            order, scores = nearest(vectors, corpus.embeddings, request.top_k)
            ids = corpus.ids
            hits = [[{"id": ids[i], "score": s} for i, s in zip(row_i, row_s, strict=True)]
                    for row_i, row_s in zip(order.tolist(), scores.tolist(), strict=True)]
            return Result("nn_train_data", hits=hits)
        return Result(request.shape, embeddings=vectors)

    def invoke(self, body: bytes | str, content_type: str | None, accept: str | None = None) -> tuple[bytes, str]:
        """One whole request: (response body, its content type). Raises RequestError."""
        check_accept(accept)
        return encode_result(self.run(parse_request(body, content_type)))


def _json(value: Any) -> str:
    # tolist() turns float32 into Python floats in C; json then writes them at full
    # precision, so a client decodes exactly the float32 values we computed.
    return json.dumps(value, separators=(",", ":"))


def encode_result(result: Result) -> tuple[bytes, str]:
    if result.hits is not None:
        return _json(result.hits).encode(), JSON
    if result.embeddings is None:
        raise ValueError(f"a {result.shape} result holds neither hits nor embeddings")
    if result.shape == "jsonlines":
        return "".join(_jsonlines(result.ids, result.embeddings)).encode(), JSONLINES
    vectors = result.embeddings.tolist()
    if result.shape == "text_inputs":
        return _json({"embedding": vectors}).encode(), JSON
    return _json(vectors).encode(), JSON


def _jsonlines(ids: list[Any], embeddings: np.ndarray) -> Iterator[str]:
    for item_id, vector in zip(ids, embeddings.tolist(), strict=True):
        yield _json({"id": item_id, "embedding": vector}) + "\n"


def embed_jsonlines(embedder, lines: Iterable[str | bytes], *, batch_size: int = DEFAULT_MAX_BATCH) -> Iterator[str]:
    """Stream JSON Lines ``{"id", "text_inputs"}`` to ``{"id", "embedding"}`` lines (each ending in a newline).

    The batch-transform contract without the HTTP around it: same order, nothing dropped,
    blank lines skipped, a bad line raises RequestError naming its line number. Reads
    ``batch_size`` lines ahead at most, so files of any size stream in bounded memory.
    """
    ids: list[Any] = []
    texts: list[str] = []
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        if not line.strip():
            continue
        item_id, text = _parse_line(line, number)
        ids.append(item_id)
        texts.append(text)
        if len(texts) >= batch_size:
            yield from _jsonlines(ids, embedder.embed(texts, "passage"))
            ids, texts = [], []
    if texts:
        yield from _jsonlines(ids, embedder.embed(texts, "passage"))
