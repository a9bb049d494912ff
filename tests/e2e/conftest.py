"""The real thing: one OpenSearch node (security on: TLS + basic auth) and one local
endpoint (`semsearch.serve`, SigV4-checking, real all-MiniLM-L6-v2) per test session.

The glue runs through ``run_custom_resource``, which plays the CDK Provider framework's
part; only CloudFormation itself is absent. A missing Java or Maven fails the session
with what to install: these tests never skip.

The ``tei`` flavor's endpoint is TEI's own router behind the same SigV4 check (fixture
``tei``, semsearch.local.tei); where no router can be found (find_tei: --tei-bin /
$SEMSEARCH_TEI_BIN, ../shared/tools/tei, $SEMSEARCH_TEI_URL) its tests are skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semsearch.local.client import Connection
from semsearch.local.ingest import IngestReport, bulk_ingest
from semsearch.local.opensearch import LocalNodeError, NodeSettings, OpenSearchNode, reap_stale_nodes
from semsearch.local.stack import REGION, glue_properties, run_custom_resource
from semsearch.local.tei import RunningTei, TeiNotFound, TeiSource, find_tei, stage_serving, start_tei

ENDPOINT_NAME = "pytest"
ACCESS_KEY = "AKPYTESTLOCAL"
SECRET_KEY = "pytest-secret-key"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def opensearch() -> Iterator[Connection]:
    """Admin connection to a fresh node on a free port, stopped and removed at the end."""
    reap_stale_nodes("pytest-")  # nodes of earlier sessions that were killed
    node = OpenSearchNode(f"pytest-{os.getpid()}", NodeSettings(security=True), fresh=True)
    try:
        conn = node.start()
    except LocalNodeError as e:
        pytest.fail(str(e), pytrace=False)
    yield conn
    node.stop()
    shutil.rmtree(node.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def endpoint(model_dir) -> Iterator[Any]:
    from semsearch.serve import start_server

    handle = start_server(model_dir, name=ENDPOINT_NAME, region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    yield handle
    handle.stop()


def tei_source() -> TeiSource:
    """The TEI the tei-flavored tests use (find_tei); where there is none, the test asking is
    skipped with the reason: the one skip every tei case goes through."""
    try:
        return find_tei()
    except TeiNotFound as e:
        pytest.skip(f"tei flavor not tested: {e}")


def start_test_tei(model_dir: Path, work_dir: Path) -> RunningTei:
    """TEI on ``model_dir`` (or the one at $SEMSEARCH_TEI_URL, serving its own) with the config's
    limits, behind the SigV4-checking front with the session's keys; skipped where none is found."""
    source = tei_source()
    try:
        return start_tei(source, model_dir, work_dir=work_dir, serving=stage_serving(), name=ENDPOINT_NAME,
                         region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    except Exception as e:
        pytest.fail(f"TEI ({source.describe()}) did not start: {e}", pytrace=False)


@pytest.fixture(scope="session")
def tei(model_dir, tmp_path_factory) -> Iterator[RunningTei]:
    """TEI's router (ours on the packaged model with the config's limits, or the one at
    $SEMSEARCH_TEI_URL) behind the SigV4-checking front; ``.info`` is its GET /info."""
    running = start_test_tei(model_dir, tmp_path_factory.mktemp("tei"))
    yield running
    running.stop()


@pytest.fixture(scope="module", params=["custom", "tei"])
def flavor(request) -> tuple[str, str]:
    """Each serving flavor and the invocation URL of its endpoint: our handler, or TEI."""
    if request.param == "tei":
        return "tei", request.getfixturevalue("tei").front.invocations_url
    return "custom", invocation_url(request.getfixturevalue("endpoint"))


def invocation_url(handle: Any, name: str = ENDPOINT_NAME) -> str:
    return f"http://127.0.0.1:{handle.port}/endpoints/{name}/invocations"


def current_test() -> str:
    """The test function pytest is running (set up, calling or tearing down), parameters left out."""
    running = os.environ.get("PYTEST_CURRENT_TEST", "")
    return running.rsplit(" (", 1)[0].split("[", 1)[0]


@pytest.fixture(scope="session")
def make_props(opensearch, endpoint) -> Callable[..., dict[str, Any]]:
    """Custom-resource properties for a stack called ``name`` on the session node.

    A name belongs to one test function (a module fixture's to the test that set it up): two
    tests with one name would share the physical id, and whatever one left behind would be
    found, adopted or refused in the other.
    """
    owners: dict[str, str] = {}

    def make(name: str, **overrides: Any) -> dict[str, Any]:
        owner = owners.setdefault(name, current_test())
        if owner != current_test():
            raise AssertionError(f"stack name {name!r} is {owner}'s already: give this test its own")
        return glue_properties(connection=opensearch, endpoint_url=invocation_url(endpoint), access_key=ACCESS_KEY,
                               secret_key=SECRET_KEY, dimension=384, space_type="innerproduct", name=name,
                               index=f"{name}-docs", **overrides)

    return make


@pytest.fixture(scope="session")
def main_stack(make_props) -> Iterator[dict[str, Any]]:
    """The stack most tests search: hybrid pipeline on, a cluster setting, a role mapping."""
    props = make_props("e2e-main", HybridSearch=True,
                       ClusterSettings={"plugins.ml_commons.model_auto_redeploy.enable": True},
                       RoleMappings={"ml_full_access": ["arn:aws:iam::123456789012:role/e2e-glue"]})
    result = run_custom_resource("Create", props)
    yield {"props": props, **result}
    run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])


@pytest.fixture(scope="session")
def ingested(opensearch, main_stack, dev_pairs) -> IngestReport:
    """The 500 dev documents, embedded by the ingest pipeline on their way in."""
    docs = [{"id": p["id"], "text": p["text"]} for p in dev_pairs]
    return bulk_ingest(opensearch, main_stack["Data"]["IndexName"], docs)


def ml_objects(conn: Connection, name: str) -> dict[str, int]:
    """How many connectors / model groups / models carry ``name`` (0 when the index is absent)."""
    counts = {}
    for kind in ("connectors", "model_groups", "models"):
        status, body = conn.request("POST", f"/_plugins/_ml/{kind}/_search",
                                    {"size": 100, "query": {"term": {"name.keyword": name}}}, ok=(404,))
        counts[kind] = 0 if status == 404 else len(body["hits"]["hits"])
    return counts


def vectors(conn: Connection, index: str, ids: list[str]) -> np.ndarray:
    """The stored embeddings of ``ids`` in that order (each must exist)."""
    _, body = conn.request("POST", f"/{index}/_mget", {"ids": ids})
    assert all(d["found"] for d in body["docs"]), [d["_id"] for d in body["docs"] if not d["found"]]
    return np.array([d["_source"]["embedding"] for d in body["docs"]])


def count(conn: Connection, index: str) -> int:
    """Documents in ``index`` after a refresh."""
    conn.request("POST", f"/{index}/_refresh")
    return conn.request("GET", f"/{index}/_count")[1]["count"]


def exists(conn: Connection, path: str) -> bool:
    status, _ = conn.request("GET", path, ok=(404,))
    return status == 200
