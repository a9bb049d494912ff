"""Re-embedding documents/s on the local stack: through ``_reindex`` (what the glue does on a
model change) vs through batch embedding (prepare → the transform's record handling →
the bulk loader), the same documents, the same node and endpoint; and where the line is.

    .venv/bin/python -m bench.batch_embed [--docs 500] [--flavors tei,custom] [--transform-overhead-s 600]

Per flavor its own stack ("bench-batch-<flavor>", free ports; a developer's `local up` is
untouched): the packaged all-MiniLM-L6-v2 on TEI's own router (tei, the default deployment's
flavor; semsearch.local.tei) or on our handler (custom), the committed Debian sample
(tests/data/debian-sample, 500 documents) unless --corpus names another file:

1. the documents go in through the ingest pipeline (``bulk_ingest``);
2. ``_reindex``: a glue Update that changes the index's identity but not the endpoint (HNSW
   m 16 → 24) re-embeds every document into a new index through its ingest pipeline
   (search_glue.reembed); the figure is the glue's own copy time (``_meta.semsearch.flipped.copy_s``);
3. batch: the same documents (as ``batch-<id>``) through bulk_loader.prepare, then each
   request line to the endpoint one at a time (semsearch.local.transform: what the transform
   job does, MaxConcurrentTransforms 1), then bulk_loader.handler.load with the version check
   into the alias; the figure is prepare + transform + load. The batch vectors are compared
   with the ones the pipeline wrote.

The line: a transform job pays a fixed start (instances, image, model load; not measurable
here, --transform-overhead-s, an assumption) before it runs at the batch rate B per instance
(jobs.transform_instance_count k of them); ``_reindex`` starts at once at rate R through the
serving endpoint. Batch is the better tool above N = overhead / (1/R - 1/(k·B)) documents,
given for k = 1, 2, 4. Prints one JSON object; ``python -m bench.batch_embed`` writes it to
bench/results/batch_embed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._data import read_jsonl
from stacks.glue_properties import LAMBDA_DIR  # noqa: F401 - puts lambda/ (bulk_loader) on the import path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO_ROOT / "tests" / "data" / "debian-sample" / "dev.jsonl"


def _vectors(conn, index: str, ids: list[str]) -> np.ndarray:
    out = []
    for start in range(0, len(ids), 200):
        _, body = conn.request("POST", f"/{index}/_mget", {"ids": ids[start:start + 200]})
        out += [d["_source"]["embedding"] for d in body["docs"]]
    return np.array(out)


def run_flavor(flavor: str, corpus_docs: list[dict], overhead_s: float) -> dict:
    from bulk_loader.handler import load
    from bulk_loader.prepare import prepare
    from opensearch_http import OpenSearchClient

    from semsearch.local import transform
    from semsearch.local.ingest import bulk_ingest
    from semsearch.local.opensearch import free_port, pinned_versions
    from semsearch.local.stack import LocalStack, run_custom_resource
    from semsearch.models import packaged_model_dir
    from stacks.batch_transform import request_limits
    from stacks.config import EndpointConfig, JobsConfig

    stack = LocalStack(f"bench-batch-{flavor}")
    stack.down(purge=True)
    load_before = os.getloadavg()[0]
    try:
        stack.up(packaged_model_dir(), progress=lambda _: None, opensearch_port=free_port(),
                 endpoint_port=free_port(), flavor=flavor)
        state = stack.load()
        conn = stack.connection()
        alias, props, endpoint_name = state["index"], state["glue_properties"], state["endpoint_name"]
        ingest = bulk_ingest(conn, alias, corpus_docs)

        # 1. _reindex: the glue's re-embed onto a new index, same endpoint.
        changed = {**props, "HnswM": 24, "RetiredIndexHours": 0}
        started = time.monotonic()
        new_id = run_custom_resource("Update", changed, physical_id=state["physical_id"], old_props=props,
                                     timeout_s=3600, interval_s=1)["PhysicalResourceId"]
        update_s = time.monotonic() - started
        meta = conn.request("GET", f"/{new_id}/_mapping")[1][new_id]["mappings"]["_meta"]["semsearch"]
        copy_s = float(meta["flipped"]["copy_s"])

        # 2. batch: prepare → transform (record by record) → load with the version check.
        limits = request_limits(EndpointConfig(model_id="all-MiniLM-L6-v2", flavor=flavor,  # type: ignore[arg-type]
                                               model_data_s3_uri="s3://bench/model.tar.gz"), JobsConfig())
        with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
            work = Path(tmp)
            source = work / "docs.jsonl"
            source.write_text("".join(json.dumps({"id": f"batch-{d['id']}", "text": d["text"]}) + "\n"
                                      for d in corpus_docs))
            t0 = time.perf_counter()
            prepared = prepare({"input": source.as_uri(), "output": (work / "requests").as_uri() + "/",
                                "flavor": flavor, "prefix": "", **limits})
            t1 = time.perf_counter()
            transformed = transform.run(work / "requests", work / "output", state["endpoint_url"])
            t2 = time.perf_counter()
            client = OpenSearchClient(conn.url, auth_mode="basic" if conn.username else "none",
                                      username=conn.username or "", password=conn.password or "",
                                      ca_file=conn.ca_file or "")
            loaded = load({"input": [Path(o).as_uri() for o in transformed.objects], "index": alias,
                           "endpoint_name": endpoint_name}, client=client)
            t3 = time.perf_counter()
        ids = [d["id"] for d in corpus_docs]
        diff = float(np.abs(_vectors(conn, alias, [f"batch-{i}" for i in ids]) - _vectors(conn, alias, ids)).max())
    finally:
        stack.down(purge=True)

    n = len(corpus_docs)
    reindex_rate, batch_s = n / copy_s, t3 - t0
    batch_rate = n / batch_s

    def line(instances: int) -> int | None:
        rate = batch_rate * instances
        return round(overhead_s / (1 / reindex_rate - 1 / rate)) if rate > reindex_rate else None
    return {
        "opensearch": pinned_versions()["opensearch.version"],
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(load_before, 2),
                    "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "endpoint": "TEI's router" if flavor == "tei" else "our handler (semsearch serve)",
        "ingest_pipeline": {"docs_per_s": round(ingest.docs_per_s, 1), "seconds": round(ingest.seconds, 1)},
        "reindex": {"docs_per_s": round(reindex_rate, 1), "copy_s": round(copy_s, 1),
                    "glue_update_s": round(update_s, 1)},
        "batch": {"docs_per_s": round(batch_rate, 1), "seconds": round(batch_s, 1),
                  "prepare_s": round(t1 - t0, 2), "transform_s": round(t2 - t1, 1), "load_s": round(t3 - t2, 2),
                  "requests": prepared["requests"], "texts_per_request": limits["max_texts"],
                  "documents_indexed": loaded["documents_indexed"], "records": transformed.records,
                  "max_abs_diff_vs_pipeline": diff},
        "speedup": round(batch_rate / reindex_rate, 1),
        "line": {"transform_overhead_s": overhead_s,
                 "assumptions": "a transform job's start (instances, image, model load) before its first record, "
                                "not measured here; each transform instance embeds at this batch rate, the "
                                "re-embed at this _reindex rate (one endpoint instance)",
                 "rule": "batch is the better tool above overhead / (1/reindex_rate - 1/(instances * batch_rate))",
                 "documents_by_transform_instance_count": {str(k): line(k) for k in (1, 2, 4)}},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_embed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="JSONL of {id, text} (default: the "
                        "committed 500-pair Debian sample)")
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--transform-overhead-s", type=float, default=600.0,
                        help="assumed fixed start of a transform job, seconds (default: 600)")
    parser.add_argument("--flavors", default="tei,custom", help="serving flavors to measure (default: tei,custom)")
    args = parser.parse_args(argv)
    corpus = args.corpus.resolve()
    docs = [{"id": r["id"], "text": r["text"]} for r in read_jsonl(corpus, args.docs)]
    return {"benchmark": "batch_embed", "documents": len(docs), "model": "all-MiniLM-L6-v2",
            "corpus": str(corpus.relative_to(REPO_ROOT) if corpus.is_relative_to(REPO_ROOT) else corpus),
            "flavors": {flavor: run_flavor(flavor, docs, args.transform_overhead_s)
                        for flavor in args.flavors.split(",")}}


if __name__ == "__main__":
    from bench.__main__ import save

    outcome = main(sys.argv[1:])
    print(json.dumps(outcome, indent=2))
    print(f"bench: wrote {save('batch_embed', outcome)}", file=sys.stderr)
