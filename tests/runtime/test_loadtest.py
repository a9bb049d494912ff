"""`semsearch loadtest`: for real against our handler's local server (--url, flavor custom) and
against TEI's own router (--url, flavor tei; skipped, saying why, when no router is found);
against SageMaker (--endpoint) through botocore's Stubber, since no AWS endpoint runs here,
every request also checked against botocore's InvokeEndpoint model.
"""

from __future__ import annotations

import http.server
import io
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from inference_code.embedder import load_tokenizer, token_ids
from inference_code.model_info import read_model_info
from semsearch.errors import UsageError
from semsearch.loadtest import (
    INFERENCE_COMPONENT_HEADER,
    _percentile,
    build_bodies,
    endpoint_sender_factory,
    loadtest,
    serving_endpoint,
    stage_defaults,
    url_sender_factory,
)
from semsearch.local.tei import StageServing, TeiNotFound, find_tei, start_tei
from semsearch.serve import start_server
from stacks.config import load_config
from stacks.containers import model_version
from tests.conftest import free_port
from tests.infra.specs import botocore_api

REPO = Path(__file__).resolve().parents[2]
#: The client batch limit our router gets here (a TEI at $SEMSEARCH_TEI_URL has its own: /info).
TEI_MAX_CLIENT_BATCH = 8


@pytest.fixture(scope="module")
def tei(model_dir, tmp_path_factory):
    """TEI's real router on the packaged model (semsearch.local.tei: found as `local up` finds
    it, ONNX graph beside the weights): ``(url, max_client_batch_size)``."""
    try:
        source = find_tei()
    except TeiNotFound as e:
        pytest.skip(str(e))
    serving = StageServing(stage="test", flavor="tei", max_client_batch_size=TEI_MAX_CLIENT_BATCH,
                           max_batch_tokens=16384, auto_truncate=False)
    try:
        running = start_tei(source, model_dir, work_dir=tmp_path_factory.mktemp("tei"), serving=serving,
                            name="load", region="us-east-1")
    except UsageError as e:
        pytest.fail(f"TEI's router did not start: {e}", pytrace=False)
    yield running.tei_url, running.info["max_client_batch_size"]
    running.stop()


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
    result = run_cli("--url", server.url, "--flavor", "custom", "--requests", "10", "--concurrency", "3",
                     "--batch-size", "4", "--texts", str(texts_file), "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary == json.loads((out / "loadtest.json").read_text())
    assert (summary["requests"], summary["ok"], summary["errors"]) == (10, 10, 0)
    assert summary["status_counts"] == {"200": 10}
    assert (summary["flavor"], summary["dimension"], summary["inference_component"]) == ("custom", 384, None)
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
    result = run_cli("--url", f"{server.url}/endpoints/load/invocations", "--flavor", "custom", "--requests", "4",
                     "--concurrency", "2", "--batch-size", "9")  # over the server's batch limit of 8
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["status_counts"] == {"413": 4} and summary["errors"] == 4 and summary["ok"] == 0
    assert "over this endpoint's batch limit of 8" in summary["error_messages"]["413"]


def test_the_default_flavor_is_the_default_configs(server):
    """No --flavor: the first stage's connector endpoint's flavor (TEI), whose body our handler takes too."""
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    first = next(iter(context["stages"]))
    endpoint = load_config({**context, "stage": first}).stage(first).connector_endpoint
    result = run_cli("--url", server.url, "--requests", "2", "--concurrency", "1", "--batch-size", "3")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["flavor"], summary["stage"], summary["instance_type"], summary["batch_limit"]) == (
        endpoint.flavor, first, endpoint.instance_type, endpoint.max_client_batch_size)
    assert summary["dimension"] == 384 and summary["status_counts"] == {"200": 2}


def test_inference_component_header_reaches_the_local_server(server):
    result = run_cli("--url", server.invocations_url, "--flavor", "custom", "--inference-component",
                     "semsearch-dev-cpu-model", "--requests", "2", "--concurrency", "1", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["inference_component"] == "semsearch-dev-cpu-model" and summary["status_counts"] == {"200": 2}


class _RecordingEndpoint(http.server.BaseHTTPRequestHandler):
    """Stands in for a SageMaker endpoint's front only to show the headers loadtest sends: it
    records them and answers one zero vector per text."""

    seen: list[dict[str, str]] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(dict(self.headers))
        payload = json.dumps([[0.0] * 4] * len(body["inputs"])).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_url_mode_names_the_inference_component_in_sagemakers_header():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _RecordingEndpoint)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        summary = loadtest(url_sender_factory(url, inference_component="semsearch-dev-cpu-model"), target=url,
                           requests=2, concurrency=1, batch_size=3, texts=["a", "b"], flavor="tei",
                           count_tokens=lambda ts: [1] * len(ts))
        loadtest(url_sender_factory(url), target=url, requests=1, concurrency=1, batch_size=1, texts=["a"],
                 flavor="tei", count_tokens=lambda ts: [1] * len(ts))
    finally:
        httpd.shutdown()
    assert summary["status_counts"] == {"200": 2} and summary["dimension"] == 4
    assert [h.get(INFERENCE_COMPONENT_HEADER) for h in _RecordingEndpoint.seen] == [
        "semsearch-dev-cpu-model", "semsearch-dev-cpu-model", None]


def test_tei_router_takes_the_tei_contract(tei, texts_file, tmp_path):
    url, limit = tei
    out = tmp_path / "report"
    result = run_cli("--url", url, "--flavor", "tei", "--requests", "6", "--concurrency", "2",
                     "--batch-size", str(min(limit, 32)), "--texts", str(texts_file), "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status_counts"] == {"200": 6} and summary["dimension"] == 384 and summary["flavor"] == "tei"
    assert all(s["dimension"] == 384 for s in json.loads((out / "samples.json").read_text()))


def test_tei_router_refuses_a_batch_over_its_client_batch_with_413(tei):
    url, limit = tei
    if limit >= 32:
        pytest.skip(f"this TEI takes {limit} texts a request: loadtest refuses a batch over the config's 32 itself")
    result = run_cli("--url", f"{url}/invocations", "--requests", "2", "--concurrency", "1",
                     "--batch-size", str(limit + 1))  # default flavor: tei
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["status_counts"] == {"413": 2}
    assert summary["error_messages"]["413"] == (
        f"batch size {limit + 1} > maximum allowed batch size {limit} (Validation)")


def test_tei_router_refuses_our_handlers_contract(tei):
    """The first review's finding: our handler's body is not TEI's contract (TEI refuses it)."""
    result = run_cli("--url", tei[0], "--flavor", "custom", "--requests", "1", "--concurrency", "1",
                     "--batch-size", "2")
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    # TEI validates prompt_name against the prompts the model's files define; this model has none.
    assert summary["status_counts"] == {"413": 1}, summary
    assert "passage" in summary["error_messages"]["413"], summary["error_messages"]


@pytest.mark.parametrize(("flavor", "batch", "limit", "name"), [("tei", 33, 32, "max_client_batch_size"),
                                                                 ("custom", 257, 256, "SEMSEARCH_MAX_BATCH")])
def test_a_batch_over_the_flavors_limit_is_refused_before_sending(flavor, batch, limit, name):
    # Nothing listens on the port: a request sent would be counted as refused instead.
    result = run_cli("--url", f"http://127.0.0.1:{free_port()}", "--flavor", flavor, "--requests", "1",
                     "--concurrency", "1", "--batch-size", str(batch))
    assert result.returncode == 2 and result.stdout == ""
    assert (f"--batch-size {batch} is over the {flavor} flavor's limit of {limit} texts per request ({name} of "
            "stage 'dev', endpoint semsearch-dev-cpu-") in result.stderr


def test_stage_defaults_follow_the_config(tmp_path):
    prod = stage_defaults("prod")
    version = model_version(load_config({**json.loads((REPO / "cdk.json").read_text())["context"], "stage": "prod"})
                            .stage("prod").endpoints["gpu"])
    assert (prod.stage, prod.endpoint_name, prod.flavor, prod.instance_type, prod.inference_component) == (
        "prod", f"semsearch-prod-gpu-{version}", "tei", "ml.g5.xlarge", None)
    assert prod.serving_parameter == "/semsearch-prod/gpu/serving-endpoint"
    # A stage that scales to zero hosts its model as an inference component, named on every request.
    cdk_json = json.loads((REPO / "cdk.json").read_text())
    cdk_json["context"]["stages"]["dev"]["ops"] = {"active_hours_utc": "07-19"}
    cdk_json["context"]["stages"]["dev"]["endpoints"]["cpu"].update(
        flavor="custom", model_data_s3_uri="s3://models-bucket/all-minilm/model.tar.gz")
    cdk_json["context"]["stages"]["dev"]["endpoints"]["cpu"]["max_client_batch_size"] = 16
    (tmp_path / "cdk.json").write_text(json.dumps(cdk_json))
    dev = stage_defaults(None, tmp_path / "cdk.json")
    assert (dev.stage, dev.flavor, dev.inference_component) == ("dev", "custom", f"{dev.endpoint_name}-model")
    assert re.fullmatch(r"semsearch-dev-cpu-[0-9a-f]{8}", dev.endpoint_name)
    assert dev.batch_limits == {"tei": 16, "custom": 128}


def test_stage_defaults_need_no_cdk():
    """The CLI reads what a stage deploys from the definitions the stacks use, without starting
    jsii (seconds, and a Node.js process) for it."""
    code = ("import sys; from semsearch.loadtest import stage_defaults; d = stage_defaults('dev'); "
            "print(d.endpoint_name, d.batch_limits['tei'], 'aws_cdk' in sys.modules, 'jsii' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    name, limit, cdk_loaded, jsii_loaded = result.stdout.split()
    assert re.fullmatch(r"semsearch-dev-cpu-[0-9a-f]{8}", name) and (limit, cdk_loaded, jsii_loaded) == (
        "32", "False", "False")


def test_a_stage_is_load_tested_on_the_endpoint_that_serves_it_now(tmp_path):
    """After a promotion the stage serves on another endpoint: --stage reads the one the model
    stack recorded (SSM), checked against botocore's model; an undeployed stage is a clear error."""
    cdk_json = json.loads((REPO / "cdk.json").read_text())
    cdk_json["context"]["stages"]["dev"]["ops"] = {"active_hours_utc": "07-19"}
    (tmp_path / "cdk.json").write_text(json.dumps(cdk_json))
    defaults = stage_defaults("dev", tmp_path / "cdk.json")
    ssm = boto3.client("ssm", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    promoted = f"{defaults.endpoint_name}-ft-mivq2c1s"
    with Stubber(ssm) as stub:
        stub.add_response("get_parameter", {"Parameter": {"Name": defaults.serving_parameter, "Value": promoted}},
                          {"Name": "/semsearch-dev/cpu/serving-endpoint"})
        assert serving_endpoint(ssm, defaults) == (promoted, f"{promoted}-model")
        stub.add_client_error("get_parameter", "ParameterNotFound", "not found",
                              expected_params={"Name": "/semsearch-dev/cpu/serving-endpoint"})
        with pytest.raises(UsageError, match="cannot read /semsearch-dev/cpu/serving-endpoint"):
            serving_endpoint(ssm, defaults)


def test_connection_failures_are_counted_too(tmp_path):
    result = run_cli("--url", f"http://127.0.0.1:{free_port()}", "--requests", "3", "--concurrency", "1")
    assert result.returncode == 1
    assert json.loads(result.stdout)["status_counts"] == {"error:ConnectionRefusedError": 3}


def _recorded_params(client) -> list[dict]:
    """Every InvokeEndpoint's parameters, as the client is about to serialize them."""
    seen: list[dict] = []
    client.meta.events.register("provide-client-params.sagemaker-runtime.InvokeEndpoint",
                                lambda params, **_: seen.append(dict(params)))
    return seen


@pytest.mark.parametrize(("flavor", "component"), [("custom", None), ("tei", "semsearch-dev-cpu-model")])
def test_endpoint_mode_calls_sagemaker_runtime_with_stubbed_responses(flavor, component):
    client = boto3.client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="AKID",
                          aws_secret_access_key="secret")
    sent = _recorded_params(client)
    texts = ["one", "two", "three"]
    bodies = build_bodies(texts, 4, 2, lambda ts: [3] * len(ts), flavor=flavor)
    with Stubber(client) as stub:
        for i, (body, _, _) in enumerate(bodies):
            expected = {"EndpointName": "prod-embed", "Body": body, "ContentType": "application/json",
                        "Accept": "application/json", **({"InferenceComponentName": component} if component else {})}
            if i == 2:  # SageMaker throttles with a 400 (and a null message) under load
                stub.add_client_error("invoke_endpoint", service_error_code="ThrottlingException",
                                      http_status_code=400, expected_params=expected)
            else:
                payload = json.dumps([[0.0] * 384] * 2).encode()
                stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(payload), len(payload)),
                                                      "ContentType": "application/json"}, expected)
        summary = loadtest(endpoint_sender_factory(client, "prod-embed", inference_component=component),
                           target="sagemaker:prod-embed", requests=4, concurrency=1, batch_size=2, texts=texts,
                           count_tokens=lambda ts: [3] * len(ts), flavor=flavor, inference_component=component)
        stub.assert_no_pending_responses()
    assert len(sent) == 4
    assert [p for params in sent for p in botocore_api.validate("sagemaker-runtime", "InvokeEndpoint", params)] == []
    assert summary["status_counts"] == {"200": 3, "400": 1}
    assert (summary["ok"], summary["errors"]) == (3, 1)
    assert (summary["flavor"], summary["inference_component"], summary["dimension"]) == (flavor, component, 384)
    assert summary["error_messages"]["400"].startswith("ThrottlingException")
    assert summary["texts_per_s"] == pytest.approx(2 * summary["requests_per_s"])
    assert summary["tokens_per_s"] == pytest.approx(6 * summary["requests_per_s"])


def test_request_bodies_cycle_through_the_texts():
    bodies = build_bodies(["a", "bb", "ccc"], 3, 2, lambda ts: [len(t) for t in ts], flavor="custom")
    # Our handler's connector body names the kind (the ingest pipeline's: passage).
    assert [json.loads(b) for b, _, _ in bodies] == [{"inputs": texts, "prompt_name": "passage"}
                                                      for texts in (["a", "bb"], ["ccc", "a"], ["bb", "ccc"])]
    assert [tokens for _, _, tokens in bodies] == [3, 4, 5]


def test_tei_bodies_are_the_connectors():
    bodies = build_bodies(["a", "b \"quoted\""], 1, 2, lambda ts: [1] * len(ts), flavor="tei")
    assert json.loads(bodies[0][0]) == {"inputs": ["a", 'b "quoted"'], "truncate": True}


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (_percentile(values, 50), _percentile(values, 95), _percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert _percentile([7.0], 99) == 7.0


def test_bad_arguments_are_one_line_errors(tmp_path):
    result = run_cli("--url", "ftp://x", "--requests", "1", "--concurrency", "1")
    assert result.returncode == 2 and "is not an http(s) URL" in result.stderr
    result = run_cli("--url", "http://127.0.0.1:1", "--requests", "0", "--concurrency", "1")
    assert result.returncode == 2 and "must be at least 1" in result.stderr
