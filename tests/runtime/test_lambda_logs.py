"""Both Lambdas log one JSON line per record, carrying the invocation's request id, through
their own loggers (never the root logger, where the runtime's text handler sits)."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
from bulk_loader import handler as loader
from search_glue import handler as glue

LOGGERS = ("search_glue", "bulk_loader", "opensearch_http")


def lambda_context(request_id: str) -> SimpleNamespace:
    """Stands in for the runtime's LambdaContext: the two members the handlers read."""
    return SimpleNamespace(aws_request_id=request_id, get_remaining_time_in_millis=lambda: 900_000)


@pytest.fixture(autouse=True)
def restore_loggers():
    """The handlers install JSON output on their loggers; put them back as they were."""
    saved = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate) for name in LOGGERS}
    root = (list(logging.getLogger().handlers), logging.getLogger().level)
    yield
    for name, (handlers, propagate) in saved.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate
    assert (list(logging.getLogger().handlers), logging.getLogger().level) == root, "a handler changed the root logger"


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "nothing logged"
    return [json.loads(line) for line in lines]


def test_glue_logs_json_lines_with_the_request_id(capsys, caplog):
    # A Delete of a Create that failed before naming anything: no HTTP call, two log lines.
    answer = glue.on_event({"RequestType": "Delete", "PhysicalResourceId": "not-ours"}, lambda_context("req-glue-1"))
    assert answer == {"PhysicalResourceId": "not-ours"}
    start, done = json_lines(capsys.readouterr().out)
    assert start["request_id"] == done["request_id"] == "req-glue-1"
    assert start["message"] == "on_event Delete not-ours" and start["level"] == "INFO"
    assert done["logger"] == "search_glue.handler" and "'not-ours' is not one of ours" in done["message"]
    assert set(done) == {"time", "level", "logger", "message", "request_id"}
    assert not caplog.records, "the line also went up to the root logger"


def test_loader_logs_json_lines_with_the_request_id(capsys, caplog, monkeypatch):
    monkeypatch.delenv("OPENSEARCH_URL", raising=False)
    with pytest.raises(loader.LoadError):
        loader.handler({"input": "s3://b/k"}, lambda_context("req-loader-1"))
    # The error itself is the runtime's to report; what the loader logs carries the id.
    loader.log.warning("something with %s", "args", extra={"data": {"documents_in": 3}})
    (entry,) = json_lines(capsys.readouterr().out)
    assert entry["request_id"] == "" and entry["data"] == {"documents_in": 3}  # outside an invocation
    assert not caplog.records

    @loader.lambda_entry(*loader.LOGGERS)
    def inner(event, context):
        loader.log.info("inside")
        try:
            raise ValueError("boom")
        except ValueError:
            loader.log.exception("failed")

    inner({}, lambda_context("req-loader-2"))
    inside, failed = json_lines(capsys.readouterr().out)
    assert inside["request_id"] == failed["request_id"] == "req-loader-2"
    assert failed["level"] == "ERROR" and "ValueError: boom" in failed["exception"]


def test_log_level_is_honoured(capsys, monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "warning")
    loader.set_level(*loader.LOGGERS)
    try:
        with pytest.raises(loader.LoadError):
            loader.handler({"input": "s3://b/k"}, lambda_context("req-loader-3"))
        loader.log.info("dropped")
        loader.log.warning("kept")
        assert [e["message"] for e in json_lines(capsys.readouterr().out)] == ["kept"]
    finally:
        monkeypatch.setenv("LOG_LEVEL", "INFO")
        loader.set_level(*loader.LOGGERS)


def test_without_a_lambda_context_logging_is_the_callers(capsys):
    """`semsearch local` calls the glue in-process with no context: no JSON handler appears."""
    before = list(logging.getLogger("search_glue").handlers)
    glue.on_event({"RequestType": "Delete", "PhysicalResourceId": "not-ours"})
    assert logging.getLogger("search_glue").handlers == before
    assert capsys.readouterr().out == ""
