"""Writing vectors with ``_bulk``: batches, per-item retries, and an exact account.

Every request goes to ``/<index>/_bulk?pipeline=_none``: the index's default ingest
pipeline would embed the text again through the endpoint, and these documents already
carry their vector. Items answered 429 or 5xx are sent again with exponential backoff;
any other item error is final. Nothing is dropped: each document ends up indexed or in
``failed`` with its reason.

HTTP is the shared client (opensearch_http): SigV4 on Amazon OpenSearch Service, basic
auth or none on a local node.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opensearch_http import CredentialsError, OpenSearchClient, Unreachable

from .source import Doc

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class LoadError(Exception):
    """The load cannot go on (index missing, access denied, out of time); says what and where."""


def vector_dimension(client: OpenSearchClient, index: str, field_name: str) -> int:
    """The index's k-NN dimension for ``field_name``; LoadError when it is not a knn_vector.

    Checked before the first write: a missing field would be created by dynamic mapping as
    a plain float array, and the documents would look indexed but never match a query.
    """
    try:
        status, body = client.send("GET", f"/{index}/_mapping")
    except (Unreachable, CredentialsError) as e:
        raise LoadError(str(e)) from e
    if status != 200:
        raise LoadError(f"GET /{index}/_mapping -> HTTP {status}: {json.dumps(body)[:1000]}"
                        + (" (the loader's role needs an FGAC mapping on the domain)" if status == 403 else ""))
    mappings = next(iter(body.values()))["mappings"]  # keyed by the concrete index behind an alias
    spec = mappings.get("properties", {}).get(field_name)
    if not spec or spec.get("type") != "knn_vector":
        raise LoadError(f"index {index!r} has no knn_vector field {field_name!r} (found {spec})")
    return int(spec["dimension"])


@dataclass
class Report:
    documents_in: int = 0
    documents_indexed: int = 0
    retried: int = 0  # item re-sends (one document retried twice counts 2)
    requests: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # id or "<uri> line <n>" -> reason

    @property
    def complete(self) -> bool:
        return not self.failed and self.documents_in == self.documents_indexed

    def as_dict(self, max_failures: int = 50) -> dict[str, Any]:
        return {"documents_in": self.documents_in, "documents_indexed": self.documents_indexed,
                "documents_failed": len(self.failed), "retried": self.retried, "requests": self.requests,
                "complete": self.complete,
                "failures": dict(list(self.failed.items())[:max_failures])}

    def summary(self, max_failures: int = 10) -> str:
        head = (f"{len(self.failed)} of {self.documents_in} document(s) not indexed "
                f"({self.documents_indexed} indexed)")
        shown = "; ".join(f"{k}: {v}" for k, v in list(self.failed.items())[:max_failures])
        more = f"; and {len(self.failed) - max_failures} more" if len(self.failed) > max_failures else ""
        return f"{head}: {shown}{more}"


class BulkWriter:
    """Buffers documents into ``_bulk`` requests of at most ``max_docs`` / ``max_bytes``."""

    def __init__(self, client: OpenSearchClient, index: str, report: Report, *, vector_field: str = "embedding",
                 text_field: str = "text", max_docs: int = 500, max_bytes: int = 5_000_000, attempts: int = 6,
                 backoff_s: float = 0.5, max_backoff_s: float = 20.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.client, self.index, self.report = client, index, report
        self.vector_field, self.text_field = vector_field, text_field
        self.max_docs, self.max_bytes = max_docs, max_bytes
        self.attempts, self.backoff_s, self.max_backoff_s, self.sleep = attempts, backoff_s, max_backoff_s, sleep
        self._buffer: list[tuple[str, bytes]] = []  # (id, the two NDJSON lines)
        self._bytes = 0

    def add(self, doc: Doc) -> None:
        source: dict[str, Any] = {self.vector_field: doc.vector}
        if doc.text is not None:
            source[self.text_field] = doc.text
        lines = (json.dumps({"index": {"_id": doc.id}}) + "\n" + json.dumps(source) + "\n").encode()
        if self._buffer and (len(self._buffer) >= self.max_docs or self._bytes + len(lines) > self.max_bytes):
            self.flush()
        self._buffer.append((doc.id, lines))
        self._bytes += len(lines)

    def flush(self) -> None:
        batch, self._buffer, self._bytes = self._buffer, [], 0
        if batch:
            self._send(batch)

    def _delay(self, attempt: int) -> float:
        # Exponential with full jitter: concurrent loaders do not retry in lockstep.
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** attempt))

    def _send(self, batch: list[tuple[str, bytes]]) -> None:
        pending = batch
        reason: dict[str, str] = {}
        for attempt in range(self.attempts):
            if attempt:
                self.report.retried += len(pending)
                self.sleep(self._delay(attempt))
            self.report.requests += 1
            try:
                status, body = self.client.send("POST", f"/{self.index}/_bulk?pipeline=_none",
                                                b"".join(lines for _, lines in pending), "application/x-ndjson")
            except Unreachable as e:
                reason = {doc_id: f"unreachable: {e}" for doc_id, _ in pending}
                log.warning("bulk request failed (%s), attempt %d of %d", e, attempt + 1, self.attempts)
                continue
            if status in RETRY_STATUSES:
                reason = {doc_id: f"HTTP {status} for the whole request" for doc_id, _ in pending}
                log.warning("bulk request got HTTP %s, attempt %d of %d", status, attempt + 1, self.attempts)
                continue
            if status != 200:
                # 400/401/403/413 answer every retry the same: stop and say why.
                hint = " (map the loader's role in FGAC, e.g. all_access)" if status == 403 else ""
                raise LoadError(f"POST /{self.index}/_bulk -> HTTP {status}: {json.dumps(body)[:1000]}{hint}")
            retry = []
            items = body.get("items", [])
            if len(items) != len(pending):
                raise LoadError(f"_bulk answered {len(items)} items for {len(pending)} documents")
            for (doc_id, lines), item in zip(pending, items, strict=True):
                result = next(iter(item.values()))
                item_status = result.get("status", 0)
                if 200 <= item_status < 300:
                    self.report.documents_indexed += 1
                    continue
                error = result.get("error") or {}
                message = f"HTTP {item_status} {error.get('type')}: {error.get('reason')}"[:500]
                if item_status in RETRY_STATUSES:
                    retry.append((doc_id, lines))
                    reason[doc_id] = message
                else:
                    self.report.failed[doc_id] = message
            pending = retry
            if not pending:
                return
        for doc_id, _ in pending:
            self.report.failed[doc_id] = f"{reason.get(doc_id, 'not indexed')} (after {self.attempts} attempts)"
