"""Where the vectors come from: batch-transform output lines, read as a stream.

A line holds many documents or one:

- a request line (bulk_loader.prepare) joined with the endpoint's answer, as the batch-embed
  workflow's transform writes it: ``{"ids": [...], "texts": [...], "SageMakerOutput":
  [[...], ...]}``, the i-th vector for the i-th id and text (the endpoint answers one
  vector per input, in order);
- what the custom handler writes for one ``{"id", "text_inputs"}`` input line,
  ``{"id": ..., "embedding": [...]}``; or, when the transform job joins its input
  (DataProcessing.JoinSource = "Input"), the input line with the output under
  ``SageMakerOutput``: ``{"id", "text_inputs", "SageMakerOutput": {"id", "embedding"}}``.
  The text comes along only in the joined form (or as a ``text`` key).

S3 is a thin boto3 layer (list + streaming GET); ``file://`` paths serve local runs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

#: Where a joined output line holds the answer (the transform's JoinSource Input names it so;
#: bulk_loader.embed_bedrock writes the same).
JOINED_OUTPUT = "SageMakerOutput"


class BadLine(ValueError):
    """One input line (or one document of it) that cannot become a document; the message names
    where and why. ``key`` is what the failure is reported under: the document's id where a
    request line names it, else the line ("<uri> line <n>")."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Doc:
    id: str
    vector: list[float]
    text: str | None
    origin: str  # "<uri> line <n>", for error messages


def parse_documents(line: str | bytes, origin: str, dimension: int | None) -> list[Doc | BadLine]:
    """Every document of one output line, in order: a Doc, or a BadLine saying why not.

    A line that is not JSON, or a request line whose parts do not pair up, is one BadLine
    per document it was meant to hold where the ids can be read (so each is accounted for),
    else one for the line.
    """
    try:
        record = json_object(line, origin)
    except BadLine as e:
        return [e]
    if "ids" not in record:
        try:
            return [_single(record, origin, dimension)]
        except BadLine as e:
            return [e]
    ids = record["ids"]
    if not isinstance(ids, list) or not ids or not all(valid_id(i) for i in ids):
        return [BadLine(f"{origin}: 'ids' must be a non-empty list of non-empty strings or integers", origin)]
    vectors = record.get(JOINED_OUTPUT)
    texts = record.get("texts", [None] * len(ids))
    problem = ""
    if not isinstance(vectors, list):
        problem = "no 'SageMakerOutput' list of vectors (was the transform's JoinSource Input?)"
    elif len(vectors) != len(ids):
        problem = f"the endpoint answered {len(vectors)} vectors for {len(ids)} ids"
    elif not isinstance(texts, list) or len(texts) != len(ids):
        problem = f"'texts' must be a list with one text per id ({len(ids)})"
    if problem:
        return [BadLine(f"{origin}: {problem}", str(i)) for i in ids]
    assert isinstance(vectors, list)
    out: list[Doc | BadLine] = []
    for doc_id, vector, text in zip(ids, vectors, texts, strict=True):
        try:
            out.append(_document(str(doc_id), vector, text if isinstance(text, str) else None, origin, dimension,
                                 key=str(doc_id)))
        except BadLine as e:
            out.append(e)
    return out


def parse_line(line: str | bytes, origin: str, dimension: int | None) -> Doc:
    """One single-document output line as a document; BadLine when it has no usable id or vector."""
    return _single(json_object(line, origin), origin, dimension)


def json_object(line: str | bytes, origin: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as e:
        raise BadLine(f"{origin}: not valid JSON ({e})", origin) from None
    if not isinstance(record, dict):
        raise BadLine(f"{origin}: expected a JSON object, got {type(record).__name__}", origin)
    return record


def valid_id(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (str, int)) and str(value) != ""


def _single(record: dict[str, Any], origin: str, dimension: int | None) -> Doc:
    output = record.get("SageMakerOutput", record)
    if not isinstance(output, dict):
        raise BadLine(f"{origin}: SageMakerOutput must be an object with 'id' and 'embedding'", origin)
    doc_id = output.get("id", record.get("id"))
    if not valid_id(doc_id):
        raise BadLine(f"{origin}: missing 'id' (a non-empty string or integer)", origin)
    text = record.get("text_inputs", record.get("text"))
    if isinstance(text, list) and len(text) == 1:
        text = text[0]
    return _document(str(doc_id), output.get("embedding"), text if isinstance(text, str) else None, origin,
                     dimension, key=origin)


def _document(doc_id: str, vector: Any, text: str | None, origin: str, dimension: int | None, *, key: str) -> Doc:
    if not isinstance(vector, list) or not vector:
        raise BadLine(f"{origin}: id {doc_id!r}: missing 'embedding' (a list of numbers)", key)
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in vector):
        raise BadLine(f"{origin}: id {doc_id!r}: 'embedding' holds something other than finite numbers", key)
    if dimension is not None and len(vector) != dimension:
        raise BadLine(f"{origin}: id {doc_id!r}: embedding has {len(vector)} dimensions, the index expects "
                      f"{dimension}", key)
    return Doc(doc_id, vector, text, origin)


# --------------------------------------------------------------------------- reading


def boto3_s3() -> Any:
    import boto3  # in the Lambda runtime; imported here so local file:// runs need none

    return boto3.client("s3")


def expand(uris: list[str], *, suffix: str = "", s3_client: Any = None) -> list[str]:
    """Objects to read: each s3:// URI ending in "/" is a prefix, listed (keys ending in
    ``suffix``, in key order); other URIs are taken as they are."""
    out = []
    for uri in uris:
        parsed = urlparse(uri)
        if parsed.scheme == "s3" and (parsed.path.endswith("/") or parsed.path == ""):
            s3 = s3_client or boto3_s3()
            keys = []
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=parsed.netloc,
                                                                      Prefix=parsed.path.lstrip("/")):
                keys += [o["Key"] for o in page.get("Contents", [])
                         if o["Key"].endswith(suffix) and not o["Key"].endswith("/")]
            if not keys:
                raise FileNotFoundError(f"{uri}: no objects{f' ending in {suffix!r}' if suffix else ''}")
            out += [f"s3://{parsed.netloc}/{k}" for k in sorted(keys)]
        elif parsed.scheme in ("s3", "file"):
            out.append(uri)
        else:
            raise ValueError(f"{uri!r}: expected an s3:// URI (or file:// outside Lambda)")
    return out


def read_lines(uri: str, *, s3_client: Any = None) -> Iterator[tuple[int, bytes]]:
    """(line number, line) for each non-blank line, streamed: memory stays flat on big files."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        body = (s3_client or boto3_s3()).get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]
        lines: Iterator[bytes] = body.iter_lines(keepends=False)
    elif parsed.scheme == "file":
        if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
            raise ValueError(f"{uri!r}: file:// inputs are for local runs; in Lambda give s3:// URIs")
        lines = open(unquote(parsed.path), "rb")  # noqa: SIM115 - closed by the generator's finally
    else:
        raise ValueError(f"{uri!r}: expected an s3:// or file:// URI")
    try:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield number, line
    finally:
        close = getattr(lines, "close", None)
        if close:
            close()
