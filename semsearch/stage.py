"""Where `semsearch search|ingest|status` go: a deployed stage, or the local stack.

A deployed stage is found by its search stack (``semsearch-<stage>-search``, stacks/names.py)
and that stack's outputs, read with CloudFormation ``describe_stacks`` under the user's
credentials (``--profile``, else the default chain) and region (``--region``, else the
profile's). Requests to the domain are signed with SigV4 (service ``es``) by the one
OpenSearch client (lambda/opensearch_http). No ``--stage``, or ``--stage local``: the stack
`semsearch local up` runs (its state file), with basic auth.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from semsearch.errors import UsageError
from semsearch.local.client import Connection  # puts lambda/ on the import path
from semsearch.local.stack import LocalStack
from stacks.names import SearchOutputs, stack_name

# isort: split
from opensearch_http import CredentialsError, HTTPStatusError, OpenSearchClient, Unreachable

LOCAL = "local"
#: What the domain can answer instead of a result: the commands report it as one line.
DOMAIN_ERRORS = (HTTPStatusError, Unreachable, CredentialsError)
#: The outputs a deployed stage must have for the CLI to reach it.
REQUIRED_OUTPUTS = (SearchOutputs.DOMAIN_ENDPOINT, SearchOutputs.INDEX_NAME, SearchOutputs.MODEL_ID,
                    SearchOutputs.TEXT_FIELD, SearchOutputs.EMBEDDING_FIELD)


@dataclass
class Target:
    """One search deployment: how to reach its domain and what its search stack says."""

    #: For messages: "stage dev (stack semsearch-dev-search, eu-west-1)" or "local stack 'local'".
    label: str
    client: OpenSearchClient
    alias: str
    model_id: str
    text_field: str
    embedding_field: str
    #: For `semsearch status`: stack, region, domain endpoint (or the local state's paths).
    details: dict[str, Any] = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--stage, --region and --profile, the same on every command that reaches a stage."""
    parser.add_argument("--stage", default=LOCAL, metavar="STAGE",
                        help="a deployed stage (its stack semsearch-STAGE-search), or local (the default: "
                             "the stack `semsearch local up` runs)")
    parser.add_argument("--region", help="the stage's AWS region (default: AWS_DEFAULT_REGION, else the profile's)")
    parser.add_argument("--profile", help="AWS profile for CloudFormation and SigV4 (default: the default chain)")


def resolve(args: argparse.Namespace) -> Target:
    if args.stage == LOCAL:
        if args.region or args.profile:
            raise UsageError("--region and --profile apply to a deployed --stage, not the local stack")
        return local_target()
    return stage_target(args.stage, region=args.region, profile=args.profile)


def local_target(stack: LocalStack | None = None) -> Target:
    stack = stack or LocalStack()
    state = stack.load()
    if not state.get("model_id"):
        raise UsageError(f"no provisioned local stack {stack.name!r}: run `semsearch local up` first")
    conn: Connection = stack.connection(state)
    return Target(label=f"local stack {stack.name!r}", client=conn, alias=state["index"], model_id=state["model_id"],
                  text_field=state.get("text_field") or "text", embedding_field=state["embedding_field"],
                  details={"stack": stack.name, "opensearch_url": conn.url, "endpoint_url": state.get("endpoint_url")})


def aws_session(*, region: str | None, profile: str | None) -> Any:
    """The boto3 session the user's flags and environment describe; a clear error without a region."""
    import boto3
    import botocore.exceptions

    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except botocore.exceptions.ProfileNotFound as e:
        raise UsageError(f"--profile {profile}: {e}") from None
    if not session.region_name:
        raise UsageError("no AWS region: pass --region, or set AWS_DEFAULT_REGION or the profile's region")
    return session


def cloudformation_client(session: Any) -> Any:
    """The CloudFormation client stage resolution uses (tests attach botocore's Stubber to it)."""
    return session.client("cloudformation")


def stack_outputs(cfn: Any, name: str, region: str) -> dict[str, str]:
    """``{OutputKey: OutputValue}`` of stack ``name``; UsageError naming the stack and region if absent."""
    import botocore.exceptions

    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except botocore.exceptions.ClientError as e:
        error = e.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in error.get("Message", ""):
            raise UsageError(f"stack {name} not found in region {region}: deploy the stage, "
                             "or pass the --region (or --profile) it is deployed in") from None
        raise UsageError(f"describe_stacks {name} in {region}: {error.get('Code')}: {error.get('Message')}") from None
    except botocore.exceptions.NoCredentialsError:
        raise UsageError("no AWS credentials found: configure them, or pass --profile") from None
    (stack,) = stacks
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = [key for key in REQUIRED_OUTPUTS if not outputs.get(key)]
    if missing:
        raise UsageError(f"stack {name} in region {region} ({stack['StackStatus']}) has no output "
                         f"{', '.join(missing)}: deploy the current version of the stage "
                         f"(its outputs: {', '.join(sorted(outputs)) or 'none'})")
    return outputs


class SignedClient(OpenSearchClient):
    """The OpenSearch client signing with the session's credentials (so --profile applies to SigV4 too)."""

    def __init__(self, url: str, *, region: str, credentials: Any) -> None:
        super().__init__(url, auth_mode="sigv4", region=region)
        if credentials is None:
            raise UsageError("no AWS credentials found to sign requests to the domain: configure them, or pass --profile")
        # The client looks credentials up (default chain) only when it has none.
        self._credentials = credentials


def stage_target(stage: str, *, region: str | None = None, profile: str | None = None) -> Target:
    session = aws_session(region=region, profile=profile)
    name = stack_name(stage, "search")
    outputs = stack_outputs(cloudformation_client(session), name, session.region_name)
    endpoint = outputs[SearchOutputs.DOMAIN_ENDPOINT]
    client = SignedClient(endpoint, region=session.region_name, credentials=session.get_credentials())
    return Target(label=f"stage {stage} (stack {name}, {session.region_name})", client=client,
                  alias=outputs[SearchOutputs.INDEX_NAME], model_id=outputs[SearchOutputs.MODEL_ID],
                  text_field=outputs[SearchOutputs.TEXT_FIELD], embedding_field=outputs[SearchOutputs.EMBEDDING_FIELD],
                  details={"stack": name, "region": session.region_name, "domain_endpoint": endpoint,
                           "stack_query_model_id": outputs.get(SearchOutputs.QUERY_MODEL_ID)})
