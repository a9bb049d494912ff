"""`semsearch search`: neural queries against a deployed stage (--stage) or the local stack."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from semsearch import stage
from semsearch.errors import UsageError
from semsearch.local.client import OpenSearchClient

# Neighbours the HNSW graph search collects before the top ``k`` are kept. Lucene explores
# about as many candidates as it is asked for, so asking for 3 misses a quarter of the true
# top 3 (measured on the Debian dev set); 100 matches brute force.
CANDIDATES = 100


def neural_query(query: str, *, field: str, k: int, model_id: str | None = None,
                 text_field: str | None = None) -> dict[str, Any]:
    """The search body: the node embeds ``query``, then k-NN.

    Without ``model_id`` the index's default search pipeline (its ``neural_query_enricher``)
    picks the query model, so the query model changes with the index when an alias moves.
    Only ``text_field`` comes back of each document (never its vector), or nothing.
    """
    neural: dict[str, Any] = {"query_text": query, "k": max(k, CANDIDATES)}
    if model_id:
        neural["model_id"] = model_id
    return {"size": k, "_source": [text_field] if text_field else False, "query": {"neural": {field: neural}}}


def search(conn: OpenSearchClient, index: str, query: str, *, field: str, k: int, model_id: str | None = None,
           text_field: str | None = None) -> list[dict[str, Any]]:
    """Hits ``{"id", "score"}``, best first, plus ``"text"`` when ``text_field`` is given."""
    body = neural_query(query, field=field, model_id=model_id, k=k, text_field=text_field)
    _, result = conn.request("POST", f"/{index}/_search", body)
    hits = []
    for hit in result["hits"]["hits"]:
        out = {"id": hit["_id"], "score": hit["_score"]}
        if text_field:
            out["text"] = (hit.get("_source") or {}).get(text_field)
        hits.append(out)
    return hits


def read_queries(path: str) -> list[str]:
    """One query per line: plain text, or a JSON object with a "query" field (dev.jsonl)."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--queries-file {path!r}: no such file")
    queries = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                queries.append(str(json.loads(line)["query"]))
            except (ValueError, KeyError, TypeError):
                raise UsageError(f'{path}:{number}: a JSON line needs a "query" field') from None
        else:
            queries.append(line.strip())
    return queries


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help="neural search on a stage or the local stack", description=__doc__)
    parser.add_argument("query", nargs="?", help="the query text")
    parser.add_argument("--queries-file", metavar="FILE", help="one query per line (text, or JSONL with \"query\")")
    parser.add_argument("-k", type=int, default=10, help="hits per query (default 10)")
    parser.add_argument("--json", action="store_true",
                        help='one line per query: {"query", "hits": [{"id", "score", "text"}]}')
    stage.add_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if (args.query is None) == (args.queries_file is None):
        raise UsageError("give a QUERY or --queries-file FILE (one of them)")
    if not 1 <= args.k <= 10_000:
        raise UsageError(f"-k {args.k}: must be between 1 and 10000")
    queries = [args.query] if args.query is not None else read_queries(args.queries_file)
    target = stage.resolve(args)
    for query in queries:
        started = time.monotonic()
        try:
            # No model id: the index's own search pipeline names its query model.
            hits = search(target.client, target.alias, query, field=target.embedding_field, k=args.k,
                          text_field=target.text_field)
        except stage.DOMAIN_ERRORS as e:
            raise UsageError(f"{target.label}: {e}") from None
        if args.json:
            print(json.dumps({"query": query, "hits": hits}), flush=True)
        else:
            print(f"{query}  ({(time.monotonic() - started) * 1000:.0f} ms)")
            for rank, hit in enumerate(hits, 1):
                print(f"  {rank:>3}. {hit['score']:.4f}  {hit['id']}  {_one_line(hit.get('text'))}")
    return 0


def _one_line(text: str | None, width: int = 100) -> str:
    """A hit's text on its line: whitespace collapsed, cut at ``width`` characters."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"
