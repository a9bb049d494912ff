"""Teardown against ml-commons' 409s, without a node: which models it removes before trying
again, which it never touches, and what the error says. tests/e2e/test_glue_teardown.py
makes the real node answer each of these."""

from __future__ import annotations

import re
from typing import Any

import pytest
from search_glue import steps
from search_glue.client import StepError

PID = "e2e-x-0123456789"
NAMES = steps.Names(PID, "docs")


def words(connector_id: str) -> set[str]:
    """What the standard analyzer makes of an id, near enough: lower-cased words between '-'."""
    return {w for w in connector_id.lower().split("-") if w}


class FakeMLCommons:
    """The ml-commons calls teardown makes, with 2.19's answers (its 409 bodies verbatim)."""

    def __init__(self) -> None:
        self.connectors: dict[str, str] = {}  # id -> name
        self.groups: dict[str, str] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []

    def call(self, step: str, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = ()) -> tuple[int, Any]:
        self.calls.append((method, path))
        status, answer = self.answer(method, path, body)
        if status >= 300 and status not in ok:
            raise StepError(step, f"{method} {path} -> HTTP {status}: {answer}", status, answer)
        return status, answer

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if m := re.fullmatch(r"/_plugins/_ml/(connectors|model_groups|models)/_search", path):
            return 200, {"hits": {"hits": [{"_id": i, "_source": src} for i, src in self.search(m[1], body)]}}
        if m := re.fullmatch(r"/_plugins/_ml/models/([^/]+)(/_undeploy)?", path):
            model = self.models.get(m[1])
            if model is None:
                return 404, {"status": 404}
            if method == "GET":
                return 200, model
            if m[2]:
                model["model_state"] = "UNDEPLOYED"
                return 200, {}
            del self.models[m[1]]
            return 200, {"result": "deleted"}
        if m := re.fullmatch(r"/_plugins/_ml/connectors/([^/]+)", path):
            if m[1] not in self.connectors:
                return 404, {"status": 404}
            users = [i for i, src in self.search("models", {"query": {"match": {"connector_id": m[1]}}})]
            if users:
                reason = (f"{len(users)} models are still using this connector, please delete or update the models "
                          f"first: [{', '.join(users)}]")
                return 409, {"error": {"root_cause": [{"type": "status_exception", "reason": reason}],
                                       "type": "status_exception", "reason": reason}, "status": 409}
            del self.connectors[m[1]]
            return 200, {"result": "deleted"}
        if m := re.fullmatch(r"/_plugins/_ml/model_groups/([^/]+)", path):
            if any(src.get("model_group_id") == m[1] for src in self.models.values()):
                reason = "Cannot delete the model group when it has associated model versions"
                return 409, {"error": {"type": "status_exception", "reason": reason}, "status": 409}
            return (200, {}) if self.groups.pop(m[1], None) else (404, {"status": 404})
        return 404, {"status": 404}  # index, pipelines, roles: already gone

    def search(self, kind: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        query = body["query"]
        if kind != "models":
            objects = self.connectors if kind == "connectors" else self.groups
            return [(i, {"name": n}) for i, n in objects.items() if n == query["term"]["name.keyword"]]
        if "term" in query:
            return [(i, src) for i, src in self.models.items() if src["name"] == query["term"]["name.keyword"]]
        ((field, value),) = query["match"].items()
        if field == "connector_id":  # a text field: any shared word matches
            return [(i, src) for i, src in self.models.items() if words(src[field]) & words(value)]
        return [(i, src) for i, src in self.models.items() if src.get(field) == value]

    def model(self, model_id: str, name: str, connector_id: str, group_id: str = "g-other") -> None:
        self.models[model_id] = {"name": name, "connector_id": connector_id, "model_group_id": group_id,
                                 "model_state": "DEPLOYED"}


@pytest.fixture
def node() -> FakeMLCommons:
    fake = FakeMLCommons()
    fake.connectors["c1"] = PID
    fake.groups["g1"] = PID
    return fake


def hide_models_from_the_name_search(monkeypatch: pytest.MonkeyPatch) -> None:
    name_search = steps.find_all
    monkeypatch.setattr(steps, "find_all", lambda client, step, kind, name:
                        [] if kind == "models" else name_search(client, step, kind, name))


def test_our_models_the_409_names_are_removed_then_the_delete_is_tried_again(node, monkeypatch):
    node.model("m1", PID, "c1", "g1")
    node.model("m2", PID, "c1", "g1")  # registered after the name search ran
    hide_models_from_the_name_search(monkeypatch)
    steps.teardown(node, NAMES)
    assert node.models == {} and node.connectors == {} and node.groups == {}
    deletes = [path for method, path in node.calls if method == "DELETE" and "/connectors/" in path]
    assert deletes == ["/_plugins/_ml/connectors/c1"] * 2  # refused once, then done


def test_a_model_in_our_group_the_name_search_missed_goes_before_the_group(node, monkeypatch):
    node.connectors.clear()
    node.model("m1", f"{PID}-query", "c9", "g1")
    hide_models_from_the_name_search(monkeypatch)
    steps.teardown(node, NAMES)
    assert node.models == {} and node.groups == {}


def test_a_connector_only_another_connector_s_model_holds_is_left_empty_and_delete_succeeds(node):
    """ml-commons' text match counts a model on zz-shared as a user of c1-shared: nothing uses
    ours really, so the Delete succeeds and leaves the empty connector; their model is untouched."""
    node.connectors["c1-shared"] = PID
    node.model("theirs", "someone-else", "zz-shared")
    steps.teardown(node, NAMES)
    assert "theirs" in node.models  # never touched
    assert node.connectors == {"c1-shared": PID} and node.groups == {}  # everything else went


def test_a_model_of_another_name_on_our_connector_is_never_deleted(node):
    node.model("hand", "hand-made", "c1", "g-hand")
    with pytest.raises(StepError, match=r"connector c1 not deleted: .*: hand \(hand-made: not ours, never deleted"):
        steps.teardown(node, NAMES)
    assert "hand" in node.models and node.groups == {}


def test_retries_are_bounded_when_our_model_will_not_go(node, monkeypatch):
    node.model("m1", PID, "c1", "g1")
    hide_models_from_the_name_search(monkeypatch)
    monkeypatch.setattr(steps, "_delete_model", lambda client, model_id: None)  # answers, deletes nothing
    with pytest.raises(StepError, match=rf"m1 \({PID}: ours, still there after {steps.DELETE_ATTEMPTS} deletes\)"):
        steps.teardown(node, NAMES)
    deletes = [path for method, path in node.calls if method == "DELETE" and "/connectors/" in path]
    assert len(deletes) == steps.DELETE_ATTEMPTS
