"""`semsearch compare`: which embedding model, on your own data, and what the choice costs.

    semsearch compare --pairs dev.jsonl --model all-MiniLM-L6-v2 --model ./tuned \\
        --endpoint semsearch-dev-e5,flavor=tei,instance=ml.g5.xlarge,model=e5-base-v2 \\
        --bedrock amazon.titan-embed-text-v2:0,dimension=512 --json --plot compare.png

Every candidate embeds the same queries and documents (--pairs: our pairs, or a BEIR folder
or qrels file, training_code/inputs.py) and is scored by the fine-tune gate's own code
(training_code/retrieval.py: recall@1/3/10, MRR@10, nDCG@10, exact cosine search), with
the catalog's query/passage prefixes (stacks/catalog.py). Candidates:

--model DIR|all-MiniLM-L6-v2[,model=CATALOG_ID][,name=LABEL]
    a sentence-transformers folder (or the packaged all-MiniLM-L6-v2), run on this machine.
    Its catalog entry (prefixes) is ``model=``, else the one named like the folder, else the
    prompts saved with the model (as `semsearch train` saves them).
--endpoint NAME[,flavor=tei|custom][,instance=TYPE][,model=CATALOG_ID][,component=IC][,name=LABEL]
    a SageMaker endpoint called through the sagemaker-runtime API (InvokeEndpoint, the body
    the ingest pipeline sends: lambda/endpoint_request), or a local one with --endpoint-url
    (`semsearch serve`, the local stack). Defaults: the --stage config's connector endpoint.
--bedrock MODEL_ID[,dimension=N][,name=LABEL]
    an Amazon Bedrock embedding model (semsearch.bedrock.embed_texts; --bedrock-endpoint-url
    for a stand-in).

What each costs:
- throughput and latency where it runs: texts/s and tokens/s over the whole set, and the
  latency of each batch (--batch-size texts; endpoints: --concurrency requests in flight).
  Tokens are counted with the model's tokenizer after truncation (endpoints and Bedrock: the
  tokenizer of --tokenizer, by default the packaged all-MiniLM-L6-v2: an approximation).
- dimension and the k-NN index's memory per million documents (OpenSearch's HNSW estimate).
- USD per million tokens (semsearch/cost.py's price table): a local model on ml.c6i.xlarge
  from its throughput measured here scaled to the instance's vCPUs, and on ml.g5.xlarge from
  the throughput table's g5 figure scaled by the model's speed relative to the table's
  c6i figure (both labelled estimates); an endpoint from its instance's hourly price and the
  throughput measured through it (only as good as the load: raise --concurrency to saturate
  it); Bedrock from its per-token price.

--json prints one object (users script against these fields; schema_version changes if any
field changes meaning)::

    {
      "schema_version": 1,
      "data": {"format": "pairs"|"beir", "split": str|null, "files": [str], "pairs": int,
               "queries": int, "documents": int},
      "metric_keys": ["recall@1", "recall@3", "recall@10", "mrr@10", "ndcg@10"],
      "primary_metric": "ndcg@10",
      "prices": {"as_of": str, "region": str, "currency": "USD", "files": [str]},
      "knn_memory_formula": str,              # the estimate used for knn_memory_gib_per_million_docs
      "hnsw_m": int,
      "machine": {"cpu": str, "cores": int, "device": "cpu"|"cuda"},
      "candidates": [{
        "name": str,                          # the table's label
        "kind": "model"|"endpoint"|"bedrock",
        "source": str,                        # folder, endpoint name or Bedrock model id
        "catalog_id": str|null,               # stacks/catalog.py entry whose prefixes applied
        "query_prefix": str, "passage_prefix": str,
        "metrics": {"recall@1": f, "recall@3": f, "recall@10": f, "mrr@10": f, "ndcg@10": f},
        "dimension": int,
        "knn_memory_gib_per_million_docs": f,
        "throughput": {"where": str, "texts": int, "tokens": int, "seconds": f,
                       "texts_per_s": f, "tokens_per_s": f, "batch_size": int, "requests": int,
                       "latency_ms": {"p50": f, "p95": f, "max": f}},
        "usd_per_million_tokens": [{"on": str,         # instance type, or "bedrock"
                                    "usd": f, "source": str}]
      }],
      "notes": [str]
    }

--plot FILE.png: nDCG@10 against USD per million tokens (log scale), one point per candidate
and price option.

--remote --stage NAME: the same comparison of --model candidates as a SageMaker Processing job
of the deployed stage (semsearch/compare_remote.py), for sets too big for this machine; the
same table, --json object and --plot.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semsearch.errors import UsageError

SCHEMA_VERSION = 1
#: The instance a local model's CPU throughput is scaled to, and the GPU one it is estimated on.
CPU_INSTANCE = "ml.c6i.xlarge"
GPU_INSTANCE = "ml.g5.xlarge"
KINDS = ("model", "endpoint", "bedrock")
# OpenSearch's k-NN memory estimate for HNSW ("Memory estimation", k-NN plugin documentation):
# 1.1 * (4 * dimension + 8 * m) bytes per vector (float32 vectors plus the graph's links; the
# 1.1 is the documented 10% overhead). It is the native-memory (faiss/nmslib) figure; a Lucene
# index holds about the same on disk and in the page cache.
KNN_MEMORY_FORMULA = "1.1 * (4 * dimension + 8 * m) bytes per vector (OpenSearch k-NN HNSW memory estimate)"


def knn_memory_gib_per_million(dimension: int, m: int) -> float:
    return 1.1 * (4 * dimension + 8 * m) * 1_000_000 / 2**30


# ---------------------------------------------------------------------------------------
# Candidates


@dataclass
class Candidate:
    """One model under comparison; ``embed(texts, kind)`` returns one vector per text."""

    name: str
    kind: str
    source: str
    catalog_id: str | None
    query_prefix: str
    passage_prefix: str
    where: str
    embed: Callable[[list[str], str], np.ndarray]
    count_tokens: Callable[[list[str], str], list[int]]
    #: USD per 1M tokens given the measured tokens/s: [(on, usd, source)].
    price: Callable[[float], list[tuple[str, float, str]]]
    concurrency: int = 1
    dimension: int | None = None
    extra_notes: list[str] = field(default_factory=list)


def parse_spec(value: str, flag: str, allowed: Sequence[str]) -> tuple[str, dict[str, str]]:
    """``HEAD[,key=value...]`` -> (HEAD, {key: value}); UsageError naming the flag on a bad key."""
    head, *rest = value.split(",")
    if not head.strip():
        raise UsageError(f"{flag} {value!r}: empty name")
    options: dict[str, str] = {}
    for item in rest:
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or key not in allowed or not val.strip():
            raise UsageError(f"{flag} {value!r}: bad option {item!r}; allowed: "
                             f"{', '.join(k + '=...' for k in allowed)}")
        options[key] = val.strip()
    return head.strip(), options


def catalog_spec(catalog_id: str | None, flag: str):
    from stacks.catalog import MODELS

    if catalog_id is None:
        return None
    if catalog_id not in MODELS:
        raise UsageError(f"{flag}: model={catalog_id!r} is not in the catalog; known: {', '.join(sorted(MODELS))}")
    return MODELS[catalog_id]


def _guess_catalog_id(folder: Path) -> str | None:
    from stacks.catalog import MODELS

    names = {folder.name.lower(), folder.parent.name.lower() if folder.name == "model" else ""}
    for spec in MODELS.values():
        if spec.id.lower() in names or spec.hf_id.split("/")[-1].lower() in names:
            return spec.id
    return None


def cpu_name() -> str:
    """The CPU's model name, as benchmarks label their figures (platform's guess without /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Pricing:
    """The price and throughput tables of `semsearch cost`, read once."""

    def __init__(self, prices_file: Path | None, throughput_file: Path | None):
        from semsearch import cost

        self.cost = cost
        self.prices = cost.load_prices(prices_file)
        self.throughput, self.notes = cost.load_throughput(throughput_file)

    def instance(self, instance_type: str, tokens_per_s: float, source: str) -> tuple[str, float, str]:
        usd = self.cost.usd_per_million_tokens(self.prices.sagemaker("hosting", instance_type), tokens_per_s)
        return instance_type, usd, source

    def local(self, tokens_per_s: float, cores: int) -> list[tuple[str, float, str]]:
        """A model measured on this machine: on c6i scaled by vCPUs, on g5 by relative speed."""
        from stacks.catalog import INSTANCES

        if tokens_per_s <= 0:
            return []
        vcpus = INSTANCES[CPU_INSTANCE].vcpus
        cpu_tps = tokens_per_s * vcpus / cores
        rows = [self.instance(CPU_INSTANCE, cpu_tps, f"derived: {tokens_per_s:,.0f} tokens/s measured here on {cores} "
                              f"CPU cores x {vcpus}/{cores} for {vcpus} vCPUs (linear scaling assumed)")]
        table_cpu, table_gpu = self.throughput.get(CPU_INSTANCE), self.throughput.get(GPU_INSTANCE)
        if table_cpu and table_gpu:
            ratio = cpu_tps / float(table_cpu["tokens_per_s"])
            rows.append(self.instance(
                GPU_INSTANCE, float(table_gpu["tokens_per_s"]) * ratio,
                f"estimate: the throughput table's {GPU_INSTANCE} figure x {ratio:.2f}, this model's speed relative "
                f"to the table's {CPU_INSTANCE} figure (assumes GPU and CPU slow down alike)"))
        return rows

    def bedrock(self, model_id: str) -> list[tuple[str, float, str]]:
        """Bedrock's per-token price from the price table, where it has one."""
        price = _bedrock_price(self.prices, model_id)
        return [price] if price else []


def _bedrock_price(prices: Any, model_id: str) -> tuple[str, float, str] | None:
    if model_id not in prices.bedrock_models():
        return None
    return "bedrock", prices.bedrock(model_id), \
        f"price table: Amazon Bedrock on-demand input tokens, {prices.region} as of {prices.as_of}"


def local_candidate(value: str, pricing: Pricing, batch_size: int) -> Candidate:
    from semsearch.models import DEFAULT_MODEL_ID, packaged_model_dir, resolve_model_dir

    head, options = parse_spec(value, "--model", ("model", "name"))
    folder = packaged_model_dir() if head == DEFAULT_MODEL_ID and not Path(head).exists() \
        else resolve_model_dir(head, "--model")
    packaged = head == DEFAULT_MODEL_ID and folder == packaged_model_dir()
    catalog_id = options.get("model") or (DEFAULT_MODEL_ID if packaged else _guess_catalog_id(folder))
    spec = catalog_spec(catalog_id, f"--model {value!r}")
    import torch
    from sentence_transformers import SentenceTransformer

    from training_code import retrieval

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SentenceTransformer(str(folder), device=device)
    if spec is not None:
        model.max_seq_length = min(model.max_seq_length or spec.max_tokens, spec.max_tokens)
    # The catalog's prefixes; without an entry, the prompts saved with the model.
    encode = retrieval.sentence_transformer_encoder(
        model, query_prefix=spec.query_prefix if spec else None, passage_prefix=spec.passage_prefix if spec else None,
        batch_size=batch_size)
    prompts = getattr(model, "prompts", None) or {}
    query_prefix = spec.query_prefix if spec else (prompts.get("query") or "")
    passage_prefix = spec.passage_prefix if spec else (prompts.get("document") or prompts.get("passage") or "")
    prefix = {"query": query_prefix, "passage": passage_prefix}
    tokenizer, max_len = model.tokenizer, model.max_seq_length

    def count_tokens(texts: list[str], kind: str) -> list[int]:
        ids = tokenizer([prefix[kind] + t for t in texts], truncation=True, max_length=max_len)["input_ids"]
        return [len(i) for i in ids]

    cores = cpu_cores()
    where = f"this machine, {device}" + (f" ({cores} CPU cores)" if device == "cpu" else "")
    # sentence-transformers 6 renamed the method; 5 has only the old name.
    dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return Candidate(name=options.get("name") or (DEFAULT_MODEL_ID if packaged else folder.name),
                     kind="model", source=str(folder), catalog_id=catalog_id, query_prefix=query_prefix,
                     passage_prefix=passage_prefix, where=where, embed=encode, count_tokens=count_tokens,
                     price=(lambda tps: pricing.local(tps, cores)) if device == "cpu" else (lambda tps: []),
                     dimension=dimension())


def tokenizer_counter(tokenizer_dir: Path) -> Callable[[list[str], str], list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    limit = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)

    def count(texts: list[str], kind: str) -> list[int]:
        return [len(i) for i in tokenizer(texts, truncation=True, max_length=limit)["input_ids"]]

    return count


def endpoint_defaults(stage: str | None) -> dict[str, str]:
    """flavor, instance, model and region of the stage's connector endpoint (cdk.json)."""
    from semsearch import loadtest
    from stacks.config import ConfigError, load_config

    defaults = loadtest.stage_defaults(stage)
    try:
        context = json.loads(loadtest.CDK_JSON.read_text()).get("context", {})
        model_id = load_config({**context, "stage": defaults.stage}).stage(defaults.stage).connector_endpoint.model.id
    except (OSError, ValueError, ConfigError) as e:
        raise UsageError(f"cannot read the config {loadtest.CDK_JSON}: {e}") from None
    return {"flavor": defaults.flavor, "instance": defaults.instance_type, "model": model_id,
            "region": defaults.region or ""}


def endpoint_candidate(value: str, args: argparse.Namespace, pricing: Pricing,
                       count_tokens: Callable[[list[str], str], list[int]]) -> Candidate:
    import boto3
    from botocore.config import Config

    import stacks.glue_properties  # noqa: F401  (puts lambda/, endpoint_request's home, on the import path)
    from semsearch import loadtest

    # isort: split
    from endpoint_request import FLAVORS, request_body

    head, options = parse_spec(value, "--endpoint", ("flavor", "instance", "model", "component", "name"))
    needed = {"flavor", "instance", "model"} - set(options)
    defaults = endpoint_defaults(args.stage) if needed or not args.region else {}
    settings = {**defaults, **options}
    flavor = settings["flavor"]
    if flavor not in FLAVORS:
        raise UsageError(f"--endpoint {value!r}: flavor={flavor!r}; expected one of {', '.join(FLAVORS)}")
    spec = catalog_spec(settings["model"], f"--endpoint {value!r}")
    assert spec is not None
    region = args.region or settings.get("region") or None
    client = boto3.client("sagemaker-runtime", region_name=region, endpoint_url=args.endpoint_url,
                          config=Config(max_pool_connections=max(10, args.concurrency),
                                        retries={"mode": "standard", "max_attempts": 3}))
    send = loadtest.endpoint_sender_factory(client, head, inference_component=settings.get("component"))()
    prefix = {"query": spec.query_prefix, "passage": spec.passage_prefix}

    def embed(texts: list[str], kind: str) -> np.ndarray:
        body = json.dumps(request_body(flavor, kind, texts, prefix[kind])).encode()
        status, payload = send(body)
        status, _, message = loadtest.check_response(status, payload, len(texts))
        if status != "200":
            raise UsageError(f"endpoint {head}: {status} {message}")
        return np.asarray(json.loads(payload), dtype=np.float32)

    instance = settings["instance"]
    return Candidate(name=options.get("name") or head, kind="endpoint", source=head, catalog_id=spec.id,
                     query_prefix=spec.query_prefix, passage_prefix=spec.passage_prefix,
                     where=f"endpoint {head} ({instance}, {flavor}" + (f", {args.endpoint_url})" if args.endpoint_url
                                                                      else f", {region or 'default region'})"),
                     embed=embed, count_tokens=count_tokens, concurrency=args.concurrency,
                     price=lambda tps: [pricing.instance(instance, tps, f"{instance} hourly price / tokens/s measured "
                                                         f"through the endpoint at concurrency {args.concurrency}")]
                     if tps > 0 else [])


def bedrock_candidate(value: str, args: argparse.Namespace, pricing: Pricing,
                      count_tokens: Callable[[list[str], str], list[int]]) -> Candidate:
    import boto3

    from semsearch import bedrock

    head, options = parse_spec(value, "--bedrock", ("dimension", "name"))
    try:
        dimension = bedrock.dimension_for(head, int(options["dimension"]) if "dimension" in options else None)
    except ValueError as e:  # BedrockModelError is one; int() of a bad dimension too
        raise UsageError(f"--bedrock {value!r}: {e}") from None
    client = boto3.client("bedrock-runtime", region_name=args.region, endpoint_url=args.bedrock_endpoint_url)

    def embed(texts: list[str], kind: str) -> np.ndarray:
        vectors = bedrock.embed_texts(head, texts, input_type=bedrock.input_type_for(kind), dimension=dimension,
                                      client=client)
        return np.asarray(vectors, dtype=np.float32)

    where = f"Amazon Bedrock ({args.bedrock_endpoint_url or client.meta.region_name})"
    notes = [] if _bedrock_price(pricing.prices, head) else [
        f"{head}: no Bedrock price in the price table ({', '.join(map(str, pricing.prices.files))})"]
    return Candidate(name=options.get("name") or f"{head} ({dimension})", kind="bedrock", source=head,
                     catalog_id=None, query_prefix="", passage_prefix="", where=where, embed=embed,
                     count_tokens=count_tokens, concurrency=args.concurrency, dimension=dimension,
                     price=lambda tps: pricing.bedrock(head), extra_notes=notes)


# ---------------------------------------------------------------------------------------
# Running one candidate


@dataclass
class Measured:
    vectors: dict[str, np.ndarray]
    seconds: float
    tokens: int
    latencies_ms: list[float]


def run_candidate(candidate: Candidate, texts: dict[str, list[str]], batch_size: int,
                  advance: Callable[[int], None]) -> Measured:
    """Embed every query and document in batches (timed, ``concurrency`` batches in flight)."""
    vectors: dict[str, np.ndarray] = {}
    latencies: list[float] = []
    tokens = 0
    seconds = 0.0
    for kind in ("query", "passage"):
        items = texts[kind]
        tokens += sum(candidate.count_tokens(items, kind))
        batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]

        def one(batch: list[str], kind: str = kind) -> tuple[np.ndarray, float]:
            started = time.perf_counter()
            out = candidate.embed(batch, kind)
            elapsed = (time.perf_counter() - started) * 1000
            advance(len(batch))
            return out, elapsed

        started = time.perf_counter()
        if candidate.concurrency > 1:
            with ThreadPoolExecutor(max_workers=candidate.concurrency) as pool:
                results = list(pool.map(one, batches))
        else:
            results = [one(b) for b in batches]
        seconds += time.perf_counter() - started
        vectors[kind] = np.concatenate([r[0] for r in results]) if results else np.zeros((0, 1), np.float32)
        latencies += [r[1] for r in results]
    return Measured(vectors, seconds, tokens, latencies)


def _percentile(values: list[float], q: float) -> float:
    # Nearest rank: every figure is a latency that happened.
    return float(np.percentile(values, q, method="inverted_cdf")) if values else float("nan")


def summarize(candidate: Candidate, measured: Measured, qrels: Any, batch_size: int, hnsw_m: int) -> dict[str, Any]:
    from training_code import retrieval

    metrics = retrieval.score_from_embeddings(measured.vectors["query"], measured.vectors["passage"], qrels)
    dimension = int(measured.vectors["passage"].shape[1])
    if candidate.dimension is not None and candidate.dimension != dimension:
        raise UsageError(f"{candidate.name}: vectors of dimension {dimension}, expected {candidate.dimension}")
    texts = len(qrels.queries) + len(qrels.documents)
    seconds = measured.seconds
    tokens_per_s = measured.tokens / seconds if seconds > 0 else 0.0
    return {
        "name": candidate.name, "kind": candidate.kind, "source": candidate.source,
        "catalog_id": candidate.catalog_id, "query_prefix": candidate.query_prefix,
        "passage_prefix": candidate.passage_prefix, "metrics": metrics, "dimension": dimension,
        "knn_memory_gib_per_million_docs": round(knn_memory_gib_per_million(dimension, hnsw_m), 3),
        "throughput": {
            "where": candidate.where, "texts": texts, "tokens": measured.tokens, "seconds": round(seconds, 3),
            "texts_per_s": round(texts / seconds, 2) if seconds > 0 else None,
            "tokens_per_s": round(tokens_per_s, 1), "batch_size": batch_size,
            "requests": len(measured.latencies_ms),
            "latency_ms": {"p50": round(_percentile(measured.latencies_ms, 50), 2),
                           "p95": round(_percentile(measured.latencies_ms, 95), 2),
                           "max": round(max(measured.latencies_ms), 2) if measured.latencies_ms else None}},
        "usd_per_million_tokens": [{"on": on, "usd": round(usd, 4), "source": source}
                                   for on, usd, source in candidate.price(tokens_per_s)],
    }


# ---------------------------------------------------------------------------------------
# Output


def _short_instance(name: str) -> str:
    return name.removeprefix("ml.")


def print_table(result: dict[str, Any], file: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from training_code.contract import METRIC_KEYS

    out = file or sys.stdout
    console = Console(file=out, width=None if out.isatty() else 200)
    data = result["data"]
    table = Table(title=f"{data['queries']} queries over {data['documents']} documents ({data['format']}"
                        f"{', split ' + data['split'] if data['split'] else ''})")
    table.add_column("candidate", no_wrap=True)
    for key in METRIC_KEYS:
        table.add_column(key, justify="right")
    for name in ("dim", "k-NN GiB/1M docs", "texts/s", "p50 ms", "p95 ms", "USD/1M tokens"):
        table.add_column(name, justify="right")
    best = {key: max(c["metrics"][key] for c in result["candidates"]) for key in METRIC_KEYS}
    for c in result["candidates"]:
        t = c["throughput"]
        cells = [f"[bold]{c['metrics'][k]:.4f}[/bold]" if c["metrics"][k] == best[k] and len(result["candidates"]) > 1
                 else f"{c['metrics'][k]:.4f}" for k in METRIC_KEYS]
        usd = "  ".join(f"{p['usd']:.4f} {_short_instance(p['on'])}" for p in c["usd_per_million_tokens"]) or "-"
        table.add_row(c["name"], *cells, str(c["dimension"]), f"{c['knn_memory_gib_per_million_docs']:.2f}",
                      f"{t['texts_per_s']:.1f}" if t["texts_per_s"] else "-", f"{t['latency_ms']['p50']:.0f}",
                      f"{t['latency_ms']['p95']:.0f}", usd)
    console.print(table)
    for c in result["candidates"]:
        console.print(f"{c['name']}: {c['throughput']['where']}; {c['throughput']['tokens_per_s']:,.0f} tokens/s")
    for note in result["notes"]:
        console.print(f"- {note}", highlight=False)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    markers = {"ml.c6i.xlarge": "o", "ml.g5.xlarge": "s", "bedrock": "^"}
    plotted = False
    for i, c in enumerate(result["candidates"]):
        color = f"C{i % 10}"
        for p in c["usd_per_million_tokens"]:
            if p["usd"] > 0:
                ax.scatter(p["usd"], c["metrics"]["ndcg@10"], color=color, marker=markers.get(p["on"], "D"), s=60,
                           label=f"{c['name']} on {_short_instance(p['on'])}")
                plotted = True
        if not c["usd_per_million_tokens"]:
            ax.axhline(c["metrics"]["ndcg@10"], color=color, linestyle=":", label=f"{c['name']} (no price)")
    if plotted:
        ax.set_xscale("log")
    ax.set(xlabel="USD per million tokens embedded (log scale)", ylabel="nDCG@10",
           title=f"quality vs cost: {result['data']['queries']} queries, {result['data']['documents']} documents")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# CLI


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="compare embedding models on your pairs: quality, speed, cost",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", metavar="PAIRS", required=True,
                   help="pairs (.jsonl / .json / .csv), or a BEIR folder (its qrels/test.tsv) or qrels/SPLIT.tsv file")
    p.add_argument("--model", action="append", default=[], metavar="DIR[,model=ID][,name=LABEL]",
                   help="a local sentence-transformers folder, or all-MiniLM-L6-v2 (packaged); repeatable")
    p.add_argument("--endpoint", action="append", default=[],
                   metavar="NAME[,flavor=F][,instance=T][,model=ID][,component=IC][,name=LABEL]",
                   help="a SageMaker endpoint (defaults from the --stage config); repeatable")
    p.add_argument("--bedrock", action="append", default=[], metavar="MODEL_ID[,dimension=N][,name=LABEL]",
                   help="an Amazon Bedrock embedding model; repeatable")
    p.add_argument("--json", action="store_true", help="print one JSON object (fields: see --help) instead of a table")
    p.add_argument("--plot", metavar="FILE.png", type=Path, help="write nDCG@10 against USD per 1M tokens here")
    p.add_argument("--batch-size", type=int, default=32, help="texts per model call / request (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=4,
                   help="requests in flight to an endpoint or Bedrock (default %(default)s)")
    p.add_argument("--stage", help="config stage whose connector endpoint gives --endpoint's defaults "
                   "(default: the first); with --remote, the deployed stage whose compare workflow runs it")
    p.add_argument("--remote", action="store_true",
                   help="run it as a SageMaker Processing job of --stage (--model candidates: folders, uploaded, "
                        "or s3:// URIs in the stage's bucket); see semsearch/compare_remote.py")
    p.add_argument("--region", help="AWS region of the endpoints and Bedrock (default: the stage's, else boto3's)")
    p.add_argument("--profile", help="AWS profile of a --remote run (default: the default chain)")
    p.add_argument("--endpoint-url", help="sagemaker-runtime URL (a local `semsearch serve` or the local stack)")
    p.add_argument("--bedrock-endpoint-url", help="bedrock-runtime URL (a stand-in)")
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer that counts an endpoint's or Bedrock's tokens "
                   "(default: the packaged all-MiniLM-L6-v2's)")
    p.add_argument("--hnsw-m", type=int, help="HNSW m of the k-NN memory estimate (default: the config's default)")
    p.add_argument("--prices", type=Path, metavar="FILE", help="price overrides, as for `semsearch cost`")
    p.add_argument("--throughput", type=Path, metavar="FILE", help="throughput table, as for `semsearch cost`")
    p.set_defaults(func=run)


def compare(args: argparse.Namespace, *, progress: bool) -> dict[str, Any]:
    """Build, run and score every candidate; the --json object."""
    from semsearch.evaluate import load_data_or_fail
    from stacks.config.schema import SearchConfig

    if not (args.model or args.endpoint or args.bedrock):
        raise UsageError("give at least one candidate: --model, --endpoint or --bedrock")
    for flag in ("batch_size", "concurrency", "hnsw_m"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    data = load_data_or_fail(args.pairs, "--pairs")
    hnsw_m = args.hnsw_m or SearchConfig.hnsw_m
    pricing = Pricing(args.prices, args.throughput)
    remote_counter: list[Callable[[list[str], str], list[int]]] = []

    def remote_tokens(texts: list[str], kind: str) -> list[int]:
        # The tokenizer loads on first use: local-only comparisons never need it.
        if not remote_counter:
            from semsearch.models import resolve_model_dir

            remote_counter.append(tokenizer_counter(resolve_model_dir(args.tokenizer, "--tokenizer")))
        return remote_counter[0](texts, kind)

    # Built lazily, one at a time: a local model's weights are loaded just before it runs.
    builders: list[tuple[str, Callable[[], Candidate]]] = []
    for value in args.model:
        builders.append((value, functools.partial(local_candidate, value, pricing, args.batch_size)))
    for value in args.endpoint:
        builders.append((value, functools.partial(endpoint_candidate, value, args, pricing, remote_tokens)))
    for value in args.bedrock:
        builders.append((value, functools.partial(bedrock_candidate, value, args, pricing, remote_tokens)))

    qrels = data.qrels
    texts = {"query": qrels.queries, "passage": qrels.documents}
    per_candidate = len(qrels.queries) + len(qrels.documents)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    rows, notes = [], list(pricing.notes)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), disable=not progress, transient=False) as bar:
        for value, build in builders:
            task = bar.add_task(f"{value}: loading", total=per_candidate)
            candidate = build()
            bar.update(task, description=candidate.name)
            measured = run_candidate(candidate, texts, args.batch_size, functools.partial(bar.advance, task))
            rows.append(summarize(candidate, measured, qrels, args.batch_size, hnsw_m))
            notes += candidate.extra_notes
    names = [r["name"] for r in rows]
    for r in rows:  # two candidates with the same label: make them tell apart
        if names.count(r["name"]) > 1:
            r["name"] = f"{r['name']} [{r['source']}]"
    notes.append(f"Prices: {pricing.prices.region} list prices as of {pricing.prices.as_of}; estimates, not a quote.")
    if data.dropped_queries:
        notes.append(f"{data.dropped_queries} queries of the split have no document judged relevant: not scored.")
    import torch

    from training_code.contract import METRIC_KEYS, PRIMARY_METRIC

    return {
        "schema_version": SCHEMA_VERSION, "data": data.describe(), "metric_keys": list(METRIC_KEYS),
        "primary_metric": PRIMARY_METRIC,
        "prices": {"as_of": pricing.prices.as_of, "region": pricing.prices.region,
                   "currency": pricing.prices.currency, "files": [str(f) for f in pricing.prices.files]},
        "knn_memory_formula": KNN_MEMORY_FORMULA, "hnsw_m": hnsw_m,
        "machine": {"cpu": cpu_name(), "cores": cpu_cores(), "device": "cuda" if torch.cuda.is_available() else "cpu"},
        "candidates": rows, "notes": notes,
    }


def run(args: argparse.Namespace) -> int:
    if args.remote:
        from semsearch import compare_remote

        result = compare_remote.run_remote(args)
    else:
        result = compare(args, progress=sys.stderr.isatty())
    if args.plot:
        plot(result, args.plot)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
        if args.plot:
            print(f"plot: {args.plot}")
    return 0
