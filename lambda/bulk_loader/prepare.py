"""Batch-embed request lines: the user's documents as one endpoint request per line, for the
SageMaker transform job. Handler: ``bulk_loader.prepare.handler``.

Input: JSON Lines, one document per line, ``{"id": "...", "text": "..."}`` (``text_inputs``
is read where ``text`` is absent). Each output line is one request exactly as the index's
ingest pipeline would send it (endpoint_request: same body, same prefix), with what the
loader needs beside it::

    {"ids": [...], "texts": [...], "request": {"inputs": ["passage: ...", ...], "truncate": true}}

The transform job sends only ``request`` (DataProcessing.InputFilter ``$.request``), one
line per invocation (BatchStrategy SingleRecord: the endpoint takes one JSON body, not
lines), and joins the answer, one vector per input in order, to the line under
``SageMakerOutput`` (JoinSource Input); the loader pairs ids, texts and vectors
(bulk_loader.source). A request holds at most ``max_texts`` texts (the endpoint's
max_client_batch_size, which TEI enforces) and a line at most ``max_bytes`` bytes (the job's
MaxPayloadInMB). Lines go into parts of at most PART_LINES lines, so that several transform
instances share the work (each takes whole objects).

Event::

    {"input": "s3://bucket/batch/input/docs.jsonl",  # or a prefix ending in "/", or a list
     "output": "s3://bucket/jobs/batch/<job>/requests/",
     "flavor": "tei",        # the fronted endpoint's serving flavor
     "prefix": "passage: ",  # the catalog's passage prefix ("" when none)
     "max_texts": 32, "max_bytes": 6291456}

On a stage on Amazon Bedrock (``"flavor": "bedrock"``) each ``request`` is the InvokeModel
body the connector sends that model for passages (endpoint_request.bedrock: Titan v2 one
``inputText`` with ``dimensions`` and ``normalize``; Cohere v3 ``texts`` with ``input_type``
search_document and ``truncate`` END; texts clipped to the documented limit), at most the
model's texts per call; bulk_loader.embed_bedrock sends it::

    {"flavor": "bedrock", "model_id": "amazon.titan-embed-text-v2:0", "dimension": 512,
     "normalize": true,      # only for a model with the option (Titan v2)
     "output": "...", "input": "...", "max_texts": 1, "max_bytes": 6291456}

Returns {"documents", "requests", "objects", "inputs"}. A line that is not a document, or a
document too big for a request on its own, fails the whole preparation (PrepareError naming
each by "<uri> line <n>") before any transform starts; the parts already written lie under
jobs/, which expires.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from endpoint_request import FLAVORS, bedrock, request_body
from json_logging import lambda_entry, set_level

from .source import BadLine, boto3_s3, expand, json_object, read_lines, valid_id

log = logging.getLogger(__name__)
LOGGERS = ("bulk_loader",)
set_level(*LOGGERS)

#: What the workflow embeds: documents, never queries.
KIND = "passage"
#: The flavor of a stage whose connector calls an Amazon Bedrock model (no endpoint).
BEDROCK = "bedrock"
#: Request lines per output object: a transform job hands whole objects to its instances, so
#: objects of a few thousand documents let several instances share a corpus of tens of thousands.
PART_LINES = 100
#: Failures a PrepareError quotes.
MAX_SHOWN = 10


class PrepareError(Exception):
    """The input cannot become request lines as it is; the message says which lines and why."""


@dataclass
class Batcher:
    """Cuts documents into requests of at most ``max_texts`` texts and ``max_bytes`` bytes a line."""

    flavor: str
    prefix: str
    max_texts: int
    max_bytes: int
    #: flavor bedrock: the model, its dimension (0: its default) and normalize (None: not an option).
    model_id: str = ""
    dimension: int = 0
    normalize: bool | None = None
    ids: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    size: int = 0

    def __post_init__(self) -> None:
        if self.flavor not in (*FLAVORS, BEDROCK):
            raise PrepareError(f"'flavor' must be one of {', '.join((*FLAVORS, BEDROCK))}, got {self.flavor!r}")
        if self.max_texts < 1 or self.max_bytes < 1:
            raise PrepareError(f"'max_texts' and 'max_bytes' must be positive, got {self.max_texts}, {self.max_bytes}")
        if self.flavor == BEDROCK:
            try:
                spec = bedrock.model(self.model_id)
                self.fixed = bedrock.template_parameters(self.model_id, input_type=bedrock.input_type_for(KIND),
                                                         dimension=self.dimension or None, normalize=self.normalize)
            except bedrock.BedrockModelError as e:
                raise PrepareError(f"flavor bedrock: {e}") from None
            if self.max_texts > spec.max_texts:
                raise PrepareError(f"'max_texts' {self.max_texts}: {self.model_id} takes at most {spec.max_texts} "
                                   "texts a call")
            # The body's fixed part: an empty text list (Titan: an empty inputText, which no line carries).
            empty = bedrock.render(bedrock.BODY_TEMPLATES[spec.family], {**self.fixed, "inputText": "", "texts": []})
            self.empty_size = len(self._encode([], [], empty))
        else:
            self.empty_size = len(self._line([], []))

    def _request(self, texts: list[str]) -> dict[str, Any]:
        if self.flavor != BEDROCK:
            return request_body(self.flavor, KIND, texts, self.prefix)
        return bedrock.request_body(self.model_id, texts, input_type=bedrock.input_type_for(KIND),
                                    dimension=self.dimension or None, normalize=self.normalize)

    @staticmethod
    def _encode(ids: list[Any], texts: list[str], body: dict[str, Any]) -> bytes:
        return (json.dumps({"ids": ids, "texts": texts, "request": body}, ensure_ascii=False) + "\n").encode()

    def _line(self, ids: list[Any], texts: list[str]) -> bytes:
        return self._encode(ids, texts, self._request(texts))

    def _cost(self, doc_id: Any, text: str) -> int:
        """An upper bound of what one document adds to a line: its id, its text and its
        request input, each with a ", " separator."""
        return sum(len(json.dumps(x, ensure_ascii=False).encode()) + 2
                   for x in (doc_id, text, self.prefix + text if self.flavor == "tei" else text))

    def add(self, doc_id: Any, text: str) -> bytes | None:
        """Take one document; returns the finished line it closed, if any. ValueError when the
        document alone would not fit in a line."""
        if self.flavor == BEDROCK:
            try:  # what the model refuses (Titan: an empty text) fails this document, not a later line
                self._request([text])
            except bedrock.BedrockModelError as e:
                raise ValueError(str(e)) from None
        cost = self._cost(doc_id, text)
        if self.empty_size + cost > self.max_bytes:
            raise ValueError(f"the document is about {self.empty_size + cost} bytes as a request; max_bytes is "
                             f"{self.max_bytes} (the job's MaxPayloadInMB; for TEI at most its payload limit)")
        done = None
        if self.ids and (len(self.ids) >= self.max_texts or self.empty_size + self.size + cost > self.max_bytes):
            done = self.flush()
        self.ids.append(doc_id)
        self.texts.append(text)
        self.size += cost
        return done

    def flush(self) -> bytes | None:
        if not self.ids:
            return None
        line = self._line(self.ids, self.texts)
        assert len(line) <= self.max_bytes, (len(line), self.max_bytes)  # _cost is an upper bound
        self.ids, self.texts, self.size = [], [], 0
        return line


def _document(line: bytes, origin: str) -> tuple[Any, str]:
    """A ``{"id", "text"}`` line, read by the same rules as the loader's input lines (source)."""
    record = json_object(line, origin)
    doc_id = record.get("id")
    if not valid_id(doc_id):
        raise BadLine(f"{origin}: missing 'id' (a non-empty string or integer)", origin)
    text = record.get("text", record.get("text_inputs"))
    if not isinstance(text, str):
        raise BadLine(f"{origin}: id {doc_id!r}: missing 'text' (a string)", origin)
    return doc_id, text


class Parts:
    """Writes request lines into numbered objects under ``output`` (s3:// or, locally, file://)."""

    def __init__(self, output: str, *, s3_client: Any = None, part_lines: int | None = None) -> None:
        parsed = urlparse(output)
        if parsed.scheme not in ("s3", "file") or not parsed.path.endswith("/"):
            raise PrepareError(f"'output' must be an s3:// (or file://) prefix ending in '/', got {output!r}")
        if parsed.scheme == "file" and os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
            raise PrepareError(f"{output!r}: file:// outputs are for local runs; in Lambda give an s3:// prefix")
        self.output, self.parsed, self.s3_client = output, parsed, s3_client
        self.part_lines = part_lines or PART_LINES
        self.lines: list[bytes] = []
        self.objects: list[str] = []

    def add(self, line: bytes) -> None:
        self.lines.append(line)
        if len(self.lines) >= self.part_lines:
            self.flush()

    def flush(self) -> None:
        if not self.lines:
            return
        name = f"part-{len(self.objects):05d}.jsonl"
        data = b"".join(self.lines)
        if self.parsed.scheme == "s3":
            (self.s3_client or boto3_s3()).put_object(Bucket=self.parsed.netloc, Key=self.parsed.path.lstrip("/") + name,
                                                 Body=data, ContentType="application/jsonlines")
        else:
            folder = Path(unquote(self.parsed.path))
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        self.objects.append(self.output + name)
        self.lines = []


def _inputs(event: dict[str, Any]) -> list[str]:
    value = event.get("input")
    uris = [value] if isinstance(value, str) else value
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and u for u in uris):
        raise PrepareError("'input' must be an s3:// URI (object or prefix ending in '/') or a list of them")
    return uris


def _documents(uris: list[str], failed: dict[str, str], s3_client: Any) -> Iterator[tuple[str, Any, str]]:
    for uri in uris:
        for number, line in read_lines(uri, s3_client=s3_client):
            origin = f"{uri} line {number}"
            try:
                doc_id, text = _document(line, origin)
            except BadLine as e:
                failed[origin] = str(e)
                continue
            yield origin, doc_id, text


def prepare(event: dict[str, Any], *, s3_client: Any = None) -> dict[str, Any]:
    """The handler's work with the S3 client passed in (the tests give a Stubber's)."""
    for key in ("flavor", "output"):
        if not isinstance(event.get(key), str):
            raise PrepareError(f"{key!r} missing (a string)")
    normalize = event.get("normalize")
    if normalize is not None and not isinstance(normalize, bool):
        raise PrepareError(f"'normalize' must be true or false, got {normalize!r}")
    batcher = Batcher(event["flavor"], str(event.get("prefix", "")), int(event.get("max_texts", 32)),
                      int(event.get("max_bytes", 6 * 1024 * 1024)), model_id=str(event.get("model_id", "")),
                      dimension=int(event.get("dimension", 0)), normalize=normalize)
    uris = expand(_inputs(event), s3_client=s3_client)
    parts = Parts(event["output"], s3_client=s3_client)
    failed: dict[str, str] = {}
    documents = requests = 0
    for origin, doc_id, text in _documents(uris, failed, s3_client):
        try:
            line = batcher.add(doc_id, text)
        except ValueError as e:
            failed[origin] = f"{origin}: id {doc_id!r}: {e}"
            continue
        documents += 1
        if line:
            parts.add(line)
            requests += 1
    last = batcher.flush()
    if last:
        parts.add(last)
        requests += 1
    if failed:
        shown = "; ".join(list(failed.values())[:MAX_SHOWN])
        more = f"; and {len(failed) - MAX_SHOWN} more" if len(failed) > MAX_SHOWN else ""
        raise PrepareError(f"{len(failed)} line(s) of the input are not documents that fit a request: {shown}{more}")
    if not documents:
        raise PrepareError(f"no documents in {', '.join(uris)}: expected JSON Lines of {{\"id\", \"text\"}}")
    parts.flush()
    result = {"documents": documents, "requests": requests, "objects": parts.objects, "inputs": uris}
    log.info("prepared %d document(s) as %d request(s) in %d object(s)", documents, requests, len(parts.objects),
             extra={"data": result})
    return result


@lambda_entry(*LOGGERS)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return prepare(event)
