"""Synthesize the app once per session with the default config (cdk.json), offline."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_context() -> dict[str, Any]:
    return dict(json.loads((REPO_ROOT / "cdk.json").read_text())["context"])


def synth(context: dict[str, Any] | None = None, outdir: Path | None = None):
    """Build and synthesize the app; returns (app, cloud assembly)."""
    import aws_cdk as cdk  # noqa: F401  (jsii start-up cost paid once per session)

    from app import build_app

    ctx = default_context() if context is None else context
    if outdir is not None:
        os.environ["CDK_OUTDIR"] = str(outdir)
    try:
        app = build_app(ctx)
        assembly = app.synth()
    finally:
        os.environ.pop("CDK_OUTDIR", None)
    return app, assembly


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory):
    return synth(outdir=tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="session")
def app(synthesized):
    return synthesized[0]


@pytest.fixture(scope="session")
def assembly(synthesized):
    return synthesized[1]


@pytest.fixture(scope="session")
def templates(app) -> dict[tuple[str, str], Any]:
    """{(stage, stack kind): assertions.Template} for every stack of every stage."""
    from aws_cdk import assertions

    found = {}
    for stage_name in ("dev", "prod"):
        stage = app.node.find_child(stage_name)
        for kind in ("storage", "model", "search", "jobs", "ops"):
            found[(stage_name, kind)] = assertions.Template.from_stack(getattr(stage, kind))
    return found


#: The synth variants users deploy, beyond the default cdk.json: (dotted context keys).
SPEC_VARIANTS: dict[str, dict[str, str]] = {
    "custom": {"dev.endpoints.cpu.flavor": "custom",
               "dev.endpoints.cpu.model_data_s3_uri": "s3://my-models-bucket/minilm/model.tar.gz"},
    "active_hours": {"dev.ops.active_hours_utc": "07-19"},
    "bedrock": {"dev.search.provider": "bedrock",
                "dev.bedrock": json.dumps({"model_id": "amazon.titan-embed-text-v2:0", "dimension": 512})},
    "vpc": {"dev.vpc": json.dumps({"vpc_id": "vpc-0123456789abcdef0", "availability_zones": ["us-east-1a"],
                                   "subnet_ids": ["subnet-0123456789abcdef0"],
                                   "security_group_ids": ["sg-0123456789abcdef0"]})},
}


@pytest.fixture(scope="session")
def variant_app(app, tmp_path_factory):
    """variant_app(name): the app synthesized once per session for "default" or a SPEC_VARIANTS
    entry (those synthesize the dev stage only)."""
    apps = {"default": app}

    def get(name: str):
        if name not in apps:
            ctx = default_context()
            ctx["stage"] = "dev"
            ctx.update(SPEC_VARIANTS[name])
            apps[name] = synth(ctx, tmp_path_factory.mktemp(f"cdk.out.{name}"))[0]
        return apps[name]

    return get
