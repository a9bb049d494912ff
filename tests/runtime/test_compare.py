"""`semsearch compare` on the real all-MiniLM-L6-v2, a model our own trainer tuned from it (as
`semsearch train` runs it, on 32 Debian pairs), the base model behind a local endpoint
(`semsearch serve`, called through the sagemaker-runtime API) and Titan v2 through the local
Bedrock stand-in (semsearch/local/bedrock.py): every candidate scored by the fine-tune gate's
code, so the figures equal the trainer's own metrics.json."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from semsearch.cli import main
from semsearch.compare import KNN_MEMORY_FORMULA, knn_memory_gib_per_million, print_table
from tests.runtime.test_beir_inputs import beir_from_pairs
from training_code.contract import METRIC_KEYS


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, dev_pairs, model_dir) -> dict:
    """A model tuned by `semsearch train` on 32 pairs (2 steps), and the pairs it was scored on."""
    root = tmp_path_factory.mktemp("compare")
    train = write_jsonl(root / "train.jsonl", dev_pairs[:32])
    evaluation = write_jsonl(root / "eval.jsonl", dev_pairs[100:140])
    out = root / "tuned"
    assert main(["train", "--train", str(train), "--eval", str(evaluation), "--out", str(out), "--epochs", "1",
                 "--batch-size", "16", "--no-code", "--quiet"]) == 0
    return {"dir": out, "eval": evaluation, "metrics": json.loads((out / "metrics.json").read_text()), "root": root}


@pytest.fixture(scope="module")
def endpoint(model_dir):
    from semsearch.serve import start_server

    handle = start_server(model_dir, name="compare-ep")
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def bedrock_stand_in():
    from semsearch.local.bedrock import start_stand_in

    handle = start_stand_in(region="us-east-1")  # MiniLM's cosines in Titan's 1024 dimensions
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def compared(tuned, endpoint, bedrock_stand_in) -> dict:
    mp = pytest.MonkeyPatch()
    # boto3 signs every call; the local endpoint checks the scope (service, region), not these keys.
    mp.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    plot = tuned["root"] / "compare.png"
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        code = main(["compare", "--pairs", str(tuned["eval"]), "--model", "all-MiniLM-L6-v2",
                     "--model", f"{tuned['dir']},name=tuned", "--json", "--plot", str(plot),
                     "--endpoint", "compare-ep,flavor=custom,instance=ml.c6i.xlarge,model=all-MiniLM-L6-v2",
                     "--endpoint-url", endpoint.url, "--region", "us-east-1",
                     "--bedrock", "amazon.titan-embed-text-v2:0", "--bedrock-endpoint-url", bedrock_stand_in.url])
    mp.undo()
    assert code == 0
    return {"result": json.loads(out.getvalue()), "plot": plot}


def test_every_candidate_gets_every_metric_and_cost_figure(compared):
    result = compared["result"]
    assert result["schema_version"] == 1 and result["metric_keys"] == list(METRIC_KEYS)
    assert result["data"] == {"format": "pairs", "split": None, "files": [result["data"]["files"][0]], "pairs": 40,
                              "queries": 40, "documents": 40}
    names = [c["name"] for c in result["candidates"]]
    assert names == ["all-MiniLM-L6-v2", "tuned", "compare-ep", "amazon.titan-embed-text-v2:0 (1024)"]
    assert [c["kind"] for c in result["candidates"]] == ["model", "model", "endpoint", "bedrock"]
    assert result["knn_memory_formula"] == KNN_MEMORY_FORMULA and result["hnsw_m"] == 16
    for c in result["candidates"]:
        assert set(c["metrics"]) == set(METRIC_KEYS) and all(0 <= v <= 1 for v in c["metrics"].values())
        t = c["throughput"]
        assert t["texts"] == 80 and t["tokens"] > 80 and t["seconds"] > 0 and t["texts_per_s"] > 0
        assert t["requests"] == 4 and 0 < t["latency_ms"]["p50"] <= t["latency_ms"]["p95"] <= t["latency_ms"]["max"]
        assert all(p["usd"] > 0 and p["source"] for p in c["usd_per_million_tokens"])
    # 1.1 * (4 * 384 + 8 * 16) bytes * 1e6 = 1.83 GB = 1.70 GiB
    assert [c["dimension"] for c in result["candidates"]] == [384, 384, 384, 1024]
    assert result["candidates"][0]["knn_memory_gib_per_million_docs"] == pytest.approx(
        1.1 * (4 * 384 + 128) * 1e6 / 2**30, abs=1e-3)
    assert [c["knn_memory_gib_per_million_docs"] for c in result["candidates"]] == [
        round(knn_memory_gib_per_million(d, 16), 3) for d in (384, 384, 384, 1024)]
    base, tuned_row, ep, titan = result["candidates"]
    # Bedrock's price is the price table's, per token: nothing derived from speed.
    (titan_price,) = titan["usd_per_million_tokens"]
    assert titan_price["on"] == "bedrock" and titan_price["usd"] == 0.02
    assert [p["on"] for p in base["usd_per_million_tokens"]] == ["ml.c6i.xlarge", "ml.g5.xlarge"]
    assert [p["on"] for p in ep["usd_per_million_tokens"]] == ["ml.c6i.xlarge"]
    assert base["catalog_id"] == "all-MiniLM-L6-v2" and tuned_row["catalog_id"] is None
    assert "this machine" in base["throughput"]["where"] and "endpoint compare-ep" in ep["throughput"]["where"]


def test_figures_are_the_trainers_gate_figures(compared, tuned):
    """Same pairs, same metric code: compare's base and tuned rows are metrics.json's base and tuned;
    the endpoint serving the base model scores as the base model does."""
    base, tuned_row, ep, titan = compared["result"]["candidates"]
    gate = tuned["metrics"]
    assert base["metrics"] == pytest.approx(gate["base"], abs=1e-4)
    assert tuned_row["metrics"] == pytest.approx(gate["tuned"], abs=1e-4)
    assert ep["metrics"] == pytest.approx(base["metrics"], abs=1e-4)
    # The Bedrock stand-in maps MiniLM into 1024 dimensions keeping every cosine (not Titan's quality).
    assert titan["metrics"] == pytest.approx(base["metrics"], abs=1e-4)
    # Two steps on 32 pairs move the model (whether up or down on 40 pairs is not guaranteed).
    assert tuned_row["metrics"] != base["metrics"] or gate["train"]["probe_loss_after"] < gate["train"][
        "probe_loss_before"]


def test_the_table_names_every_candidate_and_the_plot_is_a_png(compared):
    out = io.StringIO()
    print_table(compared["result"], file=out)
    table = out.getvalue()
    for name in ("all-MiniLM-L6-v2", "tuned", "compare-ep", *METRIC_KEYS, "k-NN GiB/1M docs", "USD/1M tokens",
                 "c6i.xlarge", "g5.xlarge", "40 queries over 40 documents"):
        assert name in table
    assert f"{compared['result']['candidates'][1]['metrics']['ndcg@10']:.4f}" in table
    data = compared["plot"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_a_beir_folder_with_graded_qrels(tmp_path, dev_pairs, capsys):
    rows = dev_pairs[200:220]
    folder = beir_from_pairs(tmp_path / "beir", rows)
    # One extra document judged more relevant than the package's own description: graded qrels.
    with (folder / "corpus.jsonl").open("a") as f:
        f.write(json.dumps({"_id": "extra", "title": "extra", "text": rows[0]["query"]}) + "\n")
    with (folder / "qrels" / "test.tsv").open("a") as f:
        f.write("q0\textra\t2\n")
    assert main(["compare", "--pairs", str(folder), "--model", "all-MiniLM-L6-v2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["data"]["format"] == "beir" and result["data"]["split"] == "test"
    assert (result["data"]["queries"], result["data"]["documents"]) == (20, 21)
    (c,) = result["candidates"]
    assert set(c["metrics"]) == set(METRIC_KEYS)


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    folder = beir_from_pairs(tmp_path / "beir", [{"id": "a", "query": "q", "text": "t"}])
    (folder / "qrels" / "test.tsv").write_text("q0\tmissing-doc\t1\n")
    assert main(["compare", "--pairs", str(folder), "--model", "all-MiniLM-L6-v2"]) == 2
    assert "qrels/test.tsv line 1: corpus-id 'missing-doc' is not in" in capsys.readouterr().err
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"query": "q", "text": "t"}])
    assert main(["compare", "--pairs", str(pairs)]) == 2
    assert "give at least one candidate" in capsys.readouterr().err
    assert main(["compare", "--pairs", str(pairs), "--model", "all-MiniLM-L6-v2,colour=red"]) == 2
    assert "bad option 'colour=red'; allowed: model=..., name=..." in capsys.readouterr().err
    assert main(["compare", "--pairs", str(pairs), "--bedrock", "amazon.titan-embed-text-v2:0,dimension=100"]) == 2
    assert "--bedrock 'amazon.titan-embed-text-v2:0,dimension=100'" in capsys.readouterr().err
