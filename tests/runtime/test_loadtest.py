"""`semsearch loadtest`: for real against the local server (--url); against SageMaker (--endpoint)
through botocore's Stubber, the only stand-in in these tests, since no AWS endpoint runs here.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from inference_code.embedder import load_tokenizer, token_ids
from inference_code.model_info import read_model_info
from semsearch.loadtest import _percentile, build_bodies, endpoint_sender_factory, loadtest
from semsearch.serve import start_server
from tests.conftest import free_port


@pytest.fixture(scope="module")
def server(model_dir):
    handle = start_server(model_dir, name="load", max_batch=8)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory, dev_pairs):
    path = tmp_path_factory.mktemp("texts") / "texts.jsonl"
    path.write_text("".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in dev_pairs[:20]))
    return path


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "semsearch.cli", "loadtest", *args], capture_output=True, text=True,
                          timeout=600)


def test_url_mode_against_the_local_server(server, texts_file, tmp_path, dev_pairs, model_dir):
    out = tmp_path / "report"
    result = run_cli("--url", server.url, "--requests", "10", "--concurrency", "3", "--batch-size", "4",
                     "--texts", str(texts_file), "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary == json.loads((out / "loadtest.json").read_text())
    assert (summary["requests"], summary["ok"], summary["errors"]) == (10, 10, 0)
    assert summary["status_counts"] == {"200": 10}
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert summary["texts_per_s"] == pytest.approx(4 * summary["requests_per_s"])
    assert summary["tokens_per_s"] > summary["texts_per_s"]
    assert (out / "loadtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Tokens are counted as the model sees them: texts 0..39 cycling over the 20 in the file.
    info = read_model_info(model_dir)
    counts = [len(ids) for ids in token_ids(info, load_tokenizer(info), [p["text"] for p in dev_pairs[:20]])]
    samples = json.loads((out / "samples.json").read_text())
    assert sum(s["tokens"] for s in samples) == 2 * sum(counts)


def test_errors_are_counted_by_status(server, tmp_path):
    result = run_cli("--url", f"{server.url}/endpoints/load/invocations", "--requests", "4", "--concurrency", "2",
                     "--batch-size", "9")  # over the server's batch limit of 8
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["status_counts"] == {"413": 4} and summary["errors"] == 4 and summary["ok"] == 0


def test_connection_failures_are_counted_too(tmp_path):
    result = run_cli("--url", f"http://127.0.0.1:{free_port()}", "--requests", "3", "--concurrency", "1")
    assert result.returncode == 1
    assert json.loads(result.stdout)["status_counts"] == {"error:ConnectionRefusedError": 3}


def test_endpoint_mode_calls_sagemaker_runtime_with_stubbed_responses():
    client = boto3.client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="AKID",
                          aws_secret_access_key="secret")
    texts = ["one", "two", "three"]
    bodies = build_bodies(texts, 4, 2, lambda ts: [3] * len(ts))
    with Stubber(client) as stub:
        for i, (body, _, _) in enumerate(bodies):
            expected = {"EndpointName": "prod-embed", "Body": body, "ContentType": "application/json",
                        "Accept": "application/json"}
            if i == 2:  # SageMaker throttles with a 400 (and a null message) under load
                stub.add_client_error("invoke_endpoint", service_error_code="ThrottlingException",
                                      http_status_code=400, expected_params=expected)
            else:
                payload = json.dumps([[0.0] * 384] * 2).encode()
                stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(payload), len(payload)),
                                                      "ContentType": "application/json"}, expected)
        summary = loadtest(endpoint_sender_factory(client, "prod-embed"), target="sagemaker:prod-embed",
                           requests=4, concurrency=1, batch_size=2, texts=texts, count_tokens=lambda ts: [3] * len(ts))
        stub.assert_no_pending_responses()
    assert summary["status_counts"] == {"200": 3, "400": 1}
    assert (summary["ok"], summary["errors"]) == (3, 1)
    assert summary["texts_per_s"] == pytest.approx(2 * summary["requests_per_s"])
    assert summary["tokens_per_s"] == pytest.approx(6 * summary["requests_per_s"])


def test_request_bodies_cycle_through_the_texts():
    bodies = build_bodies(["a", "bb", "ccc"], 3, 2, lambda ts: [len(t) for t in ts])
    assert [json.loads(b) for b, _, _ in bodies] == [["a", "bb"], ["ccc", "a"], ["bb", "ccc"]]
    assert [tokens for _, _, tokens in bodies] == [3, 4, 5]


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (_percentile(values, 50), _percentile(values, 95), _percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert _percentile([7.0], 99) == 7.0


def test_bad_arguments_are_one_line_errors(tmp_path):
    result = run_cli("--url", "ftp://x", "--requests", "1", "--concurrency", "1")
    assert result.returncode == 2 and "is not an http(s) URL" in result.stderr
    result = run_cli("--url", "http://127.0.0.1:1", "--requests", "0", "--concurrency", "1")
    assert result.returncode == 2 and "must be at least 1" in result.stderr
