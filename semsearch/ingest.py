"""`semsearch ingest`: JSONL documents into a stage's index (or the local stack's), through its ingest pipeline.

Each line is ``{"id": ..., "text": ...}``. Documents go to the alias in ``_bulk`` requests
(``_id`` = the document's id, so a retried or repeated run overwrites, never duplicates);
the index's default pipeline embeds the text on the way in. A line that cannot be a
document (not JSON, no id, no text, an id seen on an earlier line) is not sent and is
reported; a document the domain refuses after the retries is reported by id. Nothing is
dropped silently: the summary on stdout counts every line, and any failure makes the
exit status 1.

Summary (one JSON object): documents_in, documents_indexed, documents_failed,
failures: [{"id", "line", "error"}] (``id`` is null when the line has none).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from semsearch import stage
from semsearch.errors import UsageError
from semsearch.local.client import Connection
from semsearch.local.ingest import BULK_DOCS, BulkError, bulk_ingest


@dataclass
class Line:
    """One non-blank line of the file: a document, or why it is not one."""

    number: int
    id: str | None
    text: str = ""
    error: str = ""


@dataclass
class Summary:
    documents_in: int = 0
    documents_indexed: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"documents_in": self.documents_in, "documents_indexed": self.documents_indexed,
                "documents_failed": len(self.failures), "failures": self.failures}


def read_lines(path: Path) -> Iterator[Line]:
    """Every non-blank line as a Line; bad ones carry their error instead of raising."""
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError as e:
                yield Line(number, None, error=f"not JSON ({e})")
                continue
            if not isinstance(row, dict):
                yield Line(number, None, error=f"expected a JSON object, got {type(row).__name__}")
                continue
            doc_id = row.get("id")
            if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or not str(doc_id).strip():
                yield Line(number, None, error='no "id" (a non-empty string or an integer)')
                continue
            doc_id = str(doc_id)
            text = row.get("text")
            if not isinstance(text, str) or not text.strip():
                yield Line(number, doc_id, error='no "text" (a non-empty string)')
            elif doc_id in seen:
                # Sending it would overwrite line seen[doc_id]'s document: one of the two would vanish.
                yield Line(number, doc_id, error=f"duplicate id: line {seen[doc_id]} has it too")
            else:
                seen[doc_id] = number
                yield Line(number, doc_id, text=text)


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for raw in f if raw.strip())


def ingest(target: stage.Target, path: Path, *, bulk_docs: int = BULK_DOCS, backoff_s: float = 1.0,
           progress: bool = True) -> Summary:
    """Send every good line through the target's pipeline; the summary accounts for every line."""
    from tqdm import tqdm

    summary = Summary()
    line_of: dict[str, int] = {}
    batch: list[dict[str, str]] = []
    # The shared bulk writer is typed for the local Connection; it uses only the client's request().
    client = cast(Connection, target.client)
    bar = tqdm(total=count_lines(path), unit="doc", desc=f"ingest {path.name}", file=sys.stderr,
               disable=None if progress else True)

    def send() -> None:
        try:
            report = bulk_ingest(client, target.alias, batch, text_field=target.text_field, bulk_docs=len(batch),
                                 backoff_s=backoff_s, refresh=False)
            failed: dict[str, str] = {}
            indexed = report.indexed
        except BulkError as e:
            failed, indexed = e.report.failed, e.report.indexed
        summary.documents_indexed += indexed
        summary.failures.extend({"id": i, "line": line_of[i], "error": error} for i, error in failed.items())
        bar.update(len(batch))
        bar.set_postfix(failed=len(summary.failures), refresh=False)
        batch.clear()

    with bar:
        for line in read_lines(path):
            summary.documents_in += 1
            if line.error:
                summary.failures.append({"id": line.id, "line": line.number, "error": line.error})
                bar.update(1)
                bar.set_postfix(failed=len(summary.failures), refresh=False)
                continue
            assert line.id is not None
            line_of[line.id] = line.number
            batch.append({"id": line.id, "text": line.text})
            if len(batch) == bulk_docs:
                send()
        if batch:
            send()
    # Searchable (and counted by `semsearch status`) once the command returns; without the
    # refresh they still are within the index's refresh interval, so a failure only warns.
    try:
        target.client.request("POST", f"/{target.alias}/_refresh")
    except stage.DOMAIN_ERRORS as e:
        print(f"semsearch ingest: warning: refresh failed ({e}); documents appear within the refresh interval",
              file=sys.stderr)
    summary.failures.sort(key=lambda failure: failure["line"])
    return summary


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ingest", help="index JSONL documents through the stage's ingest pipeline",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", metavar="JSONL", help='documents, one {"id", "text"} per line')
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    stage.add_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{args.file!r}: no such file")
    target = stage.resolve(args)
    try:
        # Fails fast (wrong credentials, no such index) instead of once per document.
        target.client.request("GET", f"/{target.alias}/_mapping")
        summary = ingest(target, path, progress=not args.no_progress)
    except stage.DOMAIN_ERRORS as e:
        raise UsageError(f"{target.label}: {e}") from None
    print(json.dumps(summary.as_dict()))
    if summary.failures:
        print(f"semsearch ingest: {len(summary.failures)} of {summary.documents_in} document(s) not indexed "
              f"into {target.alias} on {target.label} (ids and lines in the summary)", file=sys.stderr)
        return 1
    return 0
