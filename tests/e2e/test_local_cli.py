"""`semsearch local up/status/down` and `semsearch search`, as a user runs them.

This starts a second node and a `semsearch serve` process beside the session's, under a
stack name of its own, so a developer's `local up` on the default ports is left alone.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from semsearch.local.stack import LocalStack
from tests.conftest import free_port


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def cli(monkeypatch):
    name = f"pytest-cli-{os.getpid()}"
    monkeypatch.setenv("SEMSEARCH_LOCAL_STACK", name)
    env = {**os.environ, "SEMSEARCH_LOCAL_STACK": name}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "semsearch.cli", *args], env=env, capture_output=True,
                              text=True, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"semsearch {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    yield run
    LocalStack(name).down(purge=True)  # whatever happened above, nothing stays running


def test_local_up_twice_status_search_down(cli, dev_pairs, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in dev_pairs[:60]))
    os_port, ep_port = free_port(), free_port()
    ports = ["--opensearch-port", str(os_port), "--endpoint-port", str(ep_port)]

    cli("local", "up", "--flavor", "custom", "--corpus", str(corpus), *ports)
    first = json.loads(cli("local", "status", "--json").stdout)
    assert first["running"] is True
    assert first["opensearch_url"] == f"https://127.0.0.1:{os_port}"
    assert first["endpoint_url"].startswith(f"http://127.0.0.1:{ep_port}/endpoints/local-")
    assert first["index"] == "documents" and first["model_id"] and first["documents"] == 60
    assert first["auth"]["username"] == "admin" and first["auth"]["password"]

    # Idempotent: the same objects, no duplicate documents, servers reused.
    second_up = cli("local", "up", "--flavor", "custom", "--corpus", str(corpus), *ports)
    assert "starting" not in second_up.stderr
    second = json.loads(cli("local", "status", "--json").stdout)
    for key in ("model_id", "physical_id", "connector_id", "opensearch_url", "endpoint_url"):
        assert second[key] == first[key], key
    assert second["documents"] == 60

    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(p["query"] for p in dev_pairs[:10]) + "\n")
    lines = [json.loads(line) for line in cli("search", "--queries-file", str(queries), "-k", "3", "--json").stdout.splitlines()]
    assert [line["query"] for line in lines] == [p["query"] for p in dev_pairs[:10]]
    found = sum(p["id"] in [h["id"] for h in line["hits"]] for p, line in zip(dev_pairs[:10], lines, strict=True))
    assert found >= 7

    down = cli("local", "down")
    assert "stopped endpoint, opensearch" in down.stdout
    assert not listening(os_port) and not listening(ep_port)
    status = cli("local", "status", "--json", check=False)
    assert status.returncode == 1 and json.loads(status.stdout)["running"] is False

    # Up again after down: the node restarts on its data, the glue adopts everything.
    cli("local", "up", "--flavor", "custom", *ports)
    again = json.loads(cli("local", "status", "--json").stdout)
    assert again["running"] is True and again["documents"] == 60
    assert (again["model_id"], again["physical_id"]) == (first["model_id"], first["physical_id"])
    hits = json.loads(cli("search", dev_pairs[0]["query"], "-k", "3", "--json").stdout)["hits"]
    assert dev_pairs[0]["id"] in [h["id"] for h in hits]
    cli("local", "down")
    assert not listening(os_port) and not listening(ep_port)
