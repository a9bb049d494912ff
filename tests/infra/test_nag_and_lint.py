"""cdk-nag (AwsSolutions) and cfn-lint on every synthesized template."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3

from app import nag_failures
from stacks.nag import acknowledge, enable_nag


def test_no_unacknowledged_nag_findings(assembly):
    assert nag_failures(assembly.directory) == []


def test_nag_is_active_and_fails_on_a_finding(tmp_path):
    """Guard against a silently disabled plugin: an unencrypted, unlogged bucket must be flagged."""
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Probe")
    s3.Bucket(stack, "Plain")
    enable_nag(app)
    with pytest.raises(RuntimeError, match="ValidationFailed") as failed:
        app.synth()
    assert "AwsSolutions-S1'" in str(failed.value)
    assert "AwsSolutions-S10'" in str(failed.value)
    failures = nag_failures(str(tmp_path))
    assert any(f.startswith("AwsSolutions-S1:") for f in failures), failures


def test_acknowledgment_silences_exactly_that_rule(tmp_path):
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Probe")
    bucket = s3.Bucket(stack, "Plain", enforce_ssl=True)
    acknowledge(bucket, "AwsSolutions-S1", "probe: access logs are not the point of this test")
    enable_nag(app)
    app.synth()  # raises on any unacknowledged finding
    assert nag_failures(str(tmp_path)) == []


def _templates(assembly_dir: str) -> list[Path]:
    found = sorted(Path(assembly_dir).rglob("*.template.json"))
    assert found, f"no templates under {assembly_dir}"
    return found


def test_cfn_lint_has_no_errors(assembly):
    templates = _templates(assembly.directory)
    result = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), "--format", "json", *map(str, templates)],
                            capture_output=True, text=True, check=False)
    findings = json.loads(result.stdout or "[]")
    # Not ours to change, both emitted by aws-cdk-lib itself: W3005, the explicit DependsOn
    # from each Function to its role next to the GetAtt; E3703, a style preference for Fn::Sub
    # over the Fn::Join CDK Pipelines writes for the bootstrap role ARNs (deploys either way).
    ignored = {"W3005", "E3703"}
    problems = [f"{f['Rule']['Id']} {Path(f['Filename']).name}: {f['Message']}" for f in findings
                if f["Level"] in ("Error", "Warning") and f["Rule"]["Id"] not in ignored]
    assert problems == [], "\n".join(problems)
