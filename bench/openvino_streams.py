"""OpenVINO in-process: one stream using every thread against OPENVINO_STREAMS streams with a
request's runs in flight at once, through the real Embedder (bf16 where the CPU has it).

    HF_HUB_OFFLINE=1 python -m bench.openvino_streams [--texts 2048] [--rounds 2]

Each stream count runs in its own process (so its peak RSS is its own), twice, alternating, on
the same shuffled Debian dev texts (queries and documents) in 32-text requests. Writes
bench/results/openvino_streams.json: texts/s per run, the ratio of the medians, the smallest
cosine to ONNX Runtime fp32 and the peak RSS. No timed asserts: a figure to read, per machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

from bench._data import REPO_ROOT

RESULTS = REPO_ROOT / "bench" / "results" / "openvino_streams.json"


def texts(n: int) -> list[str]:
    from bench._data import data_dir, read_jsonl

    pairs = read_jsonl(data_dir() / "dev.jsonl")
    out = [p["text"] for p in pairs] + [p["query"] for p in pairs]
    random.Random(7).shuffle(out)
    return out[:n]


def one(streams: int, n: int, rounds: int) -> dict:
    from inference_code.embedder import (
        BF16_FLAGS,
        Embedder,
        OnnxBackend,
        OpenVinoBackend,
        load_embedder,
        read_cpu_flags,
    )
    from inference_code.onnx_export import onnx_path
    from semsearch.models import packaged_model_dir

    reference = load_embedder(packaged_model_dir(), "exact", backend="onnx")
    threads = len(os.sched_getaffinity(0))
    precision = "bf16" if BF16_FLAGS & read_cpu_flags() else "fp32"
    backend = OpenVinoBackend(onnx_path(reference.info, "exact"), threads, precision, streams=streams)
    embedder = Embedder(reference.info, reference.tokenizer, backend, "exact")
    assert isinstance(reference.backend, OnnxBackend)
    batches = [b for b in (texts(n)[i:i + 32] for i in range(0, n, 32)) if b]
    worst = min(float((embedder.embed(b) * reference.embed(b)).sum(1).min()) for b in batches[:4])
    del reference
    per_round = []
    for _ in range(rounds):  # the first round also compiles each new shape
        started = time.perf_counter()
        for batch in batches:
            embedder.embed(batch)
        per_round.append(round(n / (time.perf_counter() - started), 1))
    with open("/proc/self/status") as status:
        peak = int(status.read().split("VmHWM:")[1].split()[0]) // 1024
    return {"streams": backend.streams, "precision": precision, "threads": threads, "texts_per_s": per_round,
            "min_cosine_to_fp32": round(worst, 6), "peak_rss_mb": peak}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.openvino_streams", description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(one(args.child, args.texts, args.rounds)))
        return {}
    from inference_code.embedder import OPENVINO_STREAMS

    runs: list[dict] = []
    for _ in range(2):
        for streams in (1, OPENVINO_STREAMS):
            child = subprocess.run([sys.executable, "-m", "bench.openvino_streams", "--child", str(streams),
                                    "--texts", str(args.texts), "--rounds", str(args.rounds)],
                                   cwd=REPO_ROOT, capture_output=True, text=True, check=True)
            row = json.loads(child.stdout.strip().splitlines()[-1])
            runs.append(row)
            print(json.dumps(row), flush=True)
    last = {s: statistics.median(r["texts_per_s"][-1] for r in runs if r["streams"] == s)
            for s in {r["streams"] for r in runs}}
    result = {"texts": args.texts, "texts_per_request": 32, "load_average_at_start": os.getloadavg()[0], "runs": runs,
              "median_texts_per_s": {str(s): v for s, v in sorted(last.items())},
              "ratio": round(last[max(last)] / last[1], 2) if len(last) > 1 else 1.0}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("median_texts_per_s", "ratio")}))
    return result


if __name__ == "__main__":
    main()
