"""`semsearch loadtest`: latency and throughput of an embedding endpoint under load.

Each request carries ``--batch-size`` texts in the body of the serving flavor's own contract,
the body the ingest pipeline's ml-commons connector sends (``search_glue.steps.TEI_BODY`` /
``CUSTOM_BODY``): ``tei`` (Text Embeddings Inference) ``{"inputs": [...], "truncate": true}``,
``custom`` (our handler, inference_code/contracts.py) ``{"inputs": [...], "prompt_name": "passage"}``. Both answer 200 with one vector
per text; any other 200 counts as ``bad-response``.

Against ``--url`` (a local `semsearch serve`, TEI's router, anything speaking the flavor's
JSON) it POSTs over keep-alive HTTP connections; against ``--endpoint`` it calls SageMaker's
InvokeEndpoint through boto3 ``sagemaker-runtime`` (retries off, so throttling shows up as
errors instead of as latency). An endpoint that scales to zero hosts its model as an
inference component, which every request names: ``InferenceComponentName`` on
InvokeEndpoint, the ``X-Amzn-SageMaker-Inference-Component`` header on ``--url``.

Defaults come from the config (cdk.json): ``--stage NAME`` (else the first stage, which the
default deployment deploys first) gives the flavor, instance type and batch limit of the
endpoint the stage's connector fronts, its inference component when the stage scales to
zero (``ops.active_hours_utc``), and, without ``--url``/``--endpoint``, its endpoint name.
A ``--batch-size`` over the flavor's limit (TEI's ``max_client_batch_size``; our handler's
``SEMSEARCH_MAX_BATCH``) is refused before anything is sent.

Reports latency p50/p95/p99, requests/s, texts/s and tokens/s (counted with the model's
own tokenizer, after truncation) over the successful requests, and errors by status, as
JSON (stdout and ``OUT/loadtest.json``) and a plot (``OUT/loadtest.png``: latency over
time, and its histogram), with the first error message of each status and the vectors'
dimension. Exit status 1 when any request failed.
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
from typing import Any
from urllib.parse import urlsplit

from semsearch.errors import UsageError

FLAVORS = ("tei", "custom")
#: The header SageMaker's runtime API takes InferenceComponentName in (the connector sends it too).
INFERENCE_COMPONENT_HEADER = "X-Amzn-SageMaker-Inference-Component"
#: The CDK app's configuration, beside this package.
CDK_JSON = Path(__file__).resolve().parent.parent / "cdk.json"

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
    status: str  # HTTP status as text ("200", "413"), "bad-response" (a 200 that is not one vector a text),
    # or "error:<ExceptionName>" when none came back
    texts: int
    tokens: int
    dimension: int = 0  # of the vectors, when ok
    message: str = ""  # why not ok: the error body's message, first line

    @property
    def ok(self) -> bool:
        return self.status == "200"


Sender = Callable[[bytes], tuple[str, bytes]]  # request body -> (status, response body)


@dataclass(frozen=True)
class Defaults:
    """What the config deploys for one stage: the endpoint its connector fronts."""

    stage: str
    #: The endpoint of the model version the config deploys (before any promotion).
    endpoint_name: str
    #: The SSM parameter holding the endpoint that serves now (a promotion moves it).
    serving_parameter: str
    region: str
    flavor: str
    instance_type: str
    inference_component: str | None
    #: Texts per request each flavor's container takes, as the stage configures it.
    batch_limits: dict[str, int]


def stage_defaults(stage: str | None, cdk_json: Path = CDK_JSON) -> Defaults:
    """The defaults of ``stage`` (None: the first stage in cdk.json) from the validated config."""
    from stacks.config import ConfigError, active_hours, load_config

    try:
        context = json.loads(cdk_json.read_text()).get("context", {})
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the config {cdk_json}: {e}") from None
    stages = list(context.get("stages") or {})
    name = stage or (stages[0] if stages else "")
    if name not in stages:
        raise UsageError(f"--stage {name!r} is not a stage of {cdk_json}; known: {', '.join(stages) or 'none'}")
    try:
        config = load_config({**context, "stage": name}).stage(name)
    except ConfigError as e:
        raise UsageError(str(e).replace("\n", " ")) from None
    # The names and limits the stacks deploy, from the definitions the stacks use (no CDK import).
    from stacks.catalog import INSTANCES
    from stacks.containers import custom_container_environment, model_version, tei_container_environment
    from stacks.names import inference_component_name, serving_parameter, versioned_endpoint_name

    endpoint = config.connector_endpoint
    instance = INSTANCES[endpoint.instance_type]
    name_of_endpoint = versioned_endpoint_name(config.name, config.search.endpoint, model_version(endpoint))
    hours = active_hours(config.ops.active_hours_utc)
    component = inference_component_name(name_of_endpoint) if hours else None
    limits = {"tei": int(tei_container_environment(endpoint)["MAX_CLIENT_BATCH_SIZE"]),
              "custom": int(custom_container_environment(endpoint, instance)["SEMSEARCH_MAX_BATCH"])}
    return Defaults(stage=config.name, endpoint_name=name_of_endpoint,
                    serving_parameter=serving_parameter(config.name, config.search.endpoint, "endpoint"),
                    region=config.region, flavor=endpoint.flavor,
                    instance_type=endpoint.instance_type, inference_component=component, batch_limits=limits)


def serving_endpoint(ssm: Any, defaults: Defaults) -> tuple[str, str | None]:
    """(endpoint, inference component) that serve the stage now: the model stack records them
    in SSM at every deploy, a promoted fine-tune included."""
    from botocore.exceptions import BotoCoreError, ClientError

    from stacks.names import inference_component_name

    try:
        name = str(ssm.get_parameter(Name=defaults.serving_parameter)["Parameter"]["Value"])
    except (ClientError, BotoCoreError) as e:
        raise UsageError(f"stage {defaults.stage!r}: cannot read {defaults.serving_parameter} (is the stage deployed, "
                         f"in this account and region?): {e}") from None
    return name, inference_component_name(name) if defaults.inference_component else None


def request_body(flavor: str, texts: list[str]) -> bytes:
    """The body ``flavor``'s container takes: the connector's request body with the texts filled
    in, as ml-commons fills ``${parameters.input}`` (a JSON array of strings)."""
    import importlib

    import stacks.glue_properties  # noqa: F401  (puts lambda/, the connector's home, on the import path)

    steps = importlib.import_module("search_glue.steps")
    bodies = {"tei": steps.TEI_BODY, "custom": steps.CUSTOM_BODY % "passage"}
    if flavor not in bodies:
        raise UsageError(f"--flavor {flavor!r}: expected one of {', '.join(bodies)}")
    return bodies[flavor].replace("${parameters.input}", json.dumps(texts)).encode()


def check_response(status: str, body: bytes, texts: int) -> tuple[str, int, str]:
    """(status, dimension, message): a 200 must hold ``texts`` vectors of one dimension (both
    flavors answer a bare array of arrays); any other status's message is its error body's
    ``error`` (TEI: ``{"error", "error_type"}``; our handler: ``{"error"}``) or its text."""
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if status != "200":
        if isinstance(value, dict) and isinstance(value.get("error"), str):
            kind = f" ({value['error_type']})" if value.get("error_type") else ""
            return status, 0, value["error"] + kind
        return status, 0, body.decode("utf-8", "replace").strip().split("\n")[0][:300]
    ok = (isinstance(value, list) and len(value) == texts and all(isinstance(v, list) and v for v in value)
          and len({len(v) for v in value}) == 1 and all(isinstance(x, float | int) for x in value[0]))
    if not ok:
        return "bad-response", 0, f"expected {texts} vectors of one dimension, got {body[:120]!r}"
    return status, len(value[0]), ""


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
                 timeout_s: float, headers: dict[str, str]):
        self.connect = lambda: connection_class(host, port, timeout=timeout_s)
        self.path = path
        self.headers = headers
        self.conn: http.client.HTTPConnection | None = None

    def __call__(self, body: bytes) -> tuple[str, bytes]:
        conn = self.conn = self.conn or self.connect()
        try:
            conn.request("POST", self.path, body=body, headers=self.headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self.conn = None
            raise
        if response.getheader("Connection", "").lower() == "close":
            conn.close()
            self.conn = None
        return str(response.status), payload


def url_sender_factory(url: str, timeout_s: float = 60.0, *, inference_component: str | None = None,
                       ) -> Callable[[], Sender]:
    """One keep-alive connection per worker thread."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise UsageError(f"--url {url!r} is not an http(s) URL")
    path = parts.path if parts.path not in ("", "/") else "/invocations"
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if inference_component:
        headers[INFERENCE_COMPONENT_HEADER] = inference_component
    return lambda: _HttpSender(connection_class, host, parts.port, path, timeout_s, headers)


def endpoint_sender_factory(client, endpoint: str, *, inference_component: str | None = None,
                            ) -> Callable[[], Sender]:
    """InvokeEndpoint through a boto3 ``sagemaker-runtime`` client (thread-safe, shared)."""
    from botocore.exceptions import ClientError

    extra = {"InferenceComponentName": inference_component} if inference_component else {}

    def make() -> Sender:
        def send(body: bytes) -> tuple[str, bytes]:
            try:
                response = client.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType="application/json",
                                                  Accept="application/json", **extra)
            except ClientError as e:
                error = e.response.get("Error", {})
                status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "error:ClientError"))
                message = f"{error.get('Code', 'ClientError')}: {error.get('Message')}"
                return status, json.dumps({"error": message}).encode()
            return "200", response["Body"].read()

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
                status, payload = send(body)
            except Exception as e:  # a load test records failures, it does not stop on them
                status, payload = f"error:{type(e).__name__}", str(e).encode()
            end = time.perf_counter()
            if status.startswith("error:"):
                dimension, message = 0, payload.decode("utf-8", "replace")
            else:
                status, dimension, message = check_response(status, payload, texts)
            with lock:
                samples.append(Sample(start - began, end - start, status, texts, tokens, dimension, message))

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
    first_errors: dict[str, str] = {}
    for s in samples:
        if not s.ok:
            first_errors.setdefault(s.status, s.message)
    dimensions = sorted({s.dimension for s in ok})
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
        "dimension": dimensions[0] if len(dimensions) == 1 else (dimensions or None),
        "error_messages": dict(sorted(first_errors.items())),  # the first message of each failing status
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
                 *, flavor: str) -> list[tuple[bytes, int, int]]:
    """Request i carries texts i*B ... i*B+B-1, cycling through ``texts``, in ``flavor``'s body."""
    tokens = count_tokens(texts)
    bodies = []
    for i in range(requests):
        picks = [(i * batch_size + j) % len(texts) for j in range(batch_size)]
        bodies.append((request_body(flavor, [texts[k] for k in picks]), batch_size, sum(tokens[k] for k in picks)))
    return bodies


def token_counter(model_dir: Path) -> Callable[[list[str]], list[int]]:
    from inference_code.embedder import load_tokenizer, token_ids
    from inference_code.model_info import read_model_info

    info = read_model_info(model_dir)
    tokenizer = load_tokenizer(info)
    return lambda texts: [len(ids) for ids in token_ids(info, tokenizer, texts, "passage")]


def check_batch_size(batch_size: int, flavor: str, limit: int, where: str) -> None:
    if batch_size > limit:
        name = "max_client_batch_size" if flavor == "tei" else "SEMSEARCH_MAX_BATCH"
        raise UsageError(f"--batch-size {batch_size} is over the {flavor} flavor's limit of {limit} texts per request "
                         f"({name} of {where}); lower --batch-size")


def loadtest(make_sender: Callable[[], Sender], *, target: str, requests: int, concurrency: int, batch_size: int,
             texts: list[str], count_tokens: Callable[[list[str]], list[int]], flavor: str,
             out_dir: Path | None = None, **meta) -> dict:
    """Run the load; ``meta`` (stage, inference component, ...) goes into the summary as is."""
    if requests < 1 or concurrency < 1 or batch_size < 1:
        raise UsageError("--requests, --concurrency and --batch-size must be at least 1")
    bodies = build_bodies(texts, requests, batch_size, count_tokens, flavor=flavor)
    samples, wall_s = run_load(make_sender, bodies, concurrency)
    summary = summarize(samples, wall_s, target=target, concurrency=concurrency, batch_size=batch_size,
                        flavor=flavor, **meta)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "loadtest.json").write_text(json.dumps(summary, indent=2) + "\n")
        (out_dir / "samples.json").write_text(json.dumps([asdict(s) for s in samples]) + "\n")
        plot(samples, summary, out_dir / "loadtest.png")
    return summary


def register(subparsers) -> None:
    p = subparsers.add_parser("loadtest", help="latency and throughput of an embedding endpoint under load",
                              description=__doc__.split("\n\n")[0])
    target = p.add_mutually_exclusive_group()
    target.add_argument("--url", help="http://HOST:PORT[/path] (path defaults to /invocations)")
    target.add_argument("--endpoint", help="SageMaker endpoint name (boto3 sagemaker-runtime; default with --stage: "
                        "the stage's endpoint)")
    p.add_argument("--stage", help="config stage (cdk.json) whose endpoint gives the defaults: flavor, batch limit, "
                   "inference component, endpoint name, region (default: the first stage)")
    p.add_argument("--flavor", choices=FLAVORS, help="request contract: tei {\"inputs\": [...]} or custom (our "
                   "handler's {\"inputs\": [...], \"prompt_name\": \"passage\"}); default: the stage's endpoint flavor")
    p.add_argument("--inference-component", help="inference component to invoke (InferenceComponentName; for --url "
                   f"the {INFERENCE_COMPONENT_HEADER} header); default: the stage's when it scales to zero")
    p.add_argument("--region", help="AWS region of --endpoint (default: the stage's, else the AWS configuration's)")
    p.add_argument("--endpoint-url", help="override the sagemaker-runtime URL (e.g. a local `semsearch serve`)")
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=32, help="texts per request (default: 32, TEI's client batch; "
                   "at most the flavor's limit)")
    p.add_argument("--texts", help="JSON Lines (field text) or plain lines to send (default: built-in samples)")
    p.add_argument("--model-dir", help="model whose tokenizer counts tokens (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--out", help="folder for loadtest.json, samples.json and loadtest.png")
    p.set_defaults(func=run)


def run(args) -> int:
    from semsearch.models import resolve_model_dir

    if not (args.url or args.endpoint or args.stage):
        raise UsageError("give --url URL, --endpoint NAME or --stage NAME (the stage's endpoint)")
    defaults = stage_defaults(args.stage)
    flavor = args.flavor or defaults.flavor
    component = args.inference_component or defaults.inference_component
    check_batch_size(args.batch_size, flavor, defaults.batch_limits[flavor],
                     f"stage {defaults.stage!r}, endpoint {defaults.endpoint_name}")
    texts = read_texts(Path(args.texts) if args.texts else None)
    count_tokens = token_counter(resolve_model_dir(args.model_dir))
    if args.url:
        make_sender = url_sender_factory(args.url, inference_component=component)
        target = args.url
    else:
        import boto3
        from botocore.config import Config

        endpoint = args.endpoint or defaults.endpoint_name
        region = args.region or defaults.region or None
        if args.stage and not args.endpoint:
            endpoint, served_component = serving_endpoint(boto3.client("ssm", region_name=region), defaults)
            component = args.inference_component or served_component
        config = Config(max_pool_connections=max(10, args.concurrency), retries={"mode": "standard", "max_attempts": 1})
        client = boto3.client("sagemaker-runtime", region_name=region,
                              endpoint_url=args.endpoint_url, config=config)
        make_sender = endpoint_sender_factory(client, endpoint, inference_component=component)
        target = f"sagemaker:{endpoint}"
    summary = loadtest(make_sender, target=target, requests=args.requests, concurrency=args.concurrency,
                       batch_size=args.batch_size, texts=texts, count_tokens=count_tokens, flavor=flavor,
                       out_dir=Path(args.out) if args.out else None, inference_component=component,
                       stage=defaults.stage, instance_type=defaults.instance_type,
                       batch_limit=defaults.batch_limits[flavor])
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0 if summary["errors"] == 0 else 1
