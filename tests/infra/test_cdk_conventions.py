"""CDK conventions a reviewer checks first: every recommended feature flag configured, departures
documented (docs/feature-flags.md), and the pipeline on CodePipeline's V2 type."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from tests.infra.conftest import REPO_ROOT, default_context

FLAGS_DOC = REPO_ROOT / "docs" / "feature-flags.md"


def _flag_report(assembly_dir: str) -> dict[str, dict]:
    manifest = json.loads((Path(assembly_dir) / "manifest.json").read_text())
    (report,) = [a for a in manifest["artifacts"].values() if a["type"] == "cdk:feature-flag-report"]
    return report["properties"]["flags"]


def _unconfigured(flags: dict[str, dict]) -> list[str]:
    """What `cdk synth` counts as "feature flags are not configured": no value in cdk.json, and
    the unset behaviour differs from the recommended value."""
    return sorted(name for name, flag in flags.items() if "userValue" not in flag
                  and flag.get("unconfiguredBehavesLike", {}).get("v2", False) != flag["recommendedValue"])


def test_no_feature_flag_left_unconfigured(assembly):
    assert _unconfigured(_flag_report(assembly.directory)) == []


def test_every_departure_from_a_recommended_flag_is_documented(assembly):
    departures = {name: flag["userValue"] for name, flag in _flag_report(assembly.directory).items()
                  if "userValue" in flag and flag["userValue"] != flag["recommendedValue"]}
    kept_off = FLAGS_DOC.read_text().split("## Kept off the recommendation", 1)[1].split("\n## ", 1)[0]
    documented = dict(re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|", kept_off, re.M))
    assert {name: json.dumps(value).strip('"') for name, value in departures.items()} == documented


def test_a_flag_missing_from_cdk_json_is_reported(tmp_path):
    """Guards the rule above on a one-stack app: drop one recommended flag and it is the one found."""
    import aws_cdk as cdk

    flags = {k: v for k, v in default_context().items() if k.startswith("@")}
    flags.pop("@aws-cdk/aws-ec2:ebsDefaultGp3Volume")
    app = cdk.App(outdir=str(tmp_path), context=flags)
    cdk.CfnWaitConditionHandle(cdk.Stack(app, "Probe"), "Placeholder")  # a template needs one resource
    assert _unconfigured(_flag_report(app.synth().directory)) == ["@aws-cdk/aws-ec2:ebsDefaultGp3Volume"]


def test_pipeline_is_v2_without_the_default_type_flag(tmp_path):
    """V2 is set in the pipeline stack itself, not only through the feature flag."""
    from aws_cdk import assertions

    from tests.infra.conftest import synth

    context = copy.deepcopy(default_context())
    context.pop("@aws-cdk/aws-codepipeline:defaultPipelineTypeToV2", None)
    del context["stages"]["prod"]  # one stage is enough for the pipeline's own template
    context["pipeline"]["stages"] = ["dev"]
    app, _ = synth(context, tmp_path)
    pipeline = assertions.Template.from_stack(app.node.find_child("Pipeline"))
    pipeline.has_resource_properties("AWS::CodePipeline::Pipeline", {"PipelineType": "V2"})
