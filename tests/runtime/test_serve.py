"""The local endpoint (semsearch serve) over real HTTP, on the real model."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from inference_code.embedder import load_embedder
from semsearch.serve import start_server

NAME = "test-ep"
TEXTS = ["ssh client for secure remote logins", "library for reading PNG images", "a daemon for MIDI routing"]


@pytest.fixture(scope="module")
def server(model_dir):
    # Small limits so the limit checks are cheap to reach.
    handle = start_server(model_dir, name=NAME, max_batch=16, max_payload_mb=0.05)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def reference(model_dir):
    return load_embedder(model_dir).embed(TEXTS)


def request(handle, method, path, body=b"", headers=None, conn=None):
    """(status, headers, body) of one request; reuses ``conn`` when given (keep-alive)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", handle.port, timeout=120)
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    conn.request(method, path, body=body if method == "POST" else None,
                 headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    if own:
        conn.close()
    return response.status, dict(response.getheaders()), data


def invoke(handle, body, content_type="application/json", path=f"/endpoints/{NAME}/invocations", **kw):
    return request(handle, "POST", path, body, {"Content-Type": content_type}, **kw)


def assert_still_serving(handle):
    status, _, data = invoke(handle, ["still serving"])
    assert status == 200 and len(json.loads(data)) == 1


def test_ping(server):
    status, headers, data = request(server, "GET", "/ping")
    embedder = server.server.service.embedder
    # Says which backend and precision serve, and why: the embedder's own choice.
    assert status == 200 and json.loads(data) == {"status": "Healthy", "mode": "exact", "path": embedder.path,
                                                  "why": embedder.why}
    assert embedder.path in ("onnx fp32", "openvino bf16") and embedder.why


def test_both_invocation_paths_return_the_models_embeddings(server, reference):
    for path in ("/invocations", f"/endpoints/{NAME}/invocations"):
        status, headers, data = invoke(server, TEXTS, path=path)
        assert status == 200 and headers["Content-Type"] == "application/json"
        np.testing.assert_allclose(np.array(json.loads(data), dtype=np.float32), reference, atol=1e-6)


@pytest.mark.parametrize(("body", "content_type", "check"), [
    ({"inputs": TEXTS}, "application/json", lambda out: len(out) == 3 and len(out[0]) == 384),
    ({"text_inputs": TEXTS[0]}, "application/json", lambda out: len(out["embedding"]) == 1),
    (TEXTS[0].encode(), "application/x-text", lambda out: len(out["embedding"][0]) == 384),
    ({"queries": ["PNG"], "corpus": TEXTS, "top_k": 2, "mode": "nn_corpus"}, "application/json",
     lambda out: out[0][0]["corpus_id"] == 1 and len(out[0]) == 2),
], ids=["inputs", "text_inputs", "x-text", "nn_corpus"])
def test_every_shape_over_http(server, body, content_type, check):
    status, _, data = invoke(server, body, content_type)
    assert status == 200 and check(json.loads(data))


def test_jsonlines_over_http(server, reference):
    body = "".join(json.dumps({"id": f"doc-{i}", "text_inputs": t}) + "\n" for i, t in enumerate(TEXTS * 7))
    status, headers, data = invoke(server, body.encode(), "application/jsonlines")
    lines = [json.loads(line) for line in data.decode().splitlines()]
    assert status == 200 and headers["Content-Type"] == "application/jsonlines"
    assert [row["id"] for row in lines] == [f"doc-{i}" for i in range(21)]  # 21 lines > batch limit 16: chunked
    np.testing.assert_allclose(lines[20]["embedding"], reference[2], atol=1e-6)


@pytest.mark.parametrize(("body", "content_type", "status", "reason"), [
    ([], "application/json", 400, "the array is empty"),
    (["a", 1], "application/json", 400, "item 1 of the array is a number"),
    ([{"deep": [["junk"]]}], "application/json", 400, "item 0 of the array is an object"),
    (b"[\"unterminated", "application/json", 400, "body is not valid JSON"),
    (b"a,b", "text/csv", 415, "unsupported content type"),
    ({"queries": ["a"], "mode": "nn_magic"}, "application/json", 400, "unknown mode"),
    ({"queries": ["a"], "mode": "nn_corpus"}, "application/json", 400, "needs 'corpus'"),
    ({"queries": ["a"], "mode": "nn_train_data"}, "application/json", 400, "no corpus|none"),
    (["a"] * 17, "application/json", 413, "17 texts is over this endpoint's batch limit of 16"),
    (["x" * 60_000], "application/json", 413, "over this endpoint's limit of 52428 bytes"),
], ids=["empty", "non-string", "nested", "bad-json", "content-type", "mode", "no-corpus", "no-packaged-corpus",
        "batch-limit", "payload-limit"])
def test_bad_input_gets_a_4xx_json_reason_and_the_server_keeps_serving(server, body, content_type, status, reason):
    got, headers, data = invoke(server, body, content_type)
    assert got == status
    error = json.loads(data)["error"]
    assert re.search(reason, error) and "\n" not in error
    assert_still_serving(server)


def test_unknown_routes_and_endpoint_names_are_404(server):
    status, _, data = invoke(server, ["a"], path="/endpoints/someone-else/invocations")
    assert status == 404 and "someone-else" in json.loads(data)["error"]
    assert request(server, "GET", "/metrics")[0] == 404
    assert invoke(server, ["a"], path="/predict")[0] == 404


def test_a_body_without_content_length_is_411(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\n[\"a\"]\r\n0\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 411")
    assert_still_serving(server)


def test_keep_alive_connection_serves_many_requests_including_errors(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        statuses = [invoke(server, body, conn=conn)[0] for body in (["a"], [], ["b", "c"], b"{", ["d"])]
    finally:
        conn.close()
    assert statuses == [200, 400, 200, 400, 200]


def test_concurrent_requests_each_get_their_own_answer(server, model_dir):
    batches = [[f"package number {i} does {w}" for w in ("networking", "graphics", "sound")] for i in range(6)]
    expected = load_embedder(model_dir).embed([t for b in batches for t in b]).reshape(6, 3, -1)
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        status, _, data = invoke(server, batches[i])
        assert status == 200
        results[i] = np.array(json.loads(data), dtype=np.float32)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(6))
    for i in range(6):
        np.testing.assert_allclose(results[i], expected[i], atol=1e-5)


def test_stop_finishes_the_request_in_flight_and_closes_idle_connections(model_dir, dev_pairs):
    handle = start_server(model_dir, name="graceful")
    idle = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=120)
    assert request(handle, "GET", "/ping", conn=idle)[0] == 200  # then left open, idle

    def wait_for_busy(count: int) -> None:
        deadline = time.monotonic() + 60
        while handle.server.busy_connections() != count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handle.server.busy_connections() == count

    wait_for_busy(0)  # the ping's connection counts as idle once its answer is written
    busy = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=120)
    docs = [p["text"] for p in dev_pairs[:64]]
    busy.request("POST", "/invocations", body=json.dumps(docs), headers={"Content-Type": "application/json"})
    wait_for_busy(1)  # the server is working on it

    stopper = threading.Thread(target=handle.stop)
    stopper.start()
    response = busy.getresponse()
    assert response.status == 200 and len(json.loads(response.read())) == 64
    assert response.getheader("Connection") == "close"
    stopper.join()
    handle.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", handle.port), timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        request(handle, "GET", "/ping", conn=idle)  # the idle connection was closed
    busy.close()
    idle.close()


def test_a_stopped_server_can_be_restarted_on_the_same_port(model_dir):
    first = start_server(model_dir, name="again")
    port = first.port
    first.stop()
    second = start_server(model_dir, name="again", port=port)
    try:
        assert request(second, "GET", "/ping")[0] == 200
    finally:
        second.stop()


def test_cli_serve_prints_its_url_and_stops_on_sigterm(model_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SEMSEARCH_ACCESS_KEY": "AKIDCLI", "SEMSEARCH_SECRET_KEY": "s3cret"}
    proc = subprocess.Popen([sys.executable, "-m", "semsearch.cli", "serve", "--model-dir", str(model_dir),
                             "--port", "0", "--name", "cli-ep", "--mode", "fast", "--max-batch", "4", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.fullmatch(r"serving cli-ep on http://127\.0\.0\.1:(\d+)\n", line)
        assert match, line + proc.stderr.read()
        conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=120)
        conn.request("POST", "/endpoints/cli-ep/invocations", body=json.dumps(["a"] * 5),
                      headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 413  # --max-batch 4 applies
        response.read()
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_cli_serve_refuses_half_a_key_pair(model_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMSEARCH_")}
    result = subprocess.run([sys.executable, "-m", "semsearch.cli", "serve", "--model-dir", str(model_dir),
                             "--port", "0", "--access-key", "AKID"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "semsearch serve: error: give both the access key and the secret key, or neither")
