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
from dataclasses import dataclass
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
# Written by `python -m bench.inference` (relative to the checkout, where the CLI runs like cdk does):
# a fresh measurement on the user's own machine wins.
BENCH_RESULTS = Path("bench") / "results" / "inference.json"
# Else the figures `python -m bench.inference --publish` copied here from a run of ours (its
# throughput list, labelled with the CPU and date), so a fresh clone or an installed CLI prices
# what we measured rather than an assumption.
PUBLISHED_MEASUREMENTS = PACKAGE_DIR / "measured_throughput.json"
# The GPU and the two CPU generations (without and with AMX) at 4 vCPUs; the throughput file may add more.
PER_MILLION_INSTANCES = ("ml.g5.xlarge", "ml.c6i.xlarge", "ml.c7i.xlarge")

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


def estimate_stage(stage: StageConfig, prices: PriceTable, throughput: Throughput | None = None) -> dict[str, Any]:
    """The monthly cost of one stage, resource by resource, and each endpoint's USD per 1M tokens
    at the measured speed of what it serves (``throughput``: default, the bench's and packaged figures)."""
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
    per_token = []
    if not stage.on_bedrock:
        per_token = stage_throughput(stage, prices, throughput or load_throughput_table())
    for row in per_token:
        serves = _serves(row["flavor"], row["mode"])
        if row["tokens_per_s"] is None:
            notes.append(f"endpoint {row['endpoint']} ({serves} on {row['instance_type']}): USD per 1M tokens "
                         f"{row['source']}.")
        else:
            notes.append(f"endpoint {row['endpoint']} ({serves} on {row['instance_type']}, {row['path']}): "
                         f"{row['usd_per_million_tokens']:.4f} USD per 1M tokens while kept busy, at "
                         f"{row['tokens_per_s']:,.0f} tokens/s ({row['source']}).")
    if jobs.training_use_spot:
        notes.append("jobs.training_use_spot is on: managed spot training usually costs less than the on-demand "
                     "figure shown.")
    return {"stage": stage.name, "region": prices.region, "currency": prices.currency, "as_of": prices.as_of,
            "monthly_usd": round(sum(i["monthly_usd"] for i in items), 2), "items": items, "notes": notes,
            "per_million_tokens": per_token}


# ---------------------------------------------------------------------------------------
# Cost per million tokens


def usd_per_million_tokens(usd_per_hour: float, tokens_per_s: float) -> float:
    """What embedding a million tokens costs on an instance kept busy at this throughput."""
    return usd_per_hour / (tokens_per_s * 3600) * 1e6


# What each CPU family's processor offers, of the instructions our serving paths' speed depends
# on (AWS's instance-type pages name the processor; the flags are the ones /proc/cpuinfo shows).
@dataclass(frozen=True)
class CpuFamily:
    cpu: str
    flags: frozenset[str]


_ICE_LAKE = CpuFamily("3rd gen Intel Xeon (Ice Lake)", frozenset({"avx512f", "avx512_vnni"}))
CPU_FAMILIES: Mapping[str, CpuFamily] = {
    "c7i": CpuFamily("4th gen Intel Xeon (Sapphire Rapids)",
                     frozenset({"avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"})),
    "c6i": _ICE_LAKE,
    "m6i": _ICE_LAKE,
    # Skylake or Cascade Lake, whichever the host is: only AVX-512 itself is certain (VNNI is not).
    "m5": CpuFamily("Intel Xeon (Skylake or Cascade Lake)", frozenset({"avx512f"})),
}
#: The flags each serving path's speed depends on: a figure measured on one CPU stands for
#: another CPU only where both have the same of these. ONNX Runtime's fp32 kernels use AVX-512
#: (AMX has no fp32); its int8 kernels AMX int8 where present, else VNNI; OpenVINO bf16 AMX or
#: AVX-512 bf16.
PATH_FLAGS: Mapping[str, frozenset[str]] = {
    "onnx fp32": frozenset({"avx512f"}),
    "tei onnx fp32": frozenset({"avx512f"}),
    "onnx int8": frozenset({"avx512_vnni", "amx_int8"}),
    "openvino bf16": frozenset({"avx512_bf16", "amx_bf16"}),
}
# inference_code.embedder's choice, kept here so that `semsearch cost` needs no torch (a test
# checks they agree): bf16 for exact mode where the CPU has bf16, for fast mode on AMX only.
EXACT_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
FAST_BF16_FLAGS = frozenset({"amx_bf16"})
#: What the per-million table lists for each instance: TEI (both default stages serve it), then
#: our handler in each mode.
SERVES: tuple[tuple[str, str | None], ...] = (("tei", None), ("custom", "exact"), ("custom", "fast"))
FLAVOR_MODES = {"tei": (None,), "custom": ("exact", "fast")}


def served_path(flavor: str, mode: str | None, flags: frozenset[str]) -> str:
    """The backend/precision a CPU with ``flags`` serves with: TEI's CPU image runs ONNX Runtime
    fp32 everywhere; our handler picks by mode and flags (inference_code.embedder.load_embedder)."""
    if flavor == "tei":
        return "tei onnx fp32"
    if mode == "fast":
        return "openvino bf16" if flags & FAST_BF16_FLAGS else "onnx int8"
    return "openvino bf16" if flags & EXACT_BF16_FLAGS else "onnx fp32"


def instance_family(instance_type: str) -> str:
    """``ml.c7i.xlarge`` -> ``c7i``."""
    parts = instance_type.split(".")
    return parts[1] if len(parts) == 3 else instance_type


@dataclass(frozen=True)
class MeasuredRow:
    """One row of the bench's ``throughput`` list: a flavor/mode measured on this CPU."""

    row: str
    flavor: str
    mode: str | None
    path: str
    tokens_per_s: float
    cores: int
    cpu: str
    cpu_flags: frozenset[str]


def _bad(where: str, field: str, value: Any, allowed: str) -> UsageError:
    return UsageError(f"{where}: bad {field} {value!r}; allowed: {allowed} (rerun `python -m bench.inference` "
                      "to write the file again)")


def read_bench(bench_file: Path) -> list[MeasuredRow]:
    """The measured rows of bench.inference's results; UsageError naming the file, row and field
    when one is not what the bench writes."""
    data = _read_json(bench_file, "bench results")
    rows = data.get("throughput")
    if not isinstance(rows, list):
        raise UsageError(f"{bench_file}: no 'throughput' list (written by an older bench.inference?); rerun "
                         "`python -m bench.inference` to write it")
    measured = []
    for i, row in enumerate(rows):
        where = f"{bench_file} throughput[{i}]"
        if not isinstance(row, Mapping):
            raise _bad(where, "row", row, "an object")
        flavor, mode = row.get("flavor"), row.get("mode")
        if flavor not in FLAVOR_MODES:
            raise _bad(where, "flavor", flavor, " or ".join(FLAVOR_MODES))
        if mode not in FLAVOR_MODES[flavor]:
            raise _bad(where, "mode", mode, f"for flavor {flavor} " +
                       " or ".join("null" if m is None else m for m in FLAVOR_MODES[flavor]))
        tps, cores = row.get("tokens_per_s"), row.get("cores")
        if isinstance(tps, bool) or not isinstance(tps, (int, float)) or tps <= 0:
            raise _bad(where, "tokens_per_s", tps, "a number > 0")
        if isinstance(cores, bool) or not isinstance(cores, int) or cores <= 0:
            raise _bad(where, "cores", cores, "an integer > 0")
        flags = row.get("cpu_flags")
        if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
            raise _bad(where, "cpu_flags", flags, "a list of /proc/cpuinfo flag names")
        for field in ("path", "cpu", "row"):
            if not isinstance(row.get(field), str) or not row[field]:
                raise _bad(where, field, row.get(field), "a non-empty string")
        measured.append(MeasuredRow(row=row["row"], flavor=flavor, mode=mode, path=row["path"],
                                    tokens_per_s=float(tps), cores=cores, cpu=row["cpu"], cpu_flags=frozenset(flags)))
    return measured


def _check_table(instances: Mapping[str, Any], source_file: Path) -> None:
    for name, row in instances.items():
        tps = row.get("tokens_per_s") if isinstance(row, Mapping) else None
        if isinstance(tps, bool) or not isinstance(tps, (int, float)) or tps <= 0:
            raise UsageError(f"throughput for {name!r} ({source_file}): bad tokens_per_s {tps!r}; "
                             "allowed: a number > 0")


class Throughput:
    """Tokens/s of each instance type for what it serves (flavor and mode), and where it came from.

    Precedence: an explicit --throughput file (its figures are TEI's, as the packaged table's);
    else, for a CPU family, the bench's row for the path that CPU serves with, where the bench's
    CPU has the same instructions for that path, scaled by vCPUs; else "not measured". The
    packaged table's labelled assumptions fill in where the bench cannot: GPUs, and any instance
    when the bench has not run (no bench/results/inference.json, e.g. outside the checkout).
    """

    def __init__(self, table: Mapping[str, Mapping[str, Any]], user: Mapping[str, Mapping[str, Any]],
                 measured: list[MeasuredRow] | None, bench_file: Path, notes: list[str]):
        self.table, self.user, self.measured, self.bench_file, self.notes = table, user, measured, bench_file, notes

    def instances(self) -> list[str]:
        """The instances the table lists by default, then those the throughput files add."""
        names = list(PER_MILLION_INSTANCES)
        for name in [*self.table, *self.user]:
            if name not in names:
                names.append(name)
        return names

    def figure(self, instance_type: str, flavor: str, mode: str | None) -> dict[str, Any]:
        """{instance_type, flavor, mode, path, tokens_per_s (None: not measured), source, measured_on}."""
        family = CPU_FAMILIES.get(instance_family(instance_type))
        path = served_path(flavor, mode, family.flags) if family else ("tei" if flavor == "tei" else None)
        row = {"instance_type": instance_type, "flavor": flavor, "mode": mode, "path": path, "tokens_per_s": None,
               "source": "", "measured_on": None}
        if flavor == "tei" and instance_type in self.user:
            return {**row, "tokens_per_s": float(self.user[instance_type]["tokens_per_s"]),
                    "source": str(self.user[instance_type].get("source", "unlabelled"))}
        if family is not None and self.measured is not None:
            assert path is not None
            return {**row, **self._derive(instance_type, family, flavor, mode, path)}
        if flavor == "tei" and instance_type in self.table:
            return {**row, "tokens_per_s": float(self.table[instance_type]["tokens_per_s"]),
                    "source": str(self.table[instance_type].get("source", "unlabelled"))}
        if family is None:
            why = "not measured: not a CPU family this machine's bench stands for (pass --throughput FILE)"
        else:
            why = f"not measured: no {self.bench_file} (run `python -m bench.inference`)"
        if flavor != "tei" and (instance_type in self.table or instance_type in self.user):
            why += "; the throughput table's figure is TEI's"
        return {**row, "source": why}

    def _derive(self, instance_type: str, family: CpuFamily, flavor: str, mode: str | None,
                path: str) -> dict[str, Any]:
        assert self.measured is not None
        name = instance_family(instance_type)
        serves = flavor if mode is None else f"{flavor} {mode}"
        # The row where the server picked its own path for that CPU (row "exact") before one where
        # the bench asked for a backend (row "exact:onnx"): the same path, as the handler runs it.
        rows = sorted((r for r in self.measured if r.flavor == flavor and r.mode == mode and r.path == path),
                      key=lambda r: ":" in r.row)
        if not rows:
            return {"source": f"not measured: {self.bench_file} has no row for {serves} on {path} (the path {name} "
                              "serves with)"}
        relevant = PATH_FLAGS.get(path, frozenset())
        for r in rows:
            if r.cpu_flags & relevant == family.flags & relevant:
                from stacks.catalog import INSTANCES

                vcpus = INSTANCES[instance_type].vcpus if instance_type in INSTANCES else None
                if vcpus is None:
                    return {"source": f"not measured: {instance_type} is not in the instance catalog (vCPUs unknown)"}
                same = ", ".join(sorted(family.flags & relevant)) or "none of " + ", ".join(sorted(relevant))
                return {"tokens_per_s": r.tokens_per_s * vcpus / r.cores, "measured_on": r.cpu,
                        "source": f"derived: {self.bench_file} row {r.row!r} ({path}) = {r.tokens_per_s:,.0f} "
                                  f"tokens/s on {r.cores} cores of {r.cpu} x {vcpus}/{r.cores} for {vcpus} vCPUs "
                                  f"(linear scaling assumed); {name} ({family.cpu}) has the same instructions this "
                                  f"path uses ({same})"}
        r = rows[0]
        here, there = sorted(r.cpu_flags & relevant), sorted(family.flags & relevant)
        return {"source": f"not measured: {path} ran here on {r.cpu} with {', '.join(here) or 'none of them'}; "
                          f"{name} ({family.cpu}) has {', '.join(there) or 'none of ' + ', '.join(sorted(relevant))}"}


def load_throughput_table(user_file: Path | None = None, bench_file: Path | None = None,
                          default: Path | None = None) -> Throughput:
    default = default or DEFAULT_THROUGHPUT
    if bench_file is None:
        bench_file = BENCH_RESULTS if BENCH_RESULTS.is_file() or not PUBLISHED_MEASUREMENTS.is_file() \
            else PUBLISHED_MEASUREMENTS
    table = dict(_read_json(default, "throughput").get("instances", {}))
    _check_table(table, default)
    user: dict[str, Any] = {}
    if user_file is not None:
        user = dict(_read_json(user_file, "throughput").get("instances", {}))
        _check_table(user, user_file)
    notes = []
    measured = None
    if bench_file.is_file():
        measured = read_bench(bench_file)
        published = ""
        if bench_file == PUBLISHED_MEASUREMENTS:
            # Named as in the checkout: the same text wherever the package is installed.
            published = (f" (published {_read_json(bench_file, 'bench results').get('measured_at', '?')} by "
                         "`python -m bench.inference --publish`; run `python -m bench.inference` to measure this "
                         "machine instead)")
            bench_file = Path(PACKAGE_DIR.name) / bench_file.name
        cpus = sorted({f"{r.cpu} ({', '.join(sorted(r.cpu_flags)) or 'no AVX-512'}) on {r.cores} cores"
                       for r in measured})
        notes.append(f"CPU figures from {bench_file}{published}, measured on {'; '.join(cpus) or 'no CPU'}; a CPU family "
                     "gets the figure of the path it serves with only where its CPU has the same instructions for "
                     "that path, else 'not measured'.")
    else:
        notes.append(f"no {bench_file}: the CPU figures are the packaged assumptions ({default.name}); run "
                     "`python -m bench.inference` in the checkout to measure them.")
    return Throughput(table, user, measured, bench_file, notes)


def load_throughput(user_file: Path | None = None, bench_file: Path | None = None,
                    default: Path | None = None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Throughput per instance for the TEI flavor (tokens_per_s, source), where there is a
    figure, and notes on how it was put together (see ``Throughput`` for where each comes from)."""
    throughput = load_throughput_table(user_file, bench_file, default)
    instances = {}
    for name in throughput.instances():
        row = throughput.figure(name, "tei", None)
        if row["tokens_per_s"] is not None:
            instances[name] = {"tokens_per_s": row["tokens_per_s"], "source": row["source"]}
    return instances, throughput.notes


def _serves(flavor: str, mode: str | None) -> str:
    return flavor if mode is None else f"{flavor} {mode}"


def per_million_table(prices: PriceTable, throughput: Throughput) -> dict[str, Any]:
    rows, not_measured = [], []
    for name in throughput.instances():
        usd_per_hour = prices.sagemaker("hosting", name)
        for flavor, mode in SERVES:
            figure = throughput.figure(name, flavor, mode)
            if figure["tokens_per_s"] is None:
                not_measured.append({**figure, "usd_per_hour": usd_per_hour})
                continue
            tps = figure["tokens_per_s"]
            rows.append({"instance_type": name, "usd_per_hour": usd_per_hour, "tokens_per_s": tps,
                         "usd_per_million_tokens": round(usd_per_million_tokens(usd_per_hour, tps), 4),
                         "source": figure["source"], "flavor": flavor, "mode": mode, "path": figure["path"],
                         "measured_on": figure["measured_on"]})
    # Bedrock bills per token: its figure holds at any load, an instance's only while kept busy.
    bedrock = [{"model_id": model_id, "usd_per_million_tokens": prices.bedrock(model_id),
                "source": f"price table: Amazon Bedrock on-demand input tokens, {prices.region} as of {prices.as_of}"}
               for model_id in prices.bedrock_models()]
    notes = [f"Estimates: SageMaker hosting and Amazon Bedrock list prices for {prices.region} as of "
             f"{prices.as_of}; instance throughput at saturation.",
             "An endpoint costs its hourly price whether busy or idle: these figures hold only while it is kept busy. "
             "Bedrock bills per token used.",
             "SERVES: tei = TEI's container (flavor tei, both default stages); custom exact/fast = our handler "
             "(flavor custom) in that SEMSEARCH_MODE.",
             *throughput.notes]
    return {"region": prices.region, "currency": prices.currency, "as_of": prices.as_of, "instances": rows,
            "not_measured": not_measured, "bedrock": bedrock, "notes": notes}


def stage_throughput(stage: StageConfig, prices: PriceTable, throughput: Throughput) -> list[dict[str, Any]]:
    """USD per 1M tokens of each endpoint, at the speed of what it serves (its flavor; our handler
    runs exact mode, the SEMSEARCH_MODE the stacks leave at its default)."""
    rows = []
    for name, ep in stage.endpoints.items():
        figure = throughput.figure(ep.instance_type, ep.flavor, None if ep.flavor == "tei" else "exact")
        tps = figure["tokens_per_s"]
        usd = None if tps is None else round(usd_per_million_tokens(prices.sagemaker("hosting", ep.instance_type),
                                                                    tps), 4)
        rows.append({"endpoint": name, **figure, "usd_per_million_tokens": usd})
    return rows


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
             f"{'INSTANCE':<18} {'SERVES':<13} {'PATH':<14} {'USD/HOUR':>9} {'TOKENS/S':>10} {'USD/1M TOKENS':>14}  "
             "SOURCE"]
    rows = [*table["instances"], *table.get("not_measured", [])]
    order = {name: i for i, name in enumerate(dict.fromkeys(r["instance_type"] for r in rows))}
    serves = {_serves(f, m): i for i, (f, m) in enumerate(SERVES)}
    rows.sort(key=lambda r: (order[r["instance_type"]], serves.get(_serves(r["flavor"], r["mode"]), len(serves))))
    for r in rows:
        measured = r["tokens_per_s"] is not None
        tps = f"{r['tokens_per_s']:>10,.0f}" if measured else f"{'-':>10}"
        usd = f"{r['usd_per_million_tokens']:>14.4f}" if measured else f"{'not measured':>14}"
        lines.append(f"{r['instance_type']:<18} {_serves(r['flavor'], r['mode']):<13} {r['path'] or '-':<14} "
                     f"{r['usd_per_hour']:>9.4f} {tps} {usd}  {r['source']}")
    if table.get("bedrock"):
        lines.append(f"{'BEDROCK MODEL':<57} {'':>10} {'USD/1M TOKENS':>14}  SOURCE")
        for r in table["bedrock"]:
            lines.append(f"{r['model_id']:<57} {'':>10} {r['usd_per_million_tokens']:>14.4f}  {r['source']}")
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
                   help="print USD per 1M tokens embedded for ml.g5.xlarge, ml.c6i.xlarge, ml.c7i.xlarge and the "
                        "throughput file's instances (TEI, and our handler in exact and fast mode, each at its "
                        "measured speed: bench/results/inference.json), and for the Amazon Bedrock models, instead "
                        "of a stage estimate")
    p.add_argument("--throughput", type=Path, metavar="FILE",
                   help="measured TEI throughput per instance (schema of semsearch/throughput.json); its figures "
                        "win over the bench's and the defaults")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.throughput is not None and not args.per_million_tokens:
        raise UsageError("--throughput is used only with --per-million-tokens")
    prices = load_prices(args.prices)

    if args.per_million_tokens:
        table = per_million_table(prices, load_throughput_table(args.throughput))
        print(json.dumps(table, indent=2) if args.json else format_per_million(table))
        return 0

    try:
        config = load_config(read_context(Path.cwd(), args.context, args.stage))
    except ConfigError as e:
        # Multi-line (one problem a line), so printed whole rather than as a UsageError.
        print(f"semsearch cost: {e}", file=sys.stderr)
        return 2
    throughput = load_throughput_table()
    estimates = [estimate_stage(stage, prices, throughput) for stage in config.stages]
    if args.json:
        print(json.dumps(estimates if args.stage == "all" else estimates[0], indent=2))
    else:
        print("\n\n".join(format_stage(e) for e in estimates))
        if len(estimates) > 1:
            total = round(sum(e["monthly_usd"] for e in estimates), 2)
            print(f"\nALL STAGES: {_money(total)} {prices.currency} a month (estimate)")
    return 0
