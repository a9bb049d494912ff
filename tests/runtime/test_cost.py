"""`semsearch cost`: golden estimates, the per-million-tokens arithmetic, overrides and exit codes.

The golden files are the default dev and prod estimates computed from semsearch/prices.json
and cdk.json. A price or config change makes these tests fail until the golden files are
regenerated (SEMSEARCH_UPDATE_GOLDEN=1 pytest tests/runtime/test_cost.py) and the diff is
reviewed with the change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from semsearch import cost
from semsearch.cli import main
from stacks.catalog import INSTANCES
from stacks.config import SEARCH_INSTANCE_TYPES

REPO_ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture
def in_repo(monkeypatch, tmp_path):
    # Like cdk, the CLI reads cdk.json from the working directory. A developer's own
    # bench/results/inference.json would win over the published figures: the golden files
    # are computed from the published ones.
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(cost, "BENCH_RESULTS", tmp_path / "no-bench-results.json")


@pytest.fixture
def in_empty_dir(monkeypatch, tmp_path):
    # No cdk.json, no bench results and no published measurements: the packaged throughput
    # assumptions only (tests that want measurements write them).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cost, "PUBLISHED_MEASUREMENTS", tmp_path / "no-published-measurements.json")
    return tmp_path


def run_json(capsys, *argv: str):
    capsys.readouterr()
    assert main(["cost", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def run_failing(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert main(["cost", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def item(estimate: dict, resource: str) -> dict:
    return next(i for i in estimate["items"] if i["resource"] == resource)


# ---------------------------------------------------------------------------------------
# Golden estimates


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_default_estimate_matches_golden(stage, in_repo, capsys):
    estimate = run_json(capsys, "--stage", stage)
    golden = GOLDEN / f"cost-{stage}.json"
    if os.environ.get("SEMSEARCH_UPDATE_GOLDEN") == "1":
        golden.write_text(json.dumps(estimate, indent=2) + "\n")
    assert estimate == json.loads(golden.read_text())


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_line_and_the_total_add_up(stage, in_repo, capsys):
    estimate = run_json(capsys, "--stage", stage)
    assert (estimate["currency"], estimate["region"]) == ("USD", "us-east-1")
    for i in estimate["items"]:
        quantity = i["count"] * (1 if i["hours"] is None else i["hours"])
        assert i["monthly_usd"] == round(quantity * i["unit_usd"], 2), i
        assert i["assumption"]
    assert estimate["monthly_usd"] == round(sum(i["monthly_usd"] for i in estimate["items"]), 2)
    assert any("not a quote" in n for n in estimate["notes"])


def test_dev_default_figures_by_hand(in_repo, capsys):
    dev = run_json(capsys)  # --stage defaults to dev
    assert dev["stage"] == "dev"
    assert item(dev, "endpoint cpu") | {"assumption": ""} == {
        "resource": "endpoint cpu", "kind": "sagemaker-hosting", "instance_type": "ml.c6i.xlarge", "count": 1,
        "hours": 730.0, "unit": "instance-hour", "unit_usd": 0.204, "monthly_usd": 148.92, "assumption": ""}
    assert item(dev, "opensearch data nodes")["monthly_usd"] == round(730 * 0.073, 2)
    assert item(dev, "opensearch storage")["count"] == 20  # GiB: 1 node × 20 GiB
    assert item(dev, "training jobs")["monthly_usd"] == round(2 * 1.408, 2)
    assert item(dev, "batch transform")["monthly_usd"] == round(4 * 0.204, 2)
    assert "opensearch dedicated masters" not in {i["resource"] for i in dev["items"]}


def test_prod_counts_dedicated_masters_and_storage_per_node(in_repo, capsys):
    prod = run_json(capsys, "--stage", "prod")
    assert item(prod, "endpoint gpu")["monthly_usd"] == round(2 * 730 * 1.408, 2)
    masters = item(prod, "opensearch dedicated masters")
    assert (masters["instance_type"], masters["count"]) == ("m6g.large.search", 3)
    assert item(prod, "opensearch storage")["count"] == 300  # 3 data nodes × 100 GiB


def test_stage_all_gives_every_stage(in_repo, capsys):
    estimates = run_json(capsys, "--stage", "all")
    assert [e["stage"] for e in estimates] == ["dev", "prod"]
    capsys.readouterr()
    assert main(["cost", "--stage", "all"]) == 0
    out = capsys.readouterr().out
    total = sum(e["monthly_usd"] for e in estimates)
    assert f"ALL STAGES: {total:,.2f} USD" in out


def test_text_output_is_a_table_with_a_total_and_says_estimate(in_repo, capsys):
    assert main(["cost"]) == 0
    out = capsys.readouterr().out
    assert "estimated monthly cost" in out
    assert "ml.c6i.xlarge" in out and "t3.medium.search" in out
    golden = json.loads((GOLDEN / "cost-dev.json").read_text())
    total_line = next(line for line in out.splitlines() if line.startswith("TOTAL"))
    assert total_line.split()[-1] == f"{golden['monthly_usd']:,.2f}"


# ---------------------------------------------------------------------------------------
# Config overrides (-c), as for `cdk synth -c`


def test_c_override_changes_the_instance_count(in_repo, capsys):
    dev = run_json(capsys, "-c", "dev.endpoints.cpu.initial_instance_count=2")
    endpoint = item(dev, "endpoint cpu")
    assert endpoint["count"] == 2
    assert endpoint["monthly_usd"] == round(2 * 730 * 0.204, 2)


def test_active_hours_count_weekday_hours_only(in_repo, capsys):
    dev = run_json(capsys, "-c", "dev.ops.active_hours_utc=07-19")
    endpoint = item(dev, "endpoint cpu")
    weekdays = 730 / 24 * 5 / 7
    assert endpoint["hours"] == round(12 * weekdays, 2) == 260.71
    assert endpoint["monthly_usd"] == round(260.71 * 0.204, 2)
    assert "07-19" in endpoint["assumption"]
    # The domain does not follow the endpoint schedule.
    assert item(dev, "opensearch data nodes")["hours"] == 730.0


def test_jobs_hours_come_from_config(in_repo, capsys):
    dev = run_json(capsys, "-c", "dev.jobs.transform_hours_per_month=10", "-c", "dev.jobs.transform_instance_count=3",
                   "-c", "dev.jobs.training_instance_type=ml.g5.2xlarge")
    transform = item(dev, "batch transform")
    assert (transform["count"], transform["hours"], transform["monthly_usd"]) == (3, 10.0, round(30 * 0.204, 2))
    assert item(dev, "training jobs")["unit_usd"] == 1.515


def test_bad_schedule_is_a_config_error(in_repo, capsys):
    err = run_failing(capsys, "-c", "dev.ops.active_hours_utc=19-07")
    assert "stages.dev.ops.active_hours_utc" in err and "'19-07'" in err


def test_every_config_problem_is_printed(in_repo, capsys):
    err = run_failing(capsys, "-c", "dev.endpoints.cpu.instance_type=ml.p9.huge", "-c", "dev.search.data_node_count=0")
    assert "stages.dev.endpoints.cpu.instance_type" in err
    assert "stages.dev.search.data_node_count" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["-c", "no-equals-sign"], "expected key=value"),
    (["-c", "stage=prod"], "--stage"),
    (["--stage", "qa"], "unknown stage 'qa'"),
    (["--throughput", "t.json"], "--per-million-tokens"),
    (["--prices", "missing.json"], "'missing.json' not found"),
])
def test_usage_errors_exit_2_with_one_clear_line(argv, message, in_repo, capsys):
    err = run_failing(capsys, *argv)
    assert message in err


def test_outside_the_app_directory_names_the_missing_cdk_json(in_empty_dir, capsys):
    err = run_failing(capsys)
    assert "cdk.json not found" in err


# ---------------------------------------------------------------------------------------
# Price table and overrides


def test_packaged_table_prices_every_allowed_instance_type():
    prices = cost.load_prices()
    for use in ("hosting", "training", "transform"):
        for name in INSTANCES:
            assert prices.sagemaker(use, name) > 0
    for name in SEARCH_INSTANCE_TYPES:
        assert prices.opensearch(name) > 0
    assert prices.gp3_gib_month() > 0
    data = json.loads(cost.DEFAULT_PRICES.read_text())
    assert data["as_of"] and data["source"] and data["region"] == "us-east-1"
    # The figures the trade-off rests on.
    assert prices.sagemaker("hosting", "ml.c6i.xlarge") == 0.204
    assert prices.sagemaker("hosting", "ml.g5.xlarge") == 1.408


def test_prices_file_is_merged_over_the_defaults(in_repo, capsys, tmp_path):
    override = tmp_path / "negotiated.json"
    override.write_text(json.dumps({"as_of": "2030-01-01", "sagemaker": {"hosting": {"ml.c6i.xlarge": 0.5}}}))
    dev = run_json(capsys, "--prices", str(override))
    assert item(dev, "endpoint cpu")["unit_usd"] == 0.5
    assert item(dev, "endpoint cpu")["monthly_usd"] == 365.0
    # Only what the file names changes: transform has its own price, still the default.
    assert item(dev, "batch transform")["unit_usd"] == 0.204
    assert item(dev, "opensearch data nodes")["unit_usd"] == 0.073
    assert dev["as_of"] == "2030-01-01"
    assert any("negotiated.json" in n for n in dev["notes"])


def test_instance_type_missing_from_the_table_names_it_and_the_file(in_repo, capsys, tmp_path, monkeypatch):
    table = json.loads(cost.DEFAULT_PRICES.read_text())
    del table["sagemaker"]["hosting"]["ml.c6i.xlarge"]
    trimmed = tmp_path / "prices.json"
    trimmed.write_text(json.dumps(table))
    monkeypatch.setattr(cost, "DEFAULT_PRICES", trimmed)
    err = run_failing(capsys)
    assert "'ml.c6i.xlarge'" in err and "SageMaker hosting" in err
    assert str(trimmed) in err


def test_a_non_numeric_price_is_rejected(in_repo, capsys, tmp_path):
    override = tmp_path / "p.json"
    override.write_text(json.dumps({"opensearch": {"instances": {"t3.medium.search": "cheap"}}}))
    err = run_failing(capsys, "--prices", str(override))
    assert "t3.medium.search" in err and "'cheap'" in err


# ---------------------------------------------------------------------------------------
# USD per million tokens


def test_per_million_tokens_arithmetic():
    # 1M tokens at 33,000 tokens/s take 30.3 s; 30.3 s of 1.408 USD/h is 0.01185 USD.
    assert cost.usd_per_million_tokens(1.408, 33_000) == pytest.approx(1.408 / 118.8)
    assert cost.usd_per_million_tokens(0.204, 2_000) == pytest.approx(0.204 / 7.2)
    assert cost.usd_per_million_tokens(3600, 1_000_000) == pytest.approx(1.0)


def tei_rows(table: dict) -> dict:
    return {r["instance_type"]: r for r in table["instances"] if r["flavor"] == "tei"}


def test_per_million_tokens_defaults_are_labelled_assumptions(in_empty_dir, capsys):
    table = run_json(capsys, "--per-million-tokens")
    rows = tei_rows(table)
    assert list(rows) == ["ml.g5.xlarge", "ml.c6i.xlarge"]
    assert rows["ml.g5.xlarge"]["tokens_per_s"] == 33_000
    assert rows["ml.g5.xlarge"]["usd_per_million_tokens"] == 0.0119
    assert rows["ml.g5.xlarge"]["source"].startswith("assumption: public TEI figure, A10G")
    assert rows["ml.c6i.xlarge"]["tokens_per_s"] == 2_000
    assert rows["ml.c6i.xlarge"]["usd_per_million_tokens"] == 0.0283
    assert rows["ml.c6i.xlarge"]["source"].startswith("assumption")
    # Without the bench, nothing else has a figure, and the table says why.
    assert [r["flavor"] for r in table["instances"]] == ["tei", "tei"]
    missing = {(r["instance_type"], r["flavor"], r["mode"]): r["source"] for r in table["not_measured"]}
    assert missing[("ml.c7i.xlarge", "tei", None)].startswith("not measured: no bench/results/inference.json")
    assert "figure is TEI's" in missing[("ml.c6i.xlarge", "custom", "exact")]
    assert any("no bench/results/inference.json" in n for n in table["notes"])


# A bench run on this machine's kind of CPU (AMX) and on an Ice Lake one, as bench.inference writes them.
AMX = ["avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]
ICE_LAKE = ["avx512f", "avx512_vnni"]


def bench_rows(flags: list[str], cpu: str = "Intel(R) Xeon(R) Processor") -> list[dict]:
    def row(name, flavor, mode, path, tps):
        return {"row": name, "flavor": flavor, "mode": mode, "path": path, "tokens_per_s": tps,
                "texts_per_s": tps / 60, "ratio_vs_baseline": 1.0, "cores": 2, "cpu": cpu, "cpu_flags": flags}

    fast_path = "openvino bf16" if "amx_bf16" in flags else "onnx int8"
    exact_path = "openvino bf16" if "avx512_bf16" in flags else "onnx fp32"
    return [row("exact:onnx", "custom", "exact", "onnx fp32", 4000.0),
            row("exact", "custom", "exact", exact_path, 8000.0 if exact_path != "onnx fp32" else 4100.0),
            row("fast:onnx", "custom", "fast", "onnx int8", 7000.0),
            row("fast", "custom", "fast", fast_path, 9000.0 if fast_path != "onnx int8" else 7100.0),
            row("tei", "tei", None, "tei onnx fp32", 2000.0)]


def write_bench(directory: Path, rows) -> Path:
    bench = directory / "bench" / "results" / "inference.json"
    bench.parent.mkdir(parents=True, exist_ok=True)
    bench.write_text(json.dumps({"machine": {"cpus": 2}, "throughput": rows}))
    return bench


def figures(table: dict) -> dict:
    """(instance, serves) -> tokens/s, None where not measured."""
    out = {(r["instance_type"], cost._serves(r["flavor"], r["mode"])): r["tokens_per_s"] for r in table["instances"]}
    out.update({(r["instance_type"], cost._serves(r["flavor"], r["mode"])): None for r in table["not_measured"]})
    return out


def test_amx_measurements_map_to_c7i_and_what_ice_lake_would_run_to_c6i(in_empty_dir, capsys):
    write_bench(in_empty_dir, bench_rows(AMX))
    table = run_json(capsys, "--per-million-tokens")
    assert figures(table) == {
        # TEI and our exact-mode fp32 path use no AMX/bf16: they stand for both CPUs, x 4/2 vCPUs.
        ("ml.c7i.xlarge", "tei"): 4000.0, ("ml.c6i.xlarge", "tei"): 4000.0,
        ("ml.c6i.xlarge", "custom exact"): 8000.0,
        # On c7i the handler serves bf16 (AMX), measured here.
        ("ml.c7i.xlarge", "custom exact"): 16_000.0, ("ml.c7i.xlarge", "custom fast"): 18_000.0,
        # c6i's fast mode is int8 on VNNI; int8 here had AMX int8 too: not the same instructions.
        ("ml.c6i.xlarge", "custom fast"): None,
        # The GPU: TEI's labelled assumption, and nothing for our handler.
        ("ml.g5.xlarge", "tei"): 33_000, ("ml.g5.xlarge", "custom exact"): None, ("ml.g5.xlarge", "custom fast"): None,
    }
    rows = {(r["instance_type"], cost._serves(r["flavor"], r["mode"])): r for r in table["instances"]}
    c7i_exact = rows[("ml.c7i.xlarge", "custom exact")]
    assert c7i_exact["path"] == "openvino bf16" and c7i_exact["measured_on"] == "Intel(R) Xeon(R) Processor"
    assert c7i_exact["source"].startswith("derived: bench/results/inference.json row 'exact' (openvino bf16) = 8,000 "
                                          "tokens/s on 2 cores of Intel(R) Xeon(R) Processor x 4/2 for 4 vCPUs")
    assert c7i_exact["usd_per_million_tokens"] == round(0.2142 / (16_000 * 3600) * 1e6, 4)
    assert rows[("ml.c6i.xlarge", "custom exact")]["path"] == "onnx fp32"
    assert "row 'exact:onnx'" in rows[("ml.c6i.xlarge", "custom exact")]["source"]
    assert "row 'tei'" in rows[("ml.c6i.xlarge", "tei")]["source"]
    (c6i_fast,) = [r for r in table["not_measured"] if r["instance_type"] == "ml.c6i.xlarge"]
    assert c6i_fast["path"] == "onnx int8"
    assert c6i_fast["source"] == ("not measured: onnx int8 ran here on Intel(R) Xeon(R) Processor with amx_int8, "
                                  "avx512_vnni; c6i (3rd gen Intel Xeon (Ice Lake)) has avx512_vnni")
    assert any("measured on Intel(R) Xeon(R) Processor" in n for n in table["notes"])


def test_ice_lake_measurements_do_not_stand_for_c7i_bf16(in_empty_dir, capsys):
    write_bench(in_empty_dir, bench_rows(ICE_LAKE, cpu="Intel Xeon Platinum 8375C"))
    table = run_json(capsys, "--per-million-tokens")
    got = figures(table)
    assert got[("ml.c6i.xlarge", "custom fast")] == 14_200.0  # the int8 row the handler picked there
    assert got[("ml.c6i.xlarge", "custom exact")] == 8200.0
    assert got[("ml.c7i.xlarge", "tei")] == 4000.0
    assert got[("ml.c7i.xlarge", "custom exact")] is None and got[("ml.c7i.xlarge", "custom fast")] is None
    (c7i_exact,) = [r for r in table["not_measured"]
                    if r["instance_type"] == "ml.c7i.xlarge" and r["mode"] == "exact"]
    assert c7i_exact["source"] == ("not measured: bench/results/inference.json has no row for custom exact on "
                                   "openvino bf16 (the path c7i serves with)")


def test_text_table_says_not_measured(in_empty_dir, capsys):
    write_bench(in_empty_dir, bench_rows(AMX))
    assert main(["cost", "--per-million-tokens"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (c6i_fast,) = [line for line in lines if line.startswith("ml.c6i.xlarge") and "custom fast" in line]
    assert "not measured" in c6i_fast and "onnx int8" in c6i_fast
    (c7i_tei,) = [line for line in lines if line.startswith("ml.c7i.xlarge") and " tei " in line]
    assert "4,000" in c7i_tei and "derived" in c7i_tei


def test_the_handlers_path_choice_matches_the_embedders():
    from inference_code import embedder

    assert cost.EXACT_BF16_FLAGS == embedder.BF16_FLAGS
    assert cost.FAST_BF16_FLAGS == embedder.FAST_BF16_FLAGS
    assert set(cost.PATH_FLAGS) >= {cost.served_path(f, m, c.flags) for f, m in cost.SERVES
                                    for c in cost.CPU_FAMILIES.values()}


def _stage(overrides: list[str]):
    from stacks.config import load_config

    return load_config(cost.read_context(REPO_ROOT, overrides, "dev")).stage("dev")


@pytest.mark.parametrize(("overrides", "path", "tokens_per_s"), [
    ([], "tei onnx fp32", 4000.0),  # the default dev stage serves TEI: TEI's speed, not our fast mode's
    (["dev.endpoints.cpu.flavor=custom", "dev.endpoints.cpu.model_data_s3_uri=s3://my-bucket/model.tar.gz"],
     "onnx fp32", 8000.0),
    (["dev.endpoints.cpu.flavor=custom", "dev.endpoints.cpu.model_data_s3_uri=s3://my-bucket/model.tar.gz",
      "dev.endpoints.cpu.instance_type=ml.c7i.xlarge"], "openvino bf16", 16_000.0),
])
def test_a_stage_costs_tokens_at_the_speed_of_what_it_serves(tmp_path, overrides, path, tokens_per_s):
    bench = write_bench(tmp_path, bench_rows(AMX))
    estimate = cost.estimate_stage(_stage(overrides), cost.load_prices(), cost.load_throughput_table(bench_file=bench))
    (row,) = estimate["per_million_tokens"]
    assert (row["endpoint"], row["path"], row["tokens_per_s"]) == ("cpu", path, tokens_per_s)
    usd_per_hour = item(estimate, "endpoint cpu")["unit_usd"]
    assert row["usd_per_million_tokens"] == round(usd_per_hour / (tokens_per_s * 3600) * 1e6, 4)
    assert any(n.startswith(f"endpoint cpu ({row['flavor']}") and f"{tokens_per_s:,.0f} tokens/s" in n
               for n in estimate["notes"])


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda rows: rows[0].update(tokens_per_s=0), "throughput[0]: bad tokens_per_s 0"),
    (lambda rows: rows[4].update(mode="fast"), "throughput[4]: bad mode 'fast'; allowed: for flavor tei null"),
    (lambda rows: rows[1].update(flavor="triton"), "throughput[1]: bad flavor 'triton'"),
    (lambda rows: rows[2].pop("cpu_flags"), "throughput[2]: bad cpu_flags None"),
    (lambda rows: rows[3].update(cores="2"), "throughput[3]: bad cores '2'"),
])
def test_a_bad_bench_row_is_a_clear_error(in_empty_dir, capsys, mutate, message):
    rows = bench_rows(AMX)
    mutate(rows)
    write_bench(in_empty_dir, rows)
    err = run_failing(capsys, "--per-million-tokens")
    assert f"bench/results/inference.json {message}" in err and "python -m bench.inference" in err


@pytest.mark.parametrize("content", ['{"exact": {"tokens_per_s": 8000}}', "[1, 2]", "{not json"])
def test_a_bench_file_without_the_throughput_list_is_a_clear_error(in_empty_dir, capsys, content):
    bench = write_bench(in_empty_dir, [])
    bench.write_text(content)
    err = run_failing(capsys, "--per-million-tokens")
    assert "bench/results/inference.json" in err and err.count("\n") == 1


def test_the_committed_bench_results_are_measured_rows(in_repo, capsys):
    # What the repository ships: the CPU rows come from the published bench run, never the packaged assumption.
    table = run_json(capsys, "--per-million-tokens")
    cpu = [r for r in [*table["instances"], *table["not_measured"]] if r["instance_type"] != "ml.g5.xlarge"]
    assert cpu and all(r["source"].startswith(("derived: semsearch/measured_throughput.json", "not measured"))
                       for r in cpu)
    assert {(r["instance_type"], r["flavor"]) for r in table["instances"]} >= {
        ("ml.c6i.xlarge", "tei"), ("ml.c7i.xlarge", "tei")}


def test_throughput_file_wins_and_adds_instances(in_empty_dir, capsys):
    measured = in_empty_dir / "measured.json"
    measured.write_text(json.dumps({"instances": {
        "ml.c6i.xlarge": {"tokens_per_s": 2500, "source": "measured: loadtest 2026-11-01"},
        "ml.g6.xlarge": {"tokens_per_s": 40_000, "source": "measured: loadtest 2026-11-02"}}}))
    table = run_json(capsys, "--per-million-tokens", "--throughput", str(measured))
    rows = tei_rows(table)
    assert list(rows) == ["ml.g5.xlarge", "ml.c6i.xlarge", "ml.g6.xlarge"]
    assert rows["ml.c6i.xlarge"]["source"] == "measured: loadtest 2026-11-01"
    assert rows["ml.g6.xlarge"]["usd_per_million_tokens"] == round(1.0064 / (40_000 * 3600) * 1e6, 4)
    assert rows["ml.g5.xlarge"]["tokens_per_s"] == 33_000  # not in the file: default kept


def test_throughput_for_an_unpriced_instance_names_it(in_empty_dir, capsys):
    measured = in_empty_dir / "measured.json"
    measured.write_text(json.dumps({"instances": {"ml.inf2.xlarge": {"tokens_per_s": 9000, "source": "x"}}}))
    err = run_failing(capsys, "--per-million-tokens", "--throughput", str(measured))
    assert "'ml.inf2.xlarge'" in err and "prices.json" in err


def test_bad_throughput_figure_is_rejected(in_empty_dir, capsys):
    measured = in_empty_dir / "measured.json"
    measured.write_text(json.dumps({"instances": {"ml.c6i.xlarge": {"tokens_per_s": 0}}}))
    err = run_failing(capsys, "--per-million-tokens", "--throughput", str(measured))
    assert "ml.c6i.xlarge" in err and "tokens_per_s" in err


def test_per_million_tokens_text_output(in_empty_dir, capsys):
    assert main(["cost", "--per-million-tokens"]) == 0
    out = capsys.readouterr().out
    assert "USD per 1M tokens embedded" in out
    assert "0.0119" in out and "0.0283" in out and "assumption" in out and "not measured" in out


def test_data_files_ship_inside_the_package():
    # Found beside the module, not via the checkout, so an installed wheel needs them as package data.
    assert cost.DEFAULT_PRICES.parent == Path(cost.__file__).resolve().parent
    assert cost.DEFAULT_THROUGHPUT.is_file() and cost.DEFAULT_PRICES.is_file()


# ---------------------------------------------------------------------------------------
# Amazon Bedrock: per token, from the price table


def test_per_million_tokens_lists_the_bedrock_models_at_their_list_price(in_empty_dir, capsys):
    table = run_json(capsys, "--per-million-tokens")
    rows = {r["model_id"]: r for r in table["bedrock"]}
    # Bedrock's page lists USD per 1,000 tokens: 0.00002 (Titan v2), 0.0001 (Cohere v3).
    assert rows == {
        "amazon.titan-embed-text-v2:0": {"model_id": "amazon.titan-embed-text-v2:0", "usd_per_million_tokens": 0.02,
                                         "source": rows["amazon.titan-embed-text-v2:0"]["source"]},
        "cohere.embed-english-v3": {"model_id": "cohere.embed-english-v3", "usd_per_million_tokens": 0.10,
                                    "source": rows["cohere.embed-english-v3"]["source"]},
        "cohere.embed-multilingual-v3": {"model_id": "cohere.embed-multilingual-v3", "usd_per_million_tokens": 0.10,
                                         "source": rows["cohere.embed-multilingual-v3"]["source"]},
    }
    assert all("Bedrock on-demand input tokens, us-east-1 as of 2025-06-01" in r["source"] for r in rows.values())
    # Every model the connector can call has a price.
    from stacks.catalog import BEDROCK_MODELS

    assert set(rows) == set(BEDROCK_MODELS)
    capsys.readouterr()
    assert main(["cost", "--per-million-tokens"]) == 0
    text = capsys.readouterr().out
    assert "BEDROCK MODEL" in text and "cohere.embed-multilingual-v3" in text


def test_a_bedrock_stage_says_what_each_token_costs(in_repo, capsys):
    dev = run_json(capsys, "-c", "dev.search.provider=bedrock", "-c",
                   'dev.bedrock={"model_id": "cohere.embed-english-v3"}')
    (note,) = [n for n in dev["notes"] if "search.provider is bedrock" in n]
    assert "cohere.embed-english-v3 embeds for the index at 0.1 USD per 1M input tokens" in note


def test_a_bedrock_model_missing_from_the_table_names_it_and_the_file(in_repo, capsys, tmp_path):
    prices = json.loads((REPO_ROOT / "semsearch" / "prices.json").read_text())
    del prices["bedrock"]["usd_per_million_input_tokens"]["cohere.embed-english-v3"]
    trimmed = tmp_path / "prices.json"
    trimmed.write_text(json.dumps(prices))
    from semsearch import cost

    with pytest.raises(cost.UsageError) as caught:
        cost.load_prices(default=trimmed).bedrock("cohere.embed-english-v3")
    assert "'cohere.embed-english-v3'" in str(caught.value) and str(trimmed) in str(caught.value)


# ---------------------------------------------------------------------------------------
# Published measurements: what a fresh clone or an installed CLI prices with


def test_the_published_measurements_are_what_the_bench_writes_labelled_with_their_cpu():
    published = json.loads(cost.PUBLISHED_MEASUREMENTS.read_text())
    rows = cost.read_bench(cost.PUBLISHED_MEASUREMENTS)
    assert {(r.flavor, r.mode) for r in rows} >= {("custom", "exact"), ("custom", "fast")}
    for r in rows:
        assert r.cpu == published["machine"]["cpu"] and r.cores == published["setup"]["threads"]
        assert r.cpu_flags == frozenset(published["machine"]["cpu_flags"])
    assert published["measured_at"][:2] == "20" and "bench.inference --publish" in published["note"]


def test_without_bench_results_the_cpu_rows_are_priced_from_the_published_measurements(
        monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    table = run_json(capsys, "--per-million-tokens")
    published = {(r.flavor, r.mode, r.path): r for r in cost.read_bench(cost.PUBLISHED_MEASUREMENTS)}
    rows = {(r["instance_type"], r["flavor"], r["mode"]): r for r in table["instances"]}
    exact = rows[("ml.c6i.xlarge", "custom", "exact")]
    measured = published[("custom", "exact", exact["path"])]
    assert exact["tokens_per_s"] == pytest.approx(measured.tokens_per_s * 4 / measured.cores)
    assert "semsearch/measured_throughput.json" in exact["source"] and str(tmp_path) not in exact["source"]
    assert not any(r["source"].startswith("assumption") for k, r in rows.items() if k[0] != "ml.g5.xlarge")
    assert any("published" in n and "bench.inference --publish" in n for n in table["notes"])


def test_a_local_bench_run_wins_over_the_published_measurements(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    write_bench(tmp_path, bench_rows(AMX))
    rows = {(r["instance_type"], r["flavor"], r["mode"]): r for r in run_json(capsys, "--per-million-tokens")["instances"]}
    assert rows[("ml.c7i.xlarge", "custom", "exact")]["tokens_per_s"] == 16_000.0
    assert "bench/results/inference.json" in rows[("ml.c7i.xlarge", "custom", "exact")]["source"]


def test_bench_publish_writes_a_file_cost_reads(tmp_path):
    from bench.inference import publish

    result = {"machine": {"cpus": 2, "cpu": "Intel(R) Xeon(R) Processor", "cpu_flags": AMX}, "setup": {"threads": 2},
              "baseline_spread": 1.01, "throughput": bench_rows(AMX)}
    path = publish(result, tmp_path / "measured_throughput.json")
    assert cost.read_bench(path) == cost.read_bench(write_bench(tmp_path, bench_rows(AMX)))
    assert json.loads(path.read_text())["machine"]["cpu"] == "Intel(R) Xeon(R) Processor"


def test_bench_publish_refuses_to_drop_figures_of_another_cpu_before_measuring(monkeypatch, tmp_path, capsys):
    """A --publish run on another CPU would replace figures that price other CPU families (an AMD
    run would drop the AMX rows c7i is priced from): it stops at once, naming both CPUs."""
    import bench.inference
    from bench.inference import main, published_cpu_other_than

    other = {"machine": {"cpu": "Some Other CPU", "cpu_flags": ["amx_bf16", "avx512f"]}, "throughput": []}
    path = tmp_path / "measured_throughput.json"
    path.write_text(json.dumps(other))
    monkeypatch.setattr(bench.inference, "PUBLISHED", path)
    with pytest.raises(SystemExit) as caught:
        main(["--publish"])
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert "Some Other CPU (amx_bf16, avx512f)" in error and "--replace-other-cpu" in error
    assert json.loads(path.read_text()) == other  # nothing measured, nothing written
    assert published_cpu_other_than("Some Other CPU", ["avx512f", "amx_bf16"], path) is None
    assert published_cpu_other_than("Some Other CPU", ["avx512f"], path) == "Some Other CPU (amx_bf16, avx512f)"
    assert published_cpu_other_than("x", [], tmp_path / "none.json") is None


def test_the_dev_endpoint_runs_on_the_cpu_instance_cheapest_per_token_for_what_it_serves(in_repo):
    """Issue 15: the default dev endpoint sits on the 4-vCPU CPU instance that wins on USD per 1M
    tokens for its flavor, by the published measurements (a tie in speed goes to the cheaper hour)."""
    from stacks.config import load_config

    (dev,) = load_config(cost.read_context(REPO_ROOT, [], "dev")).stages
    (endpoint,) = dev.endpoints.values()
    prices, throughput = cost.load_prices(), cost.load_throughput_table()
    mode = None if endpoint.flavor == "tei" else "exact"
    per_million = {}
    for name in ("ml.c6i.xlarge", "ml.c7i.xlarge", "ml.m6i.xlarge", "ml.m5.xlarge"):
        figure = throughput.figure(name, endpoint.flavor, mode)
        if figure["tokens_per_s"] is not None:
            per_million[name] = cost.usd_per_million_tokens(prices.sagemaker("hosting", name), figure["tokens_per_s"])
    assert endpoint.instance_type in per_million
    assert endpoint.instance_type == min(per_million, key=per_million.__getitem__), per_million
