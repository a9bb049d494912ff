"""`semsearch cost`: estimated monthly cost of a stage, and USD per million tokens embedded.

Everything is computed from the validated stage config (read the way the CDK app reads it:
cdk.json's context plus ``-c key=value``) and a dated price table kept in the repository
(semsearch/prices.json), so a price or config change shows up as a reviewed diff of the
golden estimates. Figures are list-price estimates, never a quote.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from semsearch.errors import UsageError
from stacks.config import ConfigError, StageConfig, active_hours, deep_merge, load_config

# AWS bills a month as 730 hours (8,760 h / 12) in its price pages and calculator.
HOURS_PER_MONTH = 730.0
# Weekdays in that average month: 730 h / 24 h × 5/7 ≈ 21.7.
WEEKDAYS_PER_MONTH = HOURS_PER_MONTH / 24 * 5 / 7

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_PRICES = PACKAGE_DIR / "prices.json"
DEFAULT_THROUGHPUT = PACKAGE_DIR / "throughput.json"
# Written by `make bench` (relative to the checkout, where the CLI runs like cdk does).
BENCH_RESULTS = Path("bench") / "results" / "inference.json"
# The bench runs on 2 CPU cores; ml.c6i.xlarge has 4 vCPUs. Scaling linearly is an
# assumption (TEI on CPU parallelises a batch across cores), and the row says so.
BENCH_CORES = 2
BENCH_SCALED_INSTANCE = "ml.c6i.xlarge"
BENCH_SCALE = 2
# The two instances the g5-vs-c6i trade-off is about; the throughput file may add more.
PER_MILLION_INSTANCES = ("ml.g5.xlarge", "ml.c6i.xlarge")

NOT_INCLUDED = ("Not included: S3, data transfer, CloudWatch logs/metrics/alarms, KMS, Lambda, Step Functions, "
                "SageMaker ML storage volumes, tax; no Savings Plans or reserved-instance discounts.")


# ---------------------------------------------------------------------------------------
# Price table


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{what} file {str(path)!r} not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{what} file {path} is not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what} file {path}: expected a JSON object at the top level")
    return data


class PriceTable:
    """The packaged price table, optionally merged with an override file of the same schema."""

    def __init__(self, data: dict[str, Any], files: list[Path]):
        self.data = data
        self.files = files  # named in every "missing price" error so the fix is obvious

    @property
    def as_of(self) -> str:
        return str(self.data.get("as_of", "unknown"))

    @property
    def region(self) -> str:
        return str(self.data.get("region", "us-east-1"))

    @property
    def currency(self) -> str:
        return str(self.data.get("currency", "USD"))

    def _price(self, path: tuple[str, ...], what: str) -> float:
        node: Any = self.data
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        where = " merged with ".join(str(f) for f in self.files)
        if node is None:
            raise UsageError(f"no {what} in the price table {where} (looked for {'.'.join(path)}); "
                             "add it there or pass --prices FILE with it")
        if isinstance(node, bool) or not isinstance(node, (int, float)) or node < 0:
            raise UsageError(f"bad {what} {node!r} in the price table {where} ({'.'.join(path)}); "
                             "allowed: a number >= 0 (USD)")
        return float(node)

    def sagemaker(self, use: str, instance_type: str) -> float:
        """USD/hour of a SageMaker instance for one use: hosting, training or transform."""
        return self._price(("sagemaker", use, instance_type), f"SageMaker {use} price for {instance_type!r}")

    def opensearch(self, instance_type: str) -> float:
        return self._price(("opensearch", "instances", instance_type),
                           f"OpenSearch price for {instance_type!r}")

    def gp3_gib_month(self) -> float:
        return self._price(("opensearch", "gp3_gib_month"), "OpenSearch gp3 storage price")

    def bedrock(self, model_id: str) -> float:
        """USD per million input tokens of an Amazon Bedrock embedding model (on demand)."""
        return self._price(("bedrock", "usd_per_million_input_tokens", model_id),
                           f"Amazon Bedrock price for {model_id!r}")

    def bedrock_models(self) -> list[str]:
        node = self.data.get("bedrock", {}).get("usd_per_million_input_tokens", {})
        return list(node) if isinstance(node, Mapping) else []


def load_prices(override: Path | None = None, default: Path | None = None) -> PriceTable:
    default = default or DEFAULT_PRICES
    data = _read_json(default, "price table")
    files = [default]
    if override is not None:
        deep_merge(data, _read_json(override, "price"))
        files.append(override)
    return PriceTable(data, files)


# ---------------------------------------------------------------------------------------
# Stage estimate


def _item(resource: str, kind: str, instance_type: str, count: int, hours: float | None, unit: str,
          unit_usd: float, assumption: str) -> dict[str, Any]:
    # Hours are rounded first so that count × hours × unit_usd, as printed, gives the line.
    hours = None if hours is None else round(hours, 2)
    quantity = count * (hours if hours is not None else 1.0)
    return {"resource": resource, "kind": kind, "instance_type": instance_type, "count": count, "hours": hours,
            "unit": unit, "unit_usd": unit_usd, "monthly_usd": round(quantity * unit_usd, 2),
            "assumption": assumption}


def endpoint_hours(stage: StageConfig) -> tuple[float, str]:
    """Hours a month each endpoint instance runs, and why."""
    window = active_hours(stage.ops.active_hours_utc)  # already validated by load_config
    if window is None:
        return HOURS_PER_MONTH, f"always on, {HOURS_PER_MONTH:.0f} h/month"
    start, end = window
    return ((end - start) * WEEKDAYS_PER_MONTH,
            f"weekdays {start:02d}-{end:02d} UTC only (ops.active_hours_utc): {end - start} h x "
            f"{WEEKDAYS_PER_MONTH:.1f} weekdays; scaled to zero outside")


def estimate_stage(stage: StageConfig, prices: PriceTable) -> dict[str, Any]:
    """The monthly cost of one stage, resource by resource."""
    items = []
    hours, why = endpoint_hours(stage)
    for name, ep in stage.endpoints.items():
        items.append(_item(f"endpoint {name}", "sagemaker-hosting", ep.instance_type, ep.initial_instance_count,
                           hours, "instance-hour", prices.sagemaker("hosting", ep.instance_type),
                           f"initial_instance_count as steady state; {why}"))

    search = stage.search
    items.append(_item("opensearch data nodes", "opensearch-instance", search.data_node_type,
                       search.data_node_count, HOURS_PER_MONTH, "instance-hour",
                       prices.opensearch(search.data_node_type), f"always on, {HOURS_PER_MONTH:.0f} h/month"))
    if search.dedicated_master_count:
        items.append(_item("opensearch dedicated masters", "opensearch-instance", search.dedicated_master_type,
                           search.dedicated_master_count, HOURS_PER_MONTH, "instance-hour",
                           prices.opensearch(search.dedicated_master_type),
                           f"always on, {HOURS_PER_MONTH:.0f} h/month"))
    items.append(_item("opensearch storage", "opensearch-storage", "gp3",
                       search.data_node_count * search.volume_size_gib, None, "GiB-month", prices.gp3_gib_month(),
                       f"{search.data_node_count} data node(s) x {search.volume_size_gib} GiB gp3"))

    jobs = stage.jobs
    items.append(_item("training jobs", "sagemaker-training", jobs.training_instance_type, 1,
                       jobs.training_hours_per_month, "instance-hour",
                       prices.sagemaker("training", jobs.training_instance_type),
                       f"jobs.training_hours_per_month = {jobs.training_hours_per_month:g} h on one instance"))
    items.append(_item("batch transform", "sagemaker-transform", jobs.transform_instance_type,
                       jobs.transform_instance_count, jobs.transform_hours_per_month, "instance-hour",
                       prices.sagemaker("transform", jobs.transform_instance_type),
                       f"jobs.transform_hours_per_month = {jobs.transform_hours_per_month:g} h x "
                       f"transform_instance_count {jobs.transform_instance_count}"))

    notes = [f"Estimates from on-demand list prices for {prices.region} as of {prices.as_of} "
             f"({', '.join(f.name for f in prices.files)}); not a quote.",
             NOT_INCLUDED]
    for name, ep in stage.endpoints.items():
        if ep.max_capacity > ep.initial_instance_count:
            extra = (ep.max_capacity - ep.initial_instance_count) * prices.sagemaker("hosting", ep.instance_type)
            notes.append(f"endpoint {name} autoscales up to {ep.max_capacity} instances: each hour at the maximum "
                         f"adds {extra:.2f} USD.")
    if stage.region and stage.region != prices.region:
        notes.append(f"stage region {stage.region} differs from the price table's {prices.region}; "
                     "prices there may differ.")
    if stage.on_bedrock:
        assert stage.bedrock is not None
        notes.append(f"search.provider is bedrock: {stage.bedrock.model_id} embeds for the index at "
                     f"{prices.bedrock(stage.bedrock.model_id):g} USD per 1M input tokens, billed per use and not in "
                     "the monthly total (semsearch cost --per-million-tokens compares it with the instances).")
    if jobs.training_use_spot:
        notes.append("jobs.training_use_spot is on: managed spot training usually costs less than the on-demand "
                     "figure shown.")
    return {"stage": stage.name, "region": prices.region, "currency": prices.currency, "as_of": prices.as_of,
            "monthly_usd": round(sum(i["monthly_usd"] for i in items), 2), "items": items, "notes": notes}


# ---------------------------------------------------------------------------------------
# Cost per million tokens


def usd_per_million_tokens(usd_per_hour: float, tokens_per_s: float) -> float:
    """What embedding a million tokens costs on an instance kept busy at this throughput."""
    return usd_per_hour / (tokens_per_s * 3600) * 1e6


def _bench_tokens_per_s(data: Any, path: str = "") -> list[tuple[str, float]]:
    """Every numeric ``tokens_per_s`` in the bench results, with where it sits."""
    found: list[tuple[str, float]] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            here = f"{path}.{key}" if path else str(key)
            if key == "tokens_per_s" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and value > 0:
                found.append((here, float(value)))
            else:
                found.extend(_bench_tokens_per_s(value, here))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found.extend(_bench_tokens_per_s(value, f"{path}[{i}]"))
    return found


def load_throughput(user_file: Path | None = None, bench_file: Path | None = None,
                    default: Path | None = None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Throughput per instance (tokens_per_s, source), and notes on how it was put together.

    Precedence: the packaged assumptions, then the figure derived from our own CPU bench
    (if it has run), then an explicit --throughput file, which always wins.
    """
    default = default or DEFAULT_THROUGHPUT
    bench_file = bench_file or BENCH_RESULTS
    instances: dict[str, dict[str, Any]] = dict(_read_json(default, "throughput").get("instances", {}))
    notes: list[str] = []
    if bench_file.is_file():
        try:
            figures = _bench_tokens_per_s(json.loads(bench_file.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            figures = []
            notes.append(f"{bench_file} is not readable JSON ({e}); kept the {BENCH_SCALED_INSTANCE} assumption.")
        if figures:
            # The best figure: the bench's sweep includes small batches that do not saturate.
            where, best = max(figures, key=lambda f: f[1])
            instances[BENCH_SCALED_INSTANCE] = {
                "tokens_per_s": best * BENCH_SCALE,
                "source": f"derived: {bench_file} {where} = {best:g} tokens/s on {BENCH_CORES} CPU cores, "
                          f"x{BENCH_SCALE} for 4 vCPUs (linear scaling assumed)"}
        elif not notes:
            notes.append(f"{bench_file} has no tokens_per_s figure; kept the {BENCH_SCALED_INSTANCE} assumption.")
    if user_file is not None:
        instances.update(_read_json(user_file, "throughput").get("instances", {}))
    source_file = user_file or default
    for name, row in instances.items():
        tps = row.get("tokens_per_s") if isinstance(row, Mapping) else None
        if isinstance(tps, bool) or not isinstance(tps, (int, float)) or tps <= 0:
            raise UsageError(f"throughput for {name!r} ({source_file}): bad tokens_per_s {tps!r}; "
                             "allowed: a number > 0")
    return instances, notes


def per_million_table(prices: PriceTable, throughput: Mapping[str, Mapping[str, Any]],
                      notes: list[str]) -> dict[str, Any]:
    names = list(PER_MILLION_INSTANCES) + [n for n in throughput if n not in PER_MILLION_INSTANCES]
    rows = []
    for name in names:
        if name not in throughput:
            raise UsageError(f"no throughput figure for {name!r}; add it to the --throughput file")
        usd_per_hour = prices.sagemaker("hosting", name)
        tps = float(throughput[name]["tokens_per_s"])
        rows.append({"instance_type": name, "usd_per_hour": usd_per_hour, "tokens_per_s": tps,
                     "usd_per_million_tokens": round(usd_per_million_tokens(usd_per_hour, tps), 4),
                     "source": str(throughput[name].get("source", "unlabelled"))})
    # Bedrock bills per token: its figure holds at any load, an instance's only while kept busy.
    bedrock = [{"model_id": model_id, "usd_per_million_tokens": prices.bedrock(model_id),
                "source": f"price table: Amazon Bedrock on-demand input tokens, {prices.region} as of {prices.as_of}"}
               for model_id in prices.bedrock_models()]
    notes = [f"Estimates: SageMaker hosting and Amazon Bedrock list prices for {prices.region} as of "
             f"{prices.as_of}; instance throughput at saturation.",
             "An endpoint costs its hourly price whether busy or idle: these figures hold only while it is kept busy. "
             "Bedrock bills per token used.",
             *notes]
    return {"region": prices.region, "currency": prices.currency, "as_of": prices.as_of, "instances": rows,
            "bedrock": bedrock, "notes": notes}


# ---------------------------------------------------------------------------------------
# Config, the way the CDK app reads it


def read_context(app_dir: Path, overrides: list[str], stage: str) -> dict[str, Any]:
    """cdk.json's context with ``-c key=value`` applied, as `cdk synth -c` would pass it."""
    path = app_dir / "cdk.json"
    if not path.is_file():
        raise UsageError(f"{path} not found; run `semsearch cost` from the CDK app's directory")
    try:
        context = dict(json.loads(path.read_text()).get("context", {}))
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not valid JSON ({e})") from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"-c {item!r}: expected key=value, e.g. -c dev.endpoints.cpu.initial_instance_count=3")
        if key == "stage":
            raise UsageError("pick the stage with --stage, not -c stage=...")
        context[key] = value  # a string, like the CDK CLI's; load_config reads JSON literals
    context["stage"] = stage
    return context


# ---------------------------------------------------------------------------------------
# Output


def _money(value: float) -> str:
    return f"{value:,.2f}"


def format_stage(estimate: Mapping[str, Any]) -> str:
    lines = [f"{estimate['stage']}: estimated monthly cost, {estimate['currency']} "
             f"({estimate['region']} on-demand prices as of {estimate['as_of']})",
             f"{'RESOURCE':<30} {'TYPE':<18} {'COUNT':>8} {'HOURS':>8} {'UNIT USD':>9} {'MONTHLY USD':>12}  ASSUMPTION"]
    for i in estimate["items"]:
        count = f"{i['count']} GiB" if i["unit"] == "GiB-month" else str(i["count"])
        hours = "-" if i["hours"] is None else f"{i['hours']:.2f}"
        lines.append(f"{i['resource']:<30} {i['instance_type']:<18} {count:>8} {hours:>8} {i['unit_usd']:>9.4f} "
                     f"{_money(i['monthly_usd']):>12}  {i['assumption']}")
    lines.append(f"{'TOTAL':<30} {'':<18} {'':>8} {'':>8} {'':>9} {_money(estimate['monthly_usd']):>12}")
    lines += ["notes:"] + [f"  - {n}" for n in estimate["notes"]]
    return "\n".join(lines)


def format_per_million(table: Mapping[str, Any]) -> str:
    lines = [f"USD per 1M tokens embedded ({table['region']} SageMaker hosting prices as of {table['as_of']})",
             f"{'INSTANCE':<18} {'USD/HOUR':>9} {'TOKENS/S':>10} {'USD/1M TOKENS':>14}  SOURCE"]
    for r in table["instances"]:
        lines.append(f"{r['instance_type']:<18} {r['usd_per_hour']:>9.4f} {r['tokens_per_s']:>10,.0f} "
                     f"{r['usd_per_million_tokens']:>14.4f}  {r['source']}")
    if table.get("bedrock"):
        lines.append(f"{'BEDROCK MODEL':<29} {'':>10} {'USD/1M TOKENS':>14}  SOURCE")
        for r in table["bedrock"]:
            lines.append(f"{r['model_id']:<29} {'':>10} {r['usd_per_million_tokens']:>14.4f}  {r['source']}")
    lines += ["notes:"] + [f"  - {n}" for n in table["notes"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# CLI


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "cost", help="estimated monthly cost of a stage, or USD per 1M tokens embedded",
        description="Estimate a stage's monthly AWS cost resource by resource from the config (cdk.json + -c) "
                    "and the dated price table semsearch/prices.json. Figures are list-price estimates.")
    p.add_argument("--stage", default="dev", help="dev (default), prod, or all")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--prices", type=Path, metavar="FILE",
                   help="JSON price overrides, same schema as semsearch/prices.json, merged over it")
    p.add_argument("-c", "--context", dest="context", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, as for `cdk synth -c` (e.g. dev.endpoints.cpu.initial_instance_count=3)")
    p.add_argument("--per-million-tokens", action="store_true",
                   help="print USD per 1M tokens embedded for ml.g5.xlarge, ml.c6i.xlarge and the throughput file's "
                        "instances, and for the Amazon Bedrock models, instead of a stage estimate")
    p.add_argument("--throughput", type=Path, metavar="FILE",
                   help="measured throughput (schema of semsearch/throughput.json), merged over the defaults")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.throughput is not None and not args.per_million_tokens:
        raise UsageError("--throughput is used only with --per-million-tokens")
    prices = load_prices(args.prices)

    if args.per_million_tokens:
        throughput, notes = load_throughput(args.throughput)
        table = per_million_table(prices, throughput, notes)
        print(json.dumps(table, indent=2) if args.json else format_per_million(table))
        return 0

    try:
        config = load_config(read_context(Path.cwd(), args.context, args.stage))
    except ConfigError as e:
        # Multi-line (one problem a line), so printed whole rather than as a UsageError.
        print(f"semsearch cost: {e}", file=sys.stderr)
        return 2
    estimates = [estimate_stage(stage, prices) for stage in config.stages]
    if args.json:
        print(json.dumps(estimates if args.stage == "all" else estimates[0], indent=2))
    else:
        print("\n\n".join(format_stage(e) for e in estimates))
        if len(estimates) > 1:
            total = round(sum(e["monthly_usd"] for e in estimates), 2)
            print(f"\nALL STAGES: {_money(total)} {prices.currency} a month (estimate)")
    return 0
