"""Batch embedding on a stage on Amazon Bedrock: what the SageMaker transform job does on the
other stages, with the stage's Bedrock model. Handler: ``bulk_loader.embed_bedrock.handler``.

Each input line is a request line of bulk_loader.prepare (flavor bedrock), ``{"ids", "texts",
"request"}``, whose ``request`` is the InvokeModel body the index's connector sends that model
for the same passages (endpoint_request.bedrock: one definition). Each line is one
InvokeModel call; its answer, checked (endpoint_request.bedrock.parse_response: one vector per
text, of the run's dimension), is joined to the line as the transform joins an endpoint's
answer: output object ``<name><suffix>`` holds ``{"ids", "texts", "SageMakerOutput"}`` per
line, in order, so the bulk loader reads it unchanged (bulk_loader.source).

Event::

    {"input": "s3://bucket/jobs/batch/<job>/requests/",  # prepare's objects: a prefix or a list
     "output": "s3://bucket/jobs/batch/<job>/output/",
     "suffix": ".out",                                  # what output names add (the transform's)
     "model_id": "amazon.titan-embed-text-v2:0", "dimension": 512,
     "start_at": 0}                                     # the first input object (a continuation)

Returns ``{"objects", "embedded", "records", "retried", "next", "complete"}`` (counts of input
objects, of objects written by this invocation, of lines, of retried calls). One Lambda
invocation has 15 minutes: before each call it checks the time left, and with less than
TIME_RESERVE_MS it stops and returns ``complete: false`` and ``next``, the input object to
start at next time (the workflow invokes it again); an object is written whole or not at all,
so running it again is safe. Calls that Bedrock throttles or cannot serve now
(RETRYABLE) are retried with exponential backoff and jitter, up to MAX_ATTEMPTS; any other
failure fails the run naming the line, as a failed record fails a transform job.

Environment: CONCURRENCY (4: calls in flight), MAX_ATTEMPTS (8), BACKOFF_S (0.5), LOG_LEVEL.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from endpoint_request import bedrock
from json_logging import lambda_entry, set_level

from .source import JOINED_OUTPUT, BadLine, boto3_s3, expand, json_object, read_lines

log = logging.getLogger(__name__)
LOGGERS = ("bulk_loader",)
set_level(*LOGGERS)

#: Errors of bedrock-runtime InvokeModel (botocore's service model) that say "not now".
RETRYABLE = frozenset({"ThrottlingException", "ServiceUnavailableException", "ModelNotReadyException",
                       "InternalServerException", "ModelTimeoutException"})
#: Stop starting calls with this much time left: a call and its retries end before the timeout.
TIME_RESERVE_MS = 120_000
MAX_BACKOFF_S = 20.0


class EmbedError(Exception):
    """A line could not be embedded; the message names it and why."""


class OutOfTime(Exception):
    """Too little time left for another call."""


@dataclass
class Counters:
    records: int = 0
    retried: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, records: int = 0, retried: int = 0) -> None:
        with self.lock:
            self.records += records
            self.retried += retried


@dataclass
class Embedder:
    """InvokeModel for one model and dimension, with retries."""

    client: Any
    model_id: str
    dimension: int
    attempts: int = 8
    backoff_s: float = 0.5
    sleep: Callable[[float], None] = time.sleep
    counters: Counters = field(default_factory=Counters)

    def vectors(self, body: dict[str, Any], count: int, origin: str) -> list[list[float]]:
        from botocore.exceptions import ClientError

        payload = json.dumps(body).encode()
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.client.invoke_model(modelId=self.model_id, body=payload,
                                                     contentType=bedrock.CONTENT_TYPE, accept=bedrock.CONTENT_TYPE)
                break
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                if code not in RETRYABLE or attempt == self.attempts:
                    tried = f" after {attempt} attempts" if attempt > 1 else ""
                    raise EmbedError(f"{origin}: InvokeModel {self.model_id}{tried}: {code}: "
                                     f"{e.response.get('Error', {}).get('Message', e)}") from None
                self.counters.add(retried=1)
                # Full jitter: concurrent callers throttled together do not come back together.
                self.sleep(random.uniform(0, min(MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1))))
        answer = json.loads(response["body"].read())
        try:
            return bedrock.parse_response(self.model_id, answer, count=count, dimension=self.dimension)
        except bedrock.BedrockModelError as e:
            raise EmbedError(f"{origin}: {e}") from None


def _joined(line: bytes, origin: str, embedder: Embedder, deadline: Callable[[], bool]) -> str:
    """One request line with its vectors, as the transform joins an answer (JoinSource Input)."""
    if deadline():
        raise OutOfTime(origin)
    try:
        record = json_object(line, origin)
    except BadLine as e:
        raise EmbedError(str(e)) from None
    ids, texts, request = record.get("ids"), record.get("texts"), record.get("request")
    if not isinstance(ids, list) or not ids or not isinstance(request, dict):
        raise EmbedError(f"{origin}: not a request line of bulk_loader.prepare ({{'ids', 'texts', 'request'}})")
    vectors = embedder.vectors(request, len(ids), origin)
    embedder.counters.add(records=1)
    return json.dumps({"ids": ids, "texts": texts, JOINED_OUTPUT: vectors}) + "\n"


def _write(output: str, name: str, data: bytes, s3_client: Any) -> str:
    parsed = urlparse(output)
    if parsed.scheme == "s3":
        (s3_client or boto3_s3()).put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/") + name, Body=data,
                                             ContentType="application/jsonlines")
    else:
        folder = Path(unquote(parsed.path))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return output + name


def _setting(event: dict[str, Any], key: str, kind: type) -> Any:
    value = event.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) or not value:
        raise EmbedError(f"{key!r} missing (a non-empty {kind.__name__})")
    return value


def embed(event: dict[str, Any], *, client: Any = None, s3_client: Any = None,
          remaining_ms: Callable[[], int] | None = None, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """The handler's work with its collaborators passed in (the tests give a Stubber's or the
    local stand-in's bedrock-runtime client)."""
    model_id = _setting(event, "model_id", str)
    dimension = _setting(event, "dimension", int)
    output = _setting(event, "output", str)
    try:
        bedrock.dimension_for(model_id, dimension)
    except bedrock.BedrockModelError as e:
        raise EmbedError(str(e)) from None
    parsed = urlparse(output)
    if parsed.scheme not in ("s3", "file") or not parsed.path.endswith("/"):
        raise EmbedError(f"'output' must be an s3:// (or file://) prefix ending in '/', got {output!r}")
    inputs = event.get("input")
    uris = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and u for u in uris):
        raise EmbedError("'input' must be an s3:// prefix (or object) of request lines, or a list of them")
    start_at = event.get("start_at", 0)
    if not isinstance(start_at, int) or isinstance(start_at, bool) or start_at < 0:
        raise EmbedError(f"'start_at' must be an input object's index (0 or more), got {start_at!r}")
    suffix = str(event.get("suffix", ".out"))
    objects = expand(uris, suffix=".jsonl", s3_client=s3_client)
    if client is None:
        import boto3
        from botocore.config import Config

        # Retries are ours (RETRYABLE, with backoff): botocore's would multiply them.
        client = boto3.client("bedrock-runtime", config=Config(retries={"total_max_attempts": 1}))
    embedder = Embedder(client, model_id, dimension, attempts=int(os.environ.get("MAX_ATTEMPTS", 8)),
                        backoff_s=float(os.environ.get("BACKOFF_S", 0.5)), sleep=sleep)

    def deadline() -> bool:
        return remaining_ms is not None and remaining_ms() < TIME_RESERVE_MS

    written: list[str] = []
    next_at: int | None = None
    pool = ThreadPoolExecutor(max_workers=max(1, int(os.environ.get("CONCURRENCY", 4))))
    try:
        for index in range(start_at, len(objects)):
            uri = objects[index]
            lines = [(f"{uri} line {n}", line) for n, line in read_lines(uri, s3_client=s3_client)]
            try:
                # map keeps the order of the lines; the first failure ends the run.
                joined = list(pool.map(lambda item: _joined(item[1], item[0], embedder, deadline), lines))
            except OutOfTime:
                next_at = index
                break
            written.append(_write(output, uri.rsplit("/", 1)[1] + suffix, "".join(joined).encode(), s3_client))
            log.info("embedded %s: %d line(s)", uri, len(lines))
    finally:
        # After a failure the object's calls not yet started are dropped, not made.
        pool.shutdown(wait=True, cancel_futures=True)
    if next_at == start_at and remaining_ms is not None:
        # Another invocation would stop at the same object: fail instead of looping.
        raise EmbedError(f"{objects[start_at]}: not embedded within one invocation ({embedder.counters.retried} "
                         "throttled calls retried); Bedrock is throttling hard: lower CONCURRENCY or ask for a "
                         "higher InvokeModel quota, then run again")
    result = {"objects": len(objects), "embedded": len(written), "records": embedder.counters.records,
              "retried": embedder.counters.retried, "next": next_at, "complete": next_at is None}
    log.info("embedded %d object(s) with %s%s", len(written), model_id,
             "" if next_at is None else f"; out of time, next at object {next_at}",
             extra={"data": result})
    return result


@lambda_entry(*LOGGERS)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return embed(event, remaining_ms=remaining)
