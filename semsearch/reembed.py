"""`semsearch reembed`: put a stage (or the local stack) on the model version it should serve,
re-embedding every document into that version's index and moving the alias, with progress.

The re-embed itself is the glue's (lambda/search_glue/reembed.py): ``_reindex`` through the
new version's ingest pipeline, catch-up of writes made meanwhile, documents in == documents
out, one atomic alias flip; searches answer from the old index until then. This command only
starts it where it runs:

- ``--stage S``: the stage's model, search and ops stacks are updated with their current
  templates, as the fine-tune workflow's promotion does: CloudFormation reads the SSM
  parameters again (a promoted fine-tune, what serves), so a promotion recorded but not yet
  deployed (a failed or stopped workflow) goes live now. Nothing recorded since the last
  deploy: "No updates are to be performed", and nothing is re-embedded. Progress: each stack's
  status, and during the search stack's update the re-embed phase and document counts read
  from the domain.
- local (the default): the local stack moves to ``--model-dir`` (default: the model it
  serves), as `semsearch local up` does.

Exit status 0 when the stage serves the version, 1 when an update rolled back (the old index
and model serve on; the reason is printed), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from semsearch import stage
from semsearch.errors import UsageError
from semsearch.models import DEFAULT_MODEL_ID, resolve_model_dir
from stacks.catalog import MODELS
from stacks.names import (
    MODEL_VERSION_STACK_PARTS,
    STACK_BUSY_MARKER,
    STACK_UNCHANGED_MESSAGE,
    STACK_UPDATE_CAPABILITIES,
    STACK_UPDATED,
    stack_name,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("reembed", help="re-embed every document with the model version the stage should "
                                              "serve, then move the alias", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    stage.add_arguments(p)
    p.add_argument("--model-dir", help="local stack only: the model to move to (default: the one it serves)")
    p.add_argument("--model", default=DEFAULT_MODEL_ID, choices=sorted(MODELS), metavar="CATALOG_ID",
                   help=f"local stack only: the catalog entry that model is, or was tuned from (default: {DEFAULT_MODEL_ID})")
    p.add_argument("--poll", type=float, default=15.0, metavar="S", help="seconds between progress reads (stage)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.stage == stage.LOCAL:
        if args.region or args.profile:
            raise UsageError("--region and --profile apply to a deployed --stage, not the local stack")
        return _local(args.model_dir, args.model)
    if args.model_dir:
        raise UsageError("--model-dir applies to the local stack; a stage's model is its cdk.json entry, "
                         "or the fine-tune its workflow promoted")
    session = stage.aws_session(region=args.region, profile=args.profile)
    target = stage.stage_target(args.stage, region=args.region, profile=args.profile)
    summary = update_stage(stage.cloudformation_client(session), args.stage,
                           progress=lambda line: print(f"reembed: {line}", file=sys.stderr),
                           reembed_progress=lambda: reembed_progress(target, f"semsearch-{args.stage}-*"),
                           poll_s=args.poll)
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0 if summary["ok"] else 1


def update_stage(cfn: Any, stage_name: str, *, progress: Callable[[str], None],
                 reembed_progress: Callable[[], str | None] = lambda: None, poll_s: float = 15.0,
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Update each stack with its current template and wait for it; stop at the first that fails.

    Returns ``{"stage", "stacks": {name: final status or "unchanged"}, "ok", "reason"}``.
    """
    import botocore.exceptions

    results: dict[str, str] = {}
    for part in MODEL_VERSION_STACK_PARTS:
        name = stack_name(stage_name, part)
        try:
            cfn.update_stack(StackName=name, UsePreviousTemplate=True, Capabilities=STACK_UPDATE_CAPABILITIES)
        except botocore.exceptions.ClientError as e:
            message = e.response.get("Error", {}).get("Message", "")
            if STACK_UNCHANGED_MESSAGE in message:
                results[name] = "unchanged"
                progress(f"{name}: unchanged (nothing it reads has changed since its last deploy)")
                continue
            raise UsageError(f"update_stack {name}: {e.response.get('Error', {}).get('Code')}: {message}") from None
        progress(f"{name}: updating")
        while True:
            sleep(poll_s)
            (stack,) = cfn.describe_stacks(StackName=name)["Stacks"]
            status = stack["StackStatus"]
            if STACK_BUSY_MARKER not in status:
                break
            detail = reembed_progress() if part == "search" else None
            progress(f"{name}: {status}" + (f"; {detail}" if detail else ""))
        results[name] = status
        if status != STACK_UPDATED:
            reason = f"{name} ended in {status}: {stack.get('StackStatusReason', 'no reason given')}"
            progress(f"{reason}; the old model and index serve on")
            return {"stage": stage_name, "stacks": results, "ok": False, "reason": reason}
        progress(f"{name}: {status}")
    return {"stage": stage_name, "stacks": results, "ok": True, "reason": ""}


def reembed_progress(target: stage.Target, pattern: str) -> str | None:
    """The running re-embed on the domain, as one line: the index it fills (among ``pattern``,
    the glue's index names), its phase and document count."""
    try:
        _, indices = target.client.request("GET", f"/{pattern}/_mapping")
    except stage.DOMAIN_ERRORS:
        return None
    for index, body in sorted(indices.items()):
        state = ((body.get("mappings") or {}).get("_meta") or {}).get("semsearch", {}).get("reembed") or {}
        if state.get("phase") in ("copy", "catchup"):
            _, count = target.client.request("GET", f"/{index}/_count")
            return f"re-embedding {state.get('source')} -> {index}: {state['phase']}, {count['count']} documents so far"
    return None


def _local(model_dir: str | None, model: str) -> int:
    from semsearch.local.stack import LocalStack

    stack = LocalStack()
    state = stack.load()
    if not state.get("physical_id"):
        raise UsageError(f"no provisioned local stack {stack.name!r}: run `semsearch local up` first")
    target = resolve_model_dir(model_dir) if model_dir else None
    before = state["physical_id"]
    status = stack.up(target or Path(state["model_dir"]), model=model,
                      progress=lambda line: print(f"reembed: {line}", file=sys.stderr))
    after = stack.load()["physical_id"]
    summary = {"stack": stack.name, "from": before, "to": after, "moved": before != after,
               "documents": status.get("documents"), "index": status.get("index")}
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0
