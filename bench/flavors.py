"""The two serving flavors side by side on this machine: ``custom`` (our handler) and ``tei``
(TEI's own router, found as `semsearch local up` finds it: semsearch.local.tei.find_tei).

    .venv/bin/python -m bench.flavors [--docs 500] [--queries 200] [-k 10]
                                      [--requests 120] [--concurrency 2] [--batch-size 8]

1. The local stack, per flavor (`local up --flavor F` on its own stack "bench-flavors",
   one OpenSearch node for both): ingest of the first --docs Debian dev documents through
   the ingest pipeline (docs/s), then --queries neural queries one at a time (p50/p95 ms).
   Switching to tei is a new connector, so that `up` re-embeds the custom index into the
   new one before the flip (in its local_up_s); the ingest then overwrites the same ids.
2. With the stack down, `semsearch loadtest --url` against each endpoint alone: our
   handler (`semsearch serve`) and TEI's router, the TEI connector body for TEI and ours
   for ours, the same texts, requests, concurrency and batch size (p50/p99 ms).

Prints one JSON object and writes it to bench/results/flavors.json, with the TEI build
(its /info version and where the router came from) and the load average at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._data import data_dir, read_jsonl
from semsearch.local.ingest import bulk_ingest
from semsearch.local.opensearch import free_port, pinned_versions
from semsearch.local.stack import REGION, LocalStack
from semsearch.local.tei import find_tei, stage_serving, start_tei
from semsearch.models import packaged_model_dir
from semsearch.search import search
from semsearch.serve import start_server

REPO_ROOT = Path(__file__).resolve().parent.parent
FLAVORS = ("custom", "tei")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def local_stack(pairs: list[dict], docs: int, queries: int, k: int) -> dict[str, Any]:
    stack = LocalStack("bench-flavors")
    stack.down(purge=True)
    ports = {"opensearch_port": free_port(), "endpoint_port": free_port()}
    figures: dict[str, Any] = {}
    try:
        for flavor in FLAVORS:
            started = time.monotonic()
            status = stack.up(packaged_model_dir(), flavor=flavor, **ports,
                              progress=lambda msg, f=flavor: print(f"bench: {f}: {msg}", file=sys.stderr, flush=True))
            up_s = time.monotonic() - started
            conn = stack.connection()
            report = bulk_ingest(conn, status["index"], [{"id": p["id"], "text": p["text"]} for p in pairs[:docs]])
            asked = pairs[:queries]
            for pair in asked[:10]:  # warm-up: connection set-up and caches
                search(conn, status["index"], pair["query"], field="embedding", model_id=status["model_id"], k=k)
            latencies, found = [], 0
            for pair in asked:
                t = time.perf_counter()
                hits = search(conn, status["index"], pair["query"], field="embedding", model_id=status["model_id"],
                              k=k)
                latencies.append((time.perf_counter() - t) * 1000)
                found += pair["id"] in [h["id"] for h in hits]
            figures[flavor] = {
                "local_up_s": round(up_s, 1), "tei": status.get("tei"),
                "ingest": {"docs": report.indexed, "seconds": round(report.seconds, 1),
                           "docs_per_s": round(report.docs_per_s, 1), "retried_items": report.retried},
                "query": {"queries": len(latencies), "k": k, "p50_ms": round(statistics.median(latencies), 1),
                          "p95_ms": round(_percentile(latencies, 0.95), 1), f"recall@{k}": round(found / len(asked), 3)},
            }
    finally:
        stack.down(purge=True)
    return figures


def _loadtest(url: str, flavor: str, texts: Path, requests: int, concurrency: int, batch: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "semsearch.cli", "loadtest", "--url", url, "--flavor", flavor, "--requests",
           str(requests), "--concurrency", str(concurrency), "--batch-size", str(batch), "--texts", str(texts)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if result.returncode not in (0, 1):
        raise SystemExit(f"bench: loadtest failed ({result.returncode}): {result.stderr[-2000:]}")
    summary = json.loads(result.stdout)
    keep = ("requests", "ok", "errors", "status_counts", "requests_per_s", "texts_per_s", "tokens_per_s")
    return {"latency_ms": {q: round(summary["latency_ms"][q], 1) for q in ("p50", "p95", "p99")},
            **{key: summary[key] for key in keep}}


def loadtests(pairs: list[dict], requests: int, concurrency: int, batch: int) -> dict[str, Any]:
    model_dir = packaged_model_dir()
    with tempfile.TemporaryDirectory(prefix="bench-flavors-") as tmp:
        texts = Path(tmp) / "texts.jsonl"
        texts.write_text("".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in pairs[:200]))
        handler = start_server(model_dir, name="bench", max_batch=max(batch, 8))
        try:
            custom = _loadtest(handler.url, "custom", texts, requests, concurrency, batch)
        finally:
            handler.stop()
        source = find_tei()
        tei = start_tei(source, model_dir, work_dir=Path(tmp) / "tei", serving=stage_serving(), name="bench",
                        region=REGION)
        try:
            result = _loadtest(tei.tei_url, "tei", texts, requests, concurrency, batch)
        finally:
            tei.stop()
    return {"custom": custom, "tei": result,
            "tei_build": {"version": tei.info.get("version"), "router": source.describe(),
                          "max_batch_requests": tei.info.get("max_batch_requests")},
            "settings": {"requests": requests, "concurrency": concurrency, "batch_size": batch}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / "flavors.json"))
    args = parser.parse_args(argv)
    pairs = read_jsonl(data_dir() / "dev.jsonl", max(args.docs, args.queries, 200))
    load_before = os.getloadavg()[0]
    result = {
        "benchmark": "flavors",
        "opensearch": pinned_versions()["opensearch.version"],
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(load_before, 2)},
        "local_stack": local_stack(pairs, args.docs, args.queries, args.k),
        "loadtest": loadtests(pairs, args.requests, args.concurrency, args.batch_size),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
