"""Local search path figures: `local up` time, ingest throughput, neural query latency.

    .venv/bin/python -m bench.local_search [--docs 1000] [--queries 200] [-k 10]

Runs its own stack ("bench", free ports) so a developer's `local up` is untouched: a cold
`up` (node and endpoint stopped, install and Maven cache warm), a second `up` (everything
running: the idempotent path), ingest of the first --docs Debian dev documents through the
ingest pipeline (the endpoint embeds them), then --queries neural queries one at a time as
`semsearch search` sends them. Prints one JSON object and writes it to
bench/results/local_search.json. The figures depend on what else the machine runs: the
load average at the start is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from bench._data import data_dir, read_jsonl
from semsearch.local.ingest import bulk_ingest
from semsearch.local.opensearch import free_port, pinned_versions
from semsearch.local.stack import LocalStack
from semsearch.models import packaged_model_dir
from semsearch.search import CANDIDATES, search

REPO_ROOT = Path(__file__).resolve().parent.parent


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(docs: int, queries: int, k: int) -> dict:
    pairs = read_jsonl(data_dir() / "dev.jsonl", max(docs, queries))
    stack = LocalStack("bench")
    stack.down(purge=True)
    ports = {"opensearch_port": free_port(), "endpoint_port": free_port()}
    load_before = os.getloadavg()[0]
    try:
        started = time.monotonic()
        stack.up(packaged_model_dir(), progress=lambda _: None, flavor="custom", **ports)
        up_cold = time.monotonic() - started
        started = time.monotonic()
        status = stack.up(packaged_model_dir(), progress=lambda _: None, flavor="custom", **ports)
        up_warm = time.monotonic() - started

        conn = stack.connection()
        corpus = [{"id": p["id"], "text": p["text"]} for p in pairs[:docs]]
        report = bulk_ingest(conn, status["index"], corpus)

        asked = pairs[:queries]
        for pair in asked[:10]:  # warm-up: first calls pay for connection set-up and caches
            search(conn, status["index"], pair["query"], field="embedding", model_id=status["model_id"], k=k)
        latencies, found = [], 0
        for pair in asked:
            t = time.perf_counter()
            hits = search(conn, status["index"], pair["query"], field="embedding", model_id=status["model_id"], k=k)
            latencies.append((time.perf_counter() - t) * 1000)
            found += pair["id"] in [h["id"] for h in hits]
    finally:
        stack.down(purge=True)
    return {
        "benchmark": "local_search",
        "opensearch": pinned_versions()["opensearch.version"],
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(load_before, 2)},
        "local_up_cold_s": round(up_cold, 1),
        "local_up_warm_s": round(up_warm, 1),
        "ingest": {"docs": report.indexed, "seconds": round(report.seconds, 1),
                   "docs_per_s": round(report.docs_per_s, 1), "retried_items": report.retried},
        "query": {"queries": len(latencies), "k": k, "hnsw_candidates": max(k, CANDIDATES),
                  "p50_ms": round(statistics.median(latencies), 1), "p95_ms": round(_percentile(latencies, 0.95), 1),
                  "mean_ms": round(statistics.fmean(latencies), 1), f"recall@{k}": round(found / len(asked), 3)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / "local_search.json"))
    args = parser.parse_args()
    result = run(args.docs, args.queries, args.k)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
