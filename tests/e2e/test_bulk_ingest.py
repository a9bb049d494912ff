"""Bulk ingest through the pipeline: failed items are retried, and what never succeeds is
raised by id, never dropped."""

from __future__ import annotations

import threading
import time

import pytest

from semsearch.errors import UsageError
from semsearch.local.ingest import BulkError, bulk_ingest, read_corpus
from semsearch.local.stack import REGION, run_custom_resource
from tests.e2e.conftest import ACCESS_KEY, SECRET_KEY, invocation_url


@pytest.fixture(scope="module")
def bulk_stack(opensearch, make_props):
    props = make_props("e2e-bulk")
    result = run_custom_resource("Create", props)
    yield result["Data"]["IndexName"]
    run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])


def test_failing_items_are_retried_then_surfaced(opensearch, bulk_stack, dev_pairs):
    docs = [{"id": p["id"], "text": p["text"]} for p in dev_pairs[:20]]
    docs.insert(7, {"id": "not-text", "text": {"nested": "object"}})  # the pipeline rejects it every time
    with pytest.raises(BulkError) as info:
        bulk_ingest(opensearch, bulk_stack, docs, attempts=3, backoff_s=0.05)
    report = info.value.report
    assert list(report.failed) == ["not-text"]
    assert "HTTP 400" in report.failed["not-text"]
    assert report.indexed == 20 and report.retried == 2  # one item, two retries
    assert "1 document(s) failed to index after retries (20 indexed): not-text: HTTP 400" in str(info.value)
    assert opensearch.request("GET", f"/{bulk_stack}/_count")[1]["count"] == 20


def test_endpoint_outage_is_retried_until_it_returns(opensearch, make_props, model_dir, dev_pairs):
    """The endpoint disappears mid-ingest and comes back on the same port: nothing is lost."""
    from semsearch.serve import start_server

    server = start_server(model_dir, name="flaky", region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    port = server.port
    props = make_props("e2e-flaky", EndpointUrl=invocation_url(server, "flaky"), MaxRetryTimes=0)
    try:
        result = run_custom_resource("Create", props)
    finally:
        server.stop()
    restarted = []

    def come_back() -> None:
        time.sleep(2.5)
        restarted.append(start_server(model_dir, name="flaky", port=port, region=REGION, access_key=ACCESS_KEY,
                                      secret_key=SECRET_KEY))

    thread = threading.Thread(target=come_back)
    thread.start()
    try:
        docs = [{"id": p["id"], "text": p["text"]} for p in dev_pairs[:40]]
        report = bulk_ingest(opensearch, "e2e-flaky-docs", docs, bulk_docs=20, attempts=6, backoff_s=1.0)
        assert report.indexed == 40 and not report.failed
        assert report.retried >= 20  # the first batch failed while the endpoint was away
        assert opensearch.request("GET", "/e2e-flaky-docs/_count")[1]["count"] == 40
    finally:
        thread.join()
        try:
            run_custom_resource("Delete", props, physical_id=result["PhysicalResourceId"])
        finally:  # the endpoint stops even when the Delete fails: its port is this test's alone
            for handle in restarted:
                handle.stop()


def test_corpus_lines_are_checked(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": 1, "text": "a"}\n\n{"id": "b", "text": "b", "extra": 1}\n')
    assert list(read_corpus(good)) == [{"id": "1", "text": "a"}, {"id": "b", "text": "b"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "a"}\n{"id": "b"}\n')
    with pytest.raises(UsageError, match=r"bad.jsonl:2: expected"):
        list(read_corpus(bad))
    bad.write_text("not json\n")
    with pytest.raises(UsageError, match=r"bad.jsonl:1: not JSON"):
        list(read_corpus(bad))
    with pytest.raises(UsageError, match="no such file"):
        list(read_corpus(tmp_path / "missing.jsonl"))
