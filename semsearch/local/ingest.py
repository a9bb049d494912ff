"""Bulk-load ``{"id", "text"}`` documents through the index's ingest pipeline.

``_bulk`` answers 200 even when items fail (``"errors": true``); every failed item is
retried with exponential backoff, and whatever still fails is raised, by id, never dropped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semsearch.errors import UsageError
from semsearch.local.client import Connection

log = logging.getLogger(__name__)

# Documents per _bulk request: a few pipeline batches each, so the endpoint stays busy
# while one request stays well under OpenSearch's and the endpoint's size limits.
BULK_DOCS = 128


@dataclass
class IngestReport:
    indexed: int = 0
    retried: int = 0  # item retries, summed over attempts
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)  # id -> last error

    @property
    def docs_per_s(self) -> float:
        return self.indexed / self.seconds if self.seconds else 0.0


class BulkError(UsageError):
    """Items that still failed after every retry."""

    def __init__(self, report: IngestReport):
        self.report = report
        sample = "; ".join(f"{i}: {e}" for i, e in list(report.failed.items())[:5])
        super().__init__(f"{len(report.failed)} document(s) failed to index after retries "
                         f"({report.indexed} indexed): {sample}")


def read_corpus(path: str | Path) -> Iterator[dict[str, str]]:
    """JSONL lines ``{"id", "text", ...}``; a bad line is an error naming its number."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--corpus {str(path)!r}: no such file")
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise UsageError(f"{path}:{number}: not JSON ({e})") from None
            if not isinstance(row, dict) or not isinstance(row.get("id"), (str, int)) \
                    or not isinstance(row.get("text"), str):
                raise UsageError(f'{path}:{number}: expected {{"id": str, "text": str}}')
            yield {"id": str(row["id"]), "text": row["text"]}


def _batches(docs: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _send(conn: Connection, index: str, docs: list[dict[str, Any]], text_field: str) -> dict[str, str]:
    """One _bulk request; returns {id: error} for the items that failed."""
    lines = []
    for doc in docs:
        lines.append(json.dumps({"index": {"_index": index, "_id": doc["id"]}}))
        lines.append(json.dumps({text_field: doc["text"]}))
    try:
        _, body = conn.request("POST", "/_bulk", ndjson="\n".join(lines) + "\n")
    except Exception as e:  # the whole request failed (node busy, timeout): every item retries
        return {doc["id"]: f"bulk request failed: {e}"[:500] for doc in docs}
    if not body.get("errors"):
        return {}
    failed = {}
    for item in body["items"]:
        result = next(iter(item.values()))
        if "error" in result:
            error = result["error"]
            failed[result["_id"]] = f"HTTP {result.get('status')} {error.get('type')}: {error.get('reason')}"[:500]
    return failed


def bulk_ingest(conn: Connection, index: str, docs: Iterable[dict[str, Any]], *, text_field: str = "text",
                bulk_docs: int = BULK_DOCS, attempts: int = 4, backoff_s: float = 1.0,
                refresh: bool = True) -> IngestReport:
    """Index every document (``_id`` = its ``id``); raise BulkError for any that never succeed."""
    report = IngestReport()
    started = time.monotonic()
    for batch in _batches(docs, bulk_docs):
        pending = batch
        for attempt in range(1, attempts + 1):
            failed = _send(conn, index, pending, text_field)
            report.indexed += len(pending) - len(failed)
            if not failed:
                break
            pending = [d for d in pending if d["id"] in failed]
            if attempt == attempts:
                report.failed.update(failed)
                break
            report.retried += len(pending)
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning("%d of %d items failed (e.g. %s); retry %d in %.1f s", len(failed), len(batch),
                        next(iter(failed.values())), attempt, delay)
            time.sleep(delay)
    if refresh:
        conn.request("POST", f"/{index}/_refresh")
    report.seconds = time.monotonic() - started
    if report.failed:
        raise BulkError(report)
    return report
