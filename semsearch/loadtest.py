"""`semsearch loadtest`: latency and throughput of an embedding endpoint under load.

Against ``--url`` (the local server, or anything speaking the same JSON) it POSTs bare
JSON arrays of ``--batch-size`` texts over keep-alive HTTP connections; against
``--endpoint`` it calls SageMaker's InvokeEndpoint through boto3 ``sagemaker-runtime``
(retries off, so throttling shows up as errors instead of as latency).

Reports latency p50/p95/p99, requests/s, texts/s and tokens/s (counted with the model's
own tokenizer, after truncation) over the successful requests, and errors by status, as
JSON (stdout and ``OUT/loadtest.json``) and a plot (``OUT/loadtest.png``: latency over
time, and its histogram). Exit status 1 when any request failed.
"""

from __future__ import annotations

import http.client
import itertools
import json
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from semsearch.errors import UsageError

#: Used when no --texts file is given: short and long, so batches are not uniform.
SAMPLE_TEXTS = [
    "How do I rotate the access keys of an IAM user without downtime?",
    "A daemon that watches a directory and uploads new files to object storage, retrying with backoff "
    "when the network is down and keeping a local journal so that nothing is uploaded twice.",
    "semantic search",
    "The quick brown fox jumps over the lazy dog.",
    "Library for parsing and writing JSON Lines files, streaming records one at a time so that files "
    "larger than memory can be processed; includes a command-line tool to validate and pretty-print them.",
    "Which instance type should serve a small embedding model on CPU?",
]


@dataclass
class Sample:
    start_s: float  # since the load test began
    latency_s: float
    status: str  # HTTP status as text ("200", "413"), or "error:<ExceptionName>" when none came back
    texts: int
    tokens: int

    @property
    def ok(self) -> bool:
        return self.status == "200"


Sender = Callable[[bytes], str]  # body -> status


def read_texts(path: Path | None) -> list[str]:
    """Texts from JSON Lines ("text", else "text_inputs", else "query") or plain lines."""
    if path is None:
        return list(SAMPLE_TEXTS)
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as e:
        raise UsageError(f"--texts {path}: {e.strerror or e}") from None
    texts = []
    for line in lines:
        if line.lstrip().startswith("{"):
            row = json.loads(line)
            text = next((row[k] for k in ("text", "text_inputs", "query") if isinstance(row.get(k), str)), None)
            if text is None:
                raise UsageError(f"--texts {path}: a line has no string 'text', 'text_inputs' or 'query'")
            texts.append(text)
        else:
            texts.append(line)
    if not texts:
        raise UsageError(f"--texts {path} holds no texts")
    return texts


class _HttpSender:
    """POSTs over one keep-alive connection, reconnecting after any failure."""

    def __init__(self, connection_class: type[http.client.HTTPConnection], host: str, port: int | None, path: str,
                 timeout_s: float):
        self.connect = lambda: connection_class(host, port, timeout=timeout_s)
        self.path = path
        self.conn: http.client.HTTPConnection | None = None

    def __call__(self, body: bytes) -> str:
        conn = self.conn = self.conn or self.connect()
        try:
            conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json",
                                                               "Accept": "application/json"})
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self.conn = None
            raise
        if response.getheader("Connection", "").lower() == "close":
            conn.close()
            self.conn = None
        return str(response.status)


def url_sender_factory(url: str, timeout_s: float = 60.0) -> Callable[[], Sender]:
    """One keep-alive connection per worker thread."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise UsageError(f"--url {url!r} is not an http(s) URL")
    path = parts.path if parts.path not in ("", "/") else "/invocations"
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return lambda: _HttpSender(connection_class, host, parts.port, path, timeout_s)


def endpoint_sender_factory(client, endpoint: str) -> Callable[[], Sender]:
    """InvokeEndpoint through a boto3 ``sagemaker-runtime`` client (thread-safe, shared)."""
    from botocore.exceptions import ClientError

    def make() -> Sender:
        def send(body: bytes) -> str:
            try:
                response = client.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType="application/json",
                                                  Accept="application/json")
            except ClientError as e:
                return str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "error:ClientError"))
            response["Body"].read()
            return "200"

        return send

    return make


def run_load(make_sender: Callable[[], Sender], bodies: list[tuple[bytes, int, int]], concurrency: int) -> tuple[
        list[Sample], float]:
    """Send every (body, texts, tokens) with ``concurrency`` workers; (samples, wall seconds)."""
    next_index = itertools.count()
    lock = threading.Lock()
    samples: list[Sample] = []
    began = time.perf_counter()

    def worker() -> None:
        send = make_sender()
        while True:
            with lock:
                i = next(next_index)
            if i >= len(bodies):
                return
            body, texts, tokens = bodies[i]
            start = time.perf_counter()
            try:
                status = send(body)
            except Exception as e:  # a load test records failures, it does not stop on them
                status = f"error:{type(e).__name__}"
            end = time.perf_counter()
            with lock:
                samples.append(Sample(start - began, end - start, status, texts, tokens))

    threads = [threading.Thread(target=worker, name=f"loadtest-{n}") for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples.sort(key=lambda s: s.start_s)
    return samples, time.perf_counter() - began


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure is a latency that happened)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(samples: list[Sample], wall_s: float, **meta) -> dict:
    ok = [s for s in samples if s.ok]
    latencies = sorted(s.latency_s * 1000 for s in ok)
    statuses = Counter(s.status for s in samples)
    return {
        **meta,
        "requests": len(samples),
        "ok": len(ok),
        "errors": len(samples) - len(ok),
        "status_counts": dict(sorted(statuses.items())),
        "duration_s": round(wall_s, 3),
        "latency_ms": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95),
                       "p99": _percentile(latencies, 99),
                       "mean": sum(latencies) / len(latencies) if latencies else float("nan"),
                       "max": latencies[-1] if latencies else float("nan")},
        "requests_per_s": len(ok) / wall_s,
        "texts_per_s": sum(s.texts for s in ok) / wall_s,
        "tokens_per_s": sum(s.tokens for s in ok) / wall_s,
    }


def plot(samples: list[Sample], summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here
    import matplotlib.pyplot as plt

    fig, (over_time, histogram) = plt.subplots(1, 2, figsize=(12, 4.5))
    ok = [s for s in samples if s.ok]
    bad = [s for s in samples if not s.ok]
    over_time.scatter([s.start_s for s in ok], [s.latency_s * 1000 for s in ok], s=8, label="ok")
    if bad:
        over_time.scatter([s.start_s for s in bad], [s.latency_s * 1000 for s in bad], s=12, c="red", marker="x",
                          label="error")
    over_time.set(xlabel="request start (s)", ylabel="latency (ms)", title="latency over time")
    over_time.legend()
    histogram.hist([s.latency_s * 1000 for s in ok], bins=30)
    for name in ("p50", "p95", "p99"):
        value = summary["latency_ms"][name]
        histogram.axvline(value, linestyle="--", color="gray")
        histogram.text(value, histogram.get_ylim()[1] * 0.95, name, rotation=90, va="top")
    histogram.set(xlabel="latency (ms)", ylabel="requests", title=(
        f"{summary['requests']} requests x {summary['batch_size']} texts, concurrency {summary['concurrency']}: "
        f"{summary['texts_per_s']:.1f} texts/s"))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_bodies(texts: list[str], requests: int, batch_size: int, count_tokens: Callable[[list[str]], list[int]],
                 ) -> list[tuple[bytes, int, int]]:
    """Request i carries texts i*B ... i*B+B-1, cycling through ``texts``."""
    tokens = count_tokens(texts)
    bodies = []
    for i in range(requests):
        picks = [(i * batch_size + j) % len(texts) for j in range(batch_size)]
        bodies.append((json.dumps([texts[k] for k in picks]).encode(), batch_size, sum(tokens[k] for k in picks)))
    return bodies


def token_counter(model_dir: Path) -> Callable[[list[str]], list[int]]:
    from inference_code.embedder import load_tokenizer, token_ids
    from inference_code.model_info import read_model_info

    info = read_model_info(model_dir)
    tokenizer = load_tokenizer(info)
    return lambda texts: [len(ids) for ids in token_ids(info, tokenizer, texts, "passage")]


def loadtest(make_sender: Callable[[], Sender], *, target: str, requests: int, concurrency: int, batch_size: int,
             texts: list[str], count_tokens: Callable[[list[str]], list[int]], out_dir: Path | None = None) -> dict:
    if requests < 1 or concurrency < 1 or batch_size < 1:
        raise UsageError("--requests, --concurrency and --batch-size must be at least 1")
    bodies = build_bodies(texts, requests, batch_size, count_tokens)
    samples, wall_s = run_load(make_sender, bodies, concurrency)
    summary = summarize(samples, wall_s, target=target, concurrency=concurrency, batch_size=batch_size)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "loadtest.json").write_text(json.dumps(summary, indent=2) + "\n")
        (out_dir / "samples.json").write_text(json.dumps([asdict(s) for s in samples]) + "\n")
        plot(samples, summary, out_dir / "loadtest.png")
    return summary


def register(subparsers) -> None:
    p = subparsers.add_parser("loadtest", help="latency and throughput of an embedding endpoint under load",
                              description=__doc__.split("\n\n")[0])
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="http://HOST:PORT[/path] (path defaults to /invocations)")
    target.add_argument("--endpoint", help="SageMaker endpoint name (boto3 sagemaker-runtime)")
    p.add_argument("--region", help="AWS region of --endpoint (default: the AWS configuration's)")
    p.add_argument("--endpoint-url", help="override the sagemaker-runtime URL (e.g. a local `semsearch serve`)")
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=32, help="texts per request (default: 32, TEI's client batch)")
    p.add_argument("--texts", help="JSON Lines (field text) or plain lines to send (default: built-in samples)")
    p.add_argument("--model-dir", help="model whose tokenizer counts tokens (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--out", help="folder for loadtest.json, samples.json and loadtest.png")
    p.set_defaults(func=run)


def run(args) -> int:
    from semsearch.models import resolve_model_dir

    texts = read_texts(Path(args.texts) if args.texts else None)
    count_tokens = token_counter(resolve_model_dir(args.model_dir))
    if args.url:
        make_sender, target = url_sender_factory(args.url), args.url
    else:
        import boto3
        from botocore.config import Config

        config = Config(max_pool_connections=max(10, args.concurrency), retries={"mode": "standard", "max_attempts": 1})
        client = boto3.client("sagemaker-runtime", region_name=args.region, endpoint_url=args.endpoint_url,
                              config=config)
        make_sender, target = endpoint_sender_factory(client, args.endpoint), f"sagemaker:{args.endpoint}"
    summary = loadtest(make_sender, target=target, requests=args.requests, concurrency=args.concurrency,
                       batch_size=args.batch_size, texts=texts, count_tokens=count_tokens,
                       out_dir=Path(args.out) if args.out else None)
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0 if summary["errors"] == 0 else 1
