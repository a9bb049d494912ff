"""What the node needs before it starts: pinned versions, Java, Maven, the model's shape."""

from __future__ import annotations

import os
import shutil

import pytest

from semsearch.local import opensearch
from semsearch.local.opensearch import LocalNodeError, local_home, pinned_versions, reap_stale_nodes
from semsearch.local.stack import cfn_strings, model_shape


def test_versions_are_pinned_once_and_match():
    versions = pinned_versions()
    assert versions["opensearch.version"] == "2.19.1"
    # Plugins are four-part and must match the core exactly.
    assert versions["opensearch.plugin.version"] == versions["opensearch.version"] + ".0"


def test_missing_java_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(LocalNodeError, match="Java 17 is needed.*install a JDK.*openjdk-17"):
        opensearch.java_home()
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))  # a JAVA_HOME with no bin/java
    with pytest.raises(LocalNodeError, match="Java 17 is needed"):
        opensearch.java_home()


def test_missing_maven_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalNodeError, match=r"Maven is needed.*apt-get install maven"):
        opensearch._maven()


def test_this_machine_has_what_the_node_needs():
    # CI must run the real node: say so here, in one line, rather than deep in a fixture.
    assert (opensearch.java_home() / "bin" / "java").is_file()
    assert opensearch._maven()


def test_model_shape_from_files(model_dir):
    assert model_shape(model_dir) == (384, "innerproduct")


def test_properties_arrive_as_cloudformation_sends_them():
    assert cfn_strings({"Dimension": 384, "HybridSearch": True, "RoleMappings": {"r": ["a"]}, "X": 0.5}) == {
        "Dimension": "384", "HybridSearch": "true", "RoleMappings": {"r": ["a"]}, "X": "0.5"}


def test_nodes_of_dead_sessions_are_reaped_live_ones_kept():
    nodes = local_home() / "nodes"
    dead, live = nodes / "pytest-reaptest-999999", nodes / f"pytest-reaptest-{os.getppid()}"
    for node_dir in (dead, live):
        (node_dir / "config").mkdir(parents=True, exist_ok=True)
        (node_dir / "node.pid").write_text("999998")  # no such process: nothing to stop
    try:
        assert reap_stale_nodes("pytest-reaptest-") == [dead.name]
        assert not dead.exists() and live.exists()
    finally:
        shutil.rmtree(live, ignore_errors=True)
