"""Where the vectors come from: batch-transform output lines, read as a stream.

A line is what the custom handler writes for one ``{"id", "text_inputs"}`` input line,
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


class BadLine(ValueError):
    """One input line that cannot become a document; the message names where and why."""


@dataclass(frozen=True)
class Doc:
    id: str
    vector: list[float]
    text: str | None
    origin: str  # "<uri> line <n>", for error messages


def parse_line(line: str | bytes, origin: str, dimension: int | None) -> Doc:
    """One output line as a document; BadLine when it has no usable id or vector."""
    try:
        record = json.loads(line)
    except ValueError as e:
        raise BadLine(f"{origin}: not valid JSON ({e})") from None
    if not isinstance(record, dict):
        raise BadLine(f"{origin}: expected a JSON object, got {type(record).__name__}")
    output = record.get("SageMakerOutput", record)
    if not isinstance(output, dict):
        raise BadLine(f"{origin}: SageMakerOutput must be an object with 'id' and 'embedding'")
    doc_id = output.get("id", record.get("id"))
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id) == "":
        raise BadLine(f"{origin}: missing 'id' (a non-empty string or integer)")
    vector = output.get("embedding")
    if not isinstance(vector, list) or not vector:
        raise BadLine(f"{origin}: id {doc_id!r}: missing 'embedding' (a list of numbers)")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in vector):
        raise BadLine(f"{origin}: id {doc_id!r}: 'embedding' holds something other than finite numbers")
    if dimension is not None and len(vector) != dimension:
        raise BadLine(f"{origin}: id {doc_id!r}: embedding has {len(vector)} dimensions, the index expects "
                      f"{dimension}")
    text = record.get("text_inputs", record.get("text"))
    if isinstance(text, list) and len(text) == 1:
        text = text[0]
    return Doc(str(doc_id), vector, text if isinstance(text, str) else None, origin)


# --------------------------------------------------------------------------- reading


def _s3() -> Any:
    import boto3  # in the Lambda runtime; imported here so local file:// runs need none

    return boto3.client("s3")


def expand(uris: list[str], *, suffix: str = "", s3_client: Any = None) -> list[str]:
    """Objects to read: each s3:// URI ending in "/" is a prefix, listed (keys ending in
    ``suffix``, in key order); other URIs are taken as they are."""
    out = []
    for uri in uris:
        parsed = urlparse(uri)
        if parsed.scheme == "s3" and (parsed.path.endswith("/") or parsed.path == ""):
            s3 = s3_client or _s3()
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
        body = (s3_client or _s3()).get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]
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
