#!/usr/bin/env python3
"""The CDK app: the only place that reads context; builds one validated config, then stages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import aws_cdk as cdk

from stacks.config import ConfigError, load_config
from stacks.nag import enable_nag
from stacks.pipeline_stack import PipelineStack
from stacks.stage import SemsearchStage


def build_app(context: dict | None = None) -> cdk.App:
    app = cdk.App(context=context) if context is not None else cdk.App()
    raw_context = {key: app.node.try_get_context(key) for key in _context_keys(app)}
    config = load_config(raw_context)
    for stage in config.stages:
        SemsearchStage(app, stage.name, config=stage)
    if config.pipeline is not None:
        PipelineStack(app, "Pipeline", stack_name="semsearch-pipeline", config=config, pipeline=config.pipeline,
                      env=cdk.Environment(account=config.pipeline.account or None,
                                          region=config.pipeline.region or None),
                      description="semsearch: self-mutating deploy pipeline (dev -> approval -> prod)")
    enable_nag(app)
    return app


def _context_keys(app: cdk.App) -> list[str]:
    # CDK exposes context only key by key; cdk.json + `-c` keys are all under node.
    return list(app.node.get_all_context().keys())


def nag_failures(assembly_dir: str) -> list[str]:
    """Unacknowledged cdk-nag findings recorded in the assembly's validation report."""
    report_path = Path(assembly_dir) / "validation-report.json"
    if not report_path.is_file():
        return []
    report = json.loads(report_path.read_text())
    return [f"{v['ruleName']}: {c['constructPath']}: {v['description']}"
            for plugin in report.get("pluginReports", []) if plugin.get("conclusion") == "failure"
            for v in plugin.get("violations", []) for c in v.get("violatingConstructs", [])]


if __name__ == "__main__":
    try:
        assembly = build_app().synth()
    except ConfigError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
    # The CLI writes the report but exits 0; an unacknowledged finding must fail synth.
    failures = nag_failures(assembly.directory)
    if failures:
        print("cdk-nag: unacknowledged findings:\n  " + "\n  ".join(failures), file=sys.stderr)
        sys.exit(1)
