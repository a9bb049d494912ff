"""GitHub Actions workflows: OIDC role assumption only, approval before prod, the right commands."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parents[2] / ".github" / "workflows"
CDK = ".venv/bin/node node_modules/aws-cdk/bin/cdk"
CREDENTIALS_ACTION = "aws-actions/configure-aws-credentials"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    return workflow.get("on", workflow.get(True))


def runs(job: dict[str, Any]) -> list[str]:
    return [step["run"].strip() for step in job["steps"] if "run" in step]


def credential_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for step in job["steps"] if step.get("uses", "").startswith(CREDENTIALS_ACTION + "@")]


@pytest.mark.parametrize("name", ["pr.yml", "deploy.yml"])
def test_oidc_permission_and_no_stored_aws_keys(name):
    workflow = load(name)
    assert workflow["permissions"] == {"id-token": "write", "contents": "read"}
    text = (WORKFLOWS / name).read_text()
    for forbidden in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "aws-access-key-id", "aws-secret-access-key",
                      "secrets."):
        assert forbidden not in text, f"{name} references {forbidden}"
    for job in workflow["jobs"].values():
        assert "permissions" not in job  # a job-level block would replace the workflow's id-token grant
        for step in credential_steps(job):
            assert set(step["with"]) <= {"role-to-assume", "aws-region", "role-session-name"}
            assert re.fullmatch(r"\$\{\{ vars\.AWS_[A-Z_]+_ARN(_DEV|_PROD)? \}\}", step["with"]["role-to-assume"])
            assert step["with"]["aws-region"] == "${{ vars.AWS_REGION }}"


def test_pr_runs_the_checks_then_diffs_with_the_diff_role():
    workflow = load("pr.yml")
    assert "pull_request" in triggers(workflow)
    (job,) = workflow["jobs"].values()
    commands = runs(job)
    checks = [c for c in commands if c.startswith("make ")]
    assert checks == ["make dev", "make lint", "make test"]
    (diff,) = [c for c in commands if c.startswith(CDK)]
    assert re.fullmatch(re.escape(CDK) + r' diff -c "stage=\$DIFF_STAGE" "\$DIFF_STAGE/\*"', diff)
    assert workflow["env"]["DIFF_STAGE"] == "${{ vars.CDK_DIFF_STAGE || 'dev' }}"
    (creds,) = credential_steps(job)
    assert creds["with"]["role-to-assume"] == "${{ vars.AWS_DIFF_ROLE_ARN }}"
    # Credentials only after the tests, and the diff only after the credentials.
    steps = job["steps"]
    position = {id(s): i for i, s in enumerate(steps)}
    test_step = next(s for s in steps if s.get("run") == "make test")
    diff_step = next(s for s in steps if s.get("run", "").startswith(CDK))
    assert position[id(test_step)] < position[id(creds)] < position[id(diff_step)]


def test_deploy_synthesizes_then_deploys_dev_then_prod_behind_approval():
    workflow = load("deploy.yml")
    assert triggers(workflow) == {"push": {"branches": ["main"]}}
    assert workflow["concurrency"]["cancel-in-progress"] is False
    dev, prod = workflow["jobs"]["deploy-dev"], workflow["jobs"]["deploy-prod"]

    assert "environment" not in dev
    assert prod["environment"] == "production"
    assert prod["needs"] == "deploy-dev"

    for job, stage, role in ((dev, "dev", "AWS_DEPLOY_ROLE_ARN_DEV"), (prod, "prod", "AWS_DEPLOY_ROLE_ARN_PROD")):
        commands = runs(job)
        assert commands[0] == "make synth"
        assert commands[1:] == [f"{CDK} deploy --app cdk.out --require-approval never '{stage}/*'"]
        (creds,) = credential_steps(job)
        assert creds["with"]["role-to-assume"] == f"${{{{ vars.{role} }}}}"


def test_ci_workflow_is_left_as_it_was():
    # ci.yml stays the plain synth + test run; the AWS-facing steps live only in pr/deploy.
    text = (WORKFLOWS / "ci.yml").read_text()
    assert CREDENTIALS_ACTION not in text and "id-token" not in text
