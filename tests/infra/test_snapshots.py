"""Every stack of every stage against a reviewed JSON snapshot.

Update on purpose with `pytest tests/infra/test_snapshots.py --snapshot-update` and review
the diff: a snapshot change is an infrastructure change.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

# Asset hashes change with any byte of a Lambda's code; mask them so the snapshot shows
# infrastructure changes, not code edits (the code has its own tests).
_HASH = re.compile(r"[0-9a-f]{64}")


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, str):
        if "cdk-assets --path" in value:
            # CDK Pipelines' asset-publishing buildspecs list one command per asset, ordered
            # by asset hash: they change with any code edit, like the hashes themselves.
            return "<cdk-assets publish commands>"
        return _HASH.sub("<asset-hash>", value)
    return value


@pytest.fixture
def json_snapshot(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("stage", ["dev", "prod"])
@pytest.mark.parametrize("kind", ["storage", "model", "search", "jobs", "ops"])
def test_stack_matches_snapshot(templates, json_snapshot, stage, kind):
    assert _mask(templates[(stage, kind)].to_json()) == json_snapshot(name=f"{stage}-{kind}")


def test_pipeline_matches_snapshot(app, json_snapshot):
    from aws_cdk import assertions

    template = assertions.Template.from_stack(app.node.find_child("Pipeline"))
    assert _mask(template.to_json()) == json_snapshot(name="pipeline")
