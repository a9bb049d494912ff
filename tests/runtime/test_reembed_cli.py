"""`semsearch reembed --stage`: the stack updates it starts and how it reports them, against
botocore's CloudFormation model (Stubber validates every request); no AWS account needed."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from semsearch.errors import UsageError
from semsearch.reembed import update_stage
from stacks.names import STACK_UPDATE_CAPABILITIES as CAPABILITIES

CREATED = "2026-01-05T13:00:00Z"


def cfn_client():
    return boto3.client("cloudformation", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def update(stub: Stubber, name: str) -> None:
    stub.add_response("update_stack", {"StackId": f"arn:aws:cloudformation:us-east-1:123456789012:stack/{name}/1"},
                      {"StackName": name, "UsePreviousTemplate": True, "Capabilities": CAPABILITIES})


def unchanged(stub: Stubber, name: str) -> None:
    stub.add_client_error("update_stack", "ValidationError", "No updates are to be performed.",
                          expected_params={"StackName": name, "UsePreviousTemplate": True,
                                           "Capabilities": CAPABILITIES})


def described(stub: Stubber, name: str, status: str, reason: str | None = None) -> None:
    stack = {"StackName": name, "StackStatus": status, "CreationTime": CREATED}
    if reason:
        stack["StackStatusReason"] = reason
    stub.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": name})


def test_a_recorded_promotion_goes_live_stack_by_stack_with_the_re_embed_in_progress():
    cfn, lines = cfn_client(), []
    with Stubber(cfn) as stub:
        update(stub, "semsearch-dev-model")
        described(stub, "semsearch-dev-model", "UPDATE_IN_PROGRESS")
        described(stub, "semsearch-dev-model", "UPDATE_COMPLETE")
        update(stub, "semsearch-dev-search")
        described(stub, "semsearch-dev-search", "UPDATE_IN_PROGRESS")
        described(stub, "semsearch-dev-search", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
        described(stub, "semsearch-dev-search", "UPDATE_COMPLETE")
        unchanged(stub, "semsearch-dev-ops")
        summary = update_stage(cfn, "dev", progress=lines.append, poll_s=0, sleep=lambda s: None,
                               reembed_progress=lambda: "re-embedding a -> b: copy, 120 documents so far")
        stub.assert_no_pending_responses()
    assert summary == {"stage": "dev", "ok": True, "reason": "", "stacks": {
        "semsearch-dev-model": "UPDATE_COMPLETE", "semsearch-dev-search": "UPDATE_COMPLETE",
        "semsearch-dev-ops": "unchanged"}}
    assert "semsearch-dev-search: UPDATE_IN_PROGRESS; re-embedding a -> b: copy, 120 documents so far" in lines
    # The re-embed is read only while the search stack (the glue) updates.
    assert not any("re-embedding" in line for line in lines if line.startswith("semsearch-dev-model"))


def test_nothing_recorded_means_nothing_re_embedded():
    cfn, lines = cfn_client(), []
    with Stubber(cfn) as stub:
        for part in ("model", "search", "ops"):
            unchanged(stub, f"semsearch-dev-{part}")
        summary = update_stage(cfn, "dev", progress=lines.append, poll_s=0, sleep=lambda s: None)
    assert summary["ok"] and set(summary["stacks"].values()) == {"unchanged"}


def test_a_rolled_back_update_stops_there_and_says_why():
    cfn, lines = cfn_client(), []
    reason = "The following resource(s) failed to update: [GlueResource]"
    with Stubber(cfn) as stub:
        unchanged(stub, "semsearch-dev-model")
        update(stub, "semsearch-dev-search")
        described(stub, "semsearch-dev-search", "UPDATE_ROLLBACK_IN_PROGRESS")
        described(stub, "semsearch-dev-search", "UPDATE_ROLLBACK_COMPLETE", reason)
        summary = update_stage(cfn, "dev", progress=lines.append, poll_s=0, sleep=lambda s: None)
        stub.assert_no_pending_responses()  # the ops stack is not touched
    assert not summary["ok"]
    assert summary["reason"] == f"semsearch-dev-search ended in UPDATE_ROLLBACK_COMPLETE: {reason}"
    assert lines[-1].endswith("the old model and index serve on")


def test_a_refused_update_is_a_clear_error():
    cfn = cfn_client()
    with Stubber(cfn) as stub:
        stub.add_client_error("update_stack", "ValidationError", "Stack [semsearch-dev-model] does not exist")
        with pytest.raises(UsageError, match=r"update_stack semsearch-dev-model: ValidationError: Stack "):
            update_stage(cfn, "dev", progress=lambda line: None, poll_s=0, sleep=lambda s: None)
