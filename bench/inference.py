"""Speed and quality of the custom handler through the local HTTP server, against sentence-transformers.

Everything is measured in one run, so the ratios share the machine's conditions:

- baseline: ``SentenceTransformer.encode`` of each 32-text request (one call per request),
  in this process, torch using every core.
- each row (``--rows``: a mode, or mode:backend for a backend other than the one the server
  picks for this CPU, e.g. ``exact:onnx`` for ONNX Runtime fp32): ``semsearch serve`` in a
  subprocess, sent the same 32-text requests as bare JSON arrays over one keep-alive
  connection, response read in full. Each row says which backend/precision served it (/ping).
  Baseline and server calls alternate request by request, with a short untimed pause
  between them so neither side's idle threads eat into the other's time, and background
  load on a shared machine hits both alike. ratio = baseline seconds / server seconds.
- cosine of every server vector to the baseline's (fp32 sentence-transformers).
- recall@3 on the dev split: share of queries whose paired description is among the 3
  nearest of all the split's descriptions; each row's delta in points against the fp32 row
  (``exact:onnx``) when it ran, else against ``exact``.
- noise: every row has its own baseline figure (run interleaved with it); ``baseline_spread``
  is max/min of those across rows, 1.0 on a quiet machine.
- latency percentiles at concurrency 2 (``semsearch loadtest`` code, 32-text requests).
- peak RSS (VmHWM) of each server process.
- TEI as a second baseline (row ``tei``, flavor tei): TEI's own router (semsearch.local.tei's
  find_tei: $SEMSEARCH_TEI_BIN, else ../shared/tools/tei/) on the same model's ONNX graph,
  sent the same requests in the connector's TEI body, directly (no SigV4 front); skipped
  with the reason when no router is found.
- ``throughput``: one line per row (flavor, mode, path, tokens/s, the cores and the CPU it ran
  on with its instruction-set flags), which `semsearch cost` maps to instance families.

Texts: the "text" field of the Debian dev split (../shared/data/debian-descriptions/dev.jsonl,
or $SEMSEARCH_DATA_DIR). ``python -m bench.inference --help`` for the knobs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench._data import data_dir, read_jsonl
from semsearch.compare import cpu_name

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUEST_SIZE = 32
#: Untimed pause between a baseline call and a server call (see the module docstring).
SETTLE_S = 0.1


def read_pairs(limit: int) -> list[dict]:
    return read_jsonl(data_dir() / "dev.jsonl", limit)


class Server:
    """`semsearch serve` in its own process, so its memory and threads are its own."""

    flavor = "custom"

    def __init__(self, mode: str, threads: int, backend: str | None = None):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("SEMSEARCH_BACKEND", None)  # a row without a backend measures the server's own choice
        self.proc = subprocess.Popen([sys.executable, "-m", "semsearch.cli", "serve", "--port", "0", "--name",
                                      "bench", "--mode", mode, "--threads", str(threads),
                                      *(["--backend", backend] if backend else [])],
                                     stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        match = re.fullmatch(r"serving bench on (http://[\d.]+:(\d+))\n", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"semsearch serve did not start: {line!r}")
        self.url, self.port = match.group(1), int(match.group(2))
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def ping(self) -> dict:
        self.conn.request("GET", "/ping")
        return json.loads(self.conn.getresponse().read())

    def body(self, texts: list[str]) -> bytes:
        return json.dumps(texts).encode()

    def post(self, texts: list[str]) -> bytes:
        self.conn.request("POST", "/invocations", body=self.body(texts),
                          headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"server answered {response.status}: {data[:200]!r}")
        return data

    def embed(self, texts: list[str], size: int = 64) -> np.ndarray:
        return np.concatenate([np.array(json.loads(self.post(texts[i : i + size])), dtype=np.float32)
                               for i in range(0, len(texts), size)])

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self) -> None:
        self.conn.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)


class TeiServer(Server):
    """TEI's own router (CPU build, ONNX Runtime fp32) on the packaged model, as the local stack
    starts it, sent the connector's TEI body directly."""

    flavor = "tei"

    def __init__(self, source, model_dir: Path, work_dir: Path):
        from semsearch.local.tei import stage_serving, start_tei

        # The router's own /invocations, not the SigV4 front: the front would only add a hop.
        self.running = start_tei(source, model_dir, work_dir=work_dir, serving=stage_serving(), name="bench",
                                 region="us-east-1")
        self.proc = self.running.process
        self.url = self.running.tei_url
        self.port = int(self.url.rsplit(":", 1)[1])
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        self.info = self.running.info
        self.work_dir = work_dir

    def ping(self) -> dict:
        return {"path": "tei onnx fp32", "why": f"TEI {self.info.get('version')} router "
                f"({self.running.source.describe()}), --dtype float32: ONNX Runtime"}

    def body(self, texts: list[str]) -> bytes:
        from semsearch.loadtest import request_body

        return request_body("tei", texts)

    def embed(self, texts: list[str], size: int = 32) -> np.ndarray:
        return super().embed(texts, size)  # TEI refuses more than max_client_batch_size texts

    def stop(self) -> None:
        import shutil

        self.conn.close()
        self.running.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)


def recall_at_3(queries: np.ndarray, docs: np.ndarray) -> float:
    """Share of queries i whose document i is among the 3 most similar documents."""
    scores = queries @ docs.T
    own = scores[np.arange(len(queries)), np.arange(len(queries))]
    beaten_by = (scores > own[:, None]).sum(axis=1)
    return float((beaten_by < 3).mean())


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def interleaved(st, server: Server, batches: list[list[str]], rounds: int) -> tuple[
        list[float], list[float], np.ndarray, np.ndarray]:
    """(baseline seconds per request, server seconds per request, baseline vectors, server vectors)."""
    st.encode(batches[0], batch_size=REQUEST_SIZE)  # warm-up, untimed
    server.post(batches[0])
    base_s, server_s = [], []
    base_vectors, server_vectors = [], []
    for round_no in range(rounds):
        for batch in batches:
            start = time.perf_counter()
            reference = st.encode(batch, batch_size=REQUEST_SIZE)
            base_s.append(time.perf_counter() - start)
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            data = server.post(batch)
            server_s.append(time.perf_counter() - start)
            time.sleep(SETTLE_S)
            if round_no == 0:
                base_vectors.append(reference)
                server_vectors.append(np.array(json.loads(data), dtype=np.float32))
    return base_s, server_s, np.concatenate(base_vectors), np.concatenate(server_vectors)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=12, help="32-text requests per pass (default: 12)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over those requests (default: 2)")
    parser.add_argument("--pairs", type=int, default=3000, help="dev pairs for recall@3 (default: all 3000)")
    parser.add_argument("--rows", default="exact:onnx,exact,fast:onnx,fast",
                        help="servers to measure, comma-separated: MODE (the backend picked for this CPU) or "
                        "MODE:BACKEND (default: exact:onnx,exact,fast:onnx,fast)")
    parser.add_argument("--tei", choices=("auto", "off"), default="auto",
                        help="auto (default): add TEI's own router as row 'tei' when one is found; off: skip it")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads for both sides (default: every core); 1 is least disturbed by other load")
    parser.add_argument("--publish", action="store_true",
                        help="also copy the throughput list, labelled with this CPU and today's date, to "
                        "semsearch/measured_throughput.json: the figures `semsearch cost` prices with where no "
                        "bench/results/inference.json is (commit it)")
    parser.add_argument("--replace-other-cpu", action="store_true",
                        help="with --publish: replace published figures that were measured on another CPU "
                        "(without it, such a run stops before measuring, as it would drop them)")
    args = parser.parse_args(argv)
    if args.publish and not args.replace_other_cpu:
        here = (cpu_name(), _cpu_flags())
        other = published_cpu_other_than(*here)
        if other:
            parser.error(f"--publish: {PUBLISHED} holds figures measured on {other}; this CPU is {_cpu_label(*here)}, "
                         "and `semsearch cost` prices each CPU family only from a CPU with its instructions. "
                         "Publish from that CPU, or pass --replace-other-cpu to replace them.")

    import torch
    from sentence_transformers import SentenceTransformer

    from inference_code.embedder import load_tokenizer, token_ids
    from inference_code.model_info import read_model_info
    from semsearch.loadtest import loadtest, url_sender_factory
    from semsearch.models import DEFAULT_MODEL_ID, packaged_model_dir

    threads = args.threads
    torch.set_num_threads(threads)
    model_dir = packaged_model_dir()
    pairs = read_pairs(max(args.pairs, args.requests * REQUEST_SIZE))
    texts = [p["text"] for p in pairs[: args.requests * REQUEST_SIZE]]
    batches = [texts[i : i + REQUEST_SIZE] for i in range(0, len(texts), REQUEST_SIZE)]
    info = read_model_info(model_dir)
    tokenizer = load_tokenizer(info)
    def count_tokens(ts):
        return [len(ids) for ids in token_ids(info, tokenizer, ts)]
    tokens = sum(count_tokens(texts))
    st = SentenceTransformer(str(model_dir), device="cpu")

    result: dict = {
        "machine": {"cpus": len(os.sched_getaffinity(0)), "cpu": cpu_name(), "cpu_flags": _cpu_flags(),
                    "python": platform.python_version(),
                    "load_average_at_start": os.getloadavg()[0]},
        "setup": {"model": DEFAULT_MODEL_ID, "texts_per_request": REQUEST_SIZE, "requests": len(batches),
                  "rounds": args.rounds, "texts": len(texts), "tokens": tokens, "mean_tokens": tokens / len(texts),
                  "threads": threads, "recall_pairs": args.pairs},
    }
    vectors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows = args.rows.split(",")
    tei_source = None
    if args.tei == "auto":
        from semsearch.local.tei import TeiNotFound, find_tei

        try:
            tei_source = find_tei()
            rows.append("tei")
        except TeiNotFound as e:
            result["tei"] = {"skipped": str(e)}
    for row in rows:
        mode, _, backend = row.partition(":")
        if row == "tei":
            import tempfile

            work_dir = Path(tempfile.mkdtemp(prefix="bench-tei-"))
            server: Server = TeiServer(tei_source, model_dir, work_dir)
            mode = "tei"
        else:
            server = Server(mode, threads, backend or None)
        try:
            served = server.ping()
            base_times, server_times, reference, got = interleaved(st, server, batches, args.rounds)
            base_s, server_s = sum(base_times), sum(server_times)
            cos = (unit(reference) * unit(got)).sum(axis=1)
            load = loadtest(url_sender_factory(server.url), target=server.url, requests=8,
                            concurrency=2, batch_size=REQUEST_SIZE, texts=texts, count_tokens=count_tokens,
                            flavor=server.flavor)
            if args.pairs:
                vectors[row] = (server.embed([p["query"] for p in pairs[: args.pairs]]),
                                server.embed([p["text"] for p in pairs[: args.pairs]]))
            n = len(texts) * args.rounds
            result[row] = {
                "flavor": server.flavor,
                "mode": mode,
                "path": served["path"],
                "why": served["why"],
                "texts_per_s": n / server_s,
                "tokens_per_s": tokens * args.rounds / server_s,
                "baseline_texts_per_s": n / base_s,
                "baseline_tokens_per_s": tokens * args.rounds / base_s,
                "ratio_vs_baseline": base_s / server_s,
                # Each request against the baseline call next to it: robust to bursts of load.
                "ratio_median_per_request": float(np.median(np.array(base_times) / np.array(server_times))),
                "cosine_to_fp32_min": float(cos.min()),
                "cosine_to_fp32_mean": float(cos.mean()),
                "concurrency_2": {k: load[k] for k in ("texts_per_s", "tokens_per_s", "latency_ms", "errors")},
                "server_peak_rss_mb": server.peak_rss_mb(),
            }
        finally:
            server.stop()
    for row, (queries, docs) in vectors.items():
        result[row]["recall_at_3"] = recall_at_3(queries, docs)
    fp32_row = "exact:onnx" if "exact:onnx" in vectors else "exact"
    if fp32_row in vectors:
        for row in vectors:
            result[row]["recall_at_3_delta_points"] = 100 * (result[row]["recall_at_3"] -
                                                             result[fp32_row]["recall_at_3"])
    baselines = [result[row]["baseline_texts_per_s"] for row in rows]
    result["baseline_spread"] = max(baselines) / min(baselines)
    result["machine"]["load_average_at_end"] = os.getloadavg()[0]
    result["throughput"] = [
        {"row": row, "flavor": result[row]["flavor"],
         "mode": None if result[row]["flavor"] == "tei" else result[row]["mode"], "path": result[row]["path"],
         "tokens_per_s": result[row]["tokens_per_s"], "texts_per_s": result[row]["texts_per_s"],
         "ratio_vs_baseline": result[row]["ratio_vs_baseline"], "cores": threads,
         "cpu": result["machine"]["cpu"], "cpu_flags": result["machine"]["cpu_flags"]}
        for row in rows]
    result["targets"] = _targets(result)
    if args.publish:
        print(f"bench: published {publish(result)}", file=sys.stderr)
    return result


PUBLISHED = Path(__file__).resolve().parent.parent / "semsearch" / "measured_throughput.json"


def published_cpu_other_than(cpu: str, cpu_flags: list[str], path: Path | None = None) -> str | None:
    """The CPU (name and flags) the published figures (default: PUBLISHED) were measured on,
    where it is not this one; None where nothing is published or it is this CPU."""
    path = path or PUBLISHED
    if not path.is_file():
        return None
    machine = json.loads(path.read_text()).get("machine", {})
    there = (machine.get("cpu"), machine.get("cpu_flags", []))
    return None if _cpu_label(*there) == _cpu_label(cpu, cpu_flags) else _cpu_label(*there)


def _cpu_label(cpu: str, cpu_flags: list[str]) -> str:
    return f"{cpu} ({', '.join(sorted(cpu_flags)) or 'no AVX-512'})"


def publish(result: dict, path: Path = PUBLISHED) -> Path:
    """Write the run's throughput list where `semsearch cost` reads published measurements."""
    import datetime

    published = {
        "note": "Measured by `python -m bench.inference --publish` (written by it, not by hand): tokens/s per "
                "flavor, mode and serving path on the CPU named in each row, 32-text requests over HTTP. "
                "`semsearch cost` maps each row to the instance families whose CPUs have the same instructions "
                "for that path and scales by vCPUs; a bench/results/inference.json in the checkout wins.",
        "measured_at": datetime.date.today().isoformat(),
        "machine": result["machine"],
        "setup": result["setup"],
        "baseline_spread": result["baseline_spread"],
        "throughput": result["throughput"],
    }
    path.write_text(json.dumps(published, indent=2) + "\n")
    return path


def _targets(result: dict) -> dict:
    """Goals on an AMX machine (issue 15); speed lives here, never in timed asserts."""
    checks = {}
    for row, figures in result.items():
        if not isinstance(figures, dict) or figures.get("mode") not in ("exact", "fast"):
            continue
        if figures["mode"] == "exact":
            if row == "exact":
                checks["exact: ratio >= 3.5"] = figures["ratio_vs_baseline"] >= 3.5
            checks[f"{row}: min cosine >= 0.9999"] = figures["cosine_to_fp32_min"] >= 0.9999
        else:
            if row == "fast":
                checks["fast: ratio >= 6"] = figures["ratio_vs_baseline"] >= 6
            checks[f"{row}: mean cosine >= 0.99"] = figures["cosine_to_fp32_mean"] >= 0.99
            if "recall_at_3_delta_points" in figures:
                checks[f"{row}: recall@3 within 0.5 points"] = abs(figures["recall_at_3_delta_points"]) <= 0.5
    return checks


#: The instruction-set flags that decide which serving path a CPU takes and how fast it runs
#: (semsearch/cost.py maps a measured row to the instance families that have the same ones).
CPU_FLAGS = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def _cpu_flags() -> list[str]:
    from inference_code.embedder import read_cpu_flags

    present = read_cpu_flags()
    return [f for f in CPU_FLAGS if f in present]




if __name__ == "__main__":
    from bench.__main__ import save

    outcome = main(sys.argv[1:])
    print(json.dumps(outcome, indent=2))
    print(f"bench: wrote {save('inference', outcome)}", file=sys.stderr)
