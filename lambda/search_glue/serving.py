"""Retiring the SageMaker endpoint an old model version served from.

A model change deploys the new model on a new endpoint beside the old one (the endpoint's
name carries the model version). CloudFormation keeps the old endpoint, and its inference
component, when it replaces them (UpdateReplacePolicy: Retain): the old index is searched
through it until the re-embed moves the alias (reembed.py). Nothing else deletes it after
that; this module does, when CloudFormation sends the Delete of the old physical id (with
the old properties), and the watchdog finishes what that Delete could not.

What goes: the inference component (InferenceComponentName, when set), then the endpoint
(EndpointName). Not the endpoint config or the SageMaker model: CloudFormation deletes
those itself when it replaces them.

When: only if every one of these holds; otherwise nothing is touched and the result says why.

1. The index of the deleted physical id lost the alias to a newer index by a re-embed flip.
   reembed._check_and_flip stamps the index it leaves ``_meta.semsearch.retired.replaced_by``
   and writes the new one's ``flipped`` (``from`` this index, with ``documents``). Not so:
   - a Delete-retirement (``retired.reason`` "delete": an IndexName change or a stack
     deletion): the endpoint is the stack's current one, which CloudFormation deletes itself
     (or which still serves);
   - a rollback: the alias went back, by a re-embed (the index it went to says
     ``reembed.reinstating``) or by the Delete's hand-back (its ``flipped`` has no
     ``documents``); the endpoint CloudFormation keeps then is the new one, and the old
     one serves again.
2. No ml-commons connector left on the domain invokes that endpoint (its URL names it) or
   names that inference component (header): a change of, say, HnswM alone re-embeds but
   keeps the endpoint. This runs after the Delete removed the old physical id's connectors;
   models with an inline connector count too.
3. Both names start with ``<Name>-``, the stage's prefix (the glue role may delete no other;
   stacks/components/neural_search_glue.py).
4. The connectors invoked a SageMaker endpoint by that name: EndpointName is set and
   EndpointUrl, when given too, is that endpoint's URL (``.../endpoints/<EndpointName>/...``).

SageMaker deletes an inference component asynchronously (DeleteInferenceComponent returns
while it is "Deleting"), and DeleteEndpoint fails while the endpoint still hosts one. The
Delete waits a few seconds for the component; what is left (or any failure) is recorded in
the retired index's ``_meta.semsearch.serving`` (``state`` "pending") and the scheduled
watchdog (``finish_pending``) tries again on each run, checking 1-3 again. A name SageMaker
cannot find counts as deleted. Nothing here raises: the alias already moved, so a failure
to delete the old endpoint never fails CloudFormation's Delete; it is logged and returned.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import reembed
from .client import OpenSearch
from .properties import GlueProperties
from .steps import Names

log = logging.getLogger(__name__)

#: The SageMaker operations this module calls (tests/infra/specs/callers.py grants-checks them).
OPERATIONS = ("DescribeInferenceComponent", "DeleteInferenceComponent", "DescribeEndpoint", "DeleteEndpoint")
#: How long the Delete waits for a deleting inference component before leaving the endpoint
#: to the watchdog: well inside on_event's two minutes, after the teardown's own waits.
DELETE_WAIT_S = 20.0
POLL_S = 5.0
# The endpoint an invocation URL names: SageMaker's runtime URL (and the local endpoint's).
ENDPOINT_IN_URL = re.compile(r"/endpoints/([^/?#]+)/")
COMPONENT_HEADER = "x-amzn-sagemaker-inference-component"
# A connector's ${parameters.x} placeholders, filled from its parameters before comparing.
PARAMETER = re.compile(r"\$\{parameters\.([\w.-]+)\}")
# What SageMaker answers (ValidationException) for a name it does not know, and for a
# component whose deletion already runs.
NOT_FOUND = "could not find"
ALREADY_DELETING = "delete_in_progress"


def make_client(region: str) -> Any:
    """The SageMaker client (tests replace this factory with a Stubber-backed client)."""
    import boto3  # in the Lambda runtime; imported here so the rest of the glue needs none

    return boto3.client("sagemaker", region_name=region)


@dataclass(frozen=True)
class Target:
    """The serving resources of one model version: what the Delete may retire."""

    endpoint: str
    component: str
    region: str


def target_of(props: GlueProperties) -> Target | None:
    """The SageMaker endpoint (and inference component) the connectors of ``props`` invoked;
    None when they invoked none by EndpointName (a local endpoint's EndpointUrl)."""
    named = endpoint_in(props.invocation_url)
    if not props.endpoint_name or named is None or named.lower() != props.endpoint_name.lower():
        return None
    return Target(props.endpoint_name, props.inference_component, props.region)


def endpoint_in(url: str) -> str | None:
    match = ENDPOINT_IN_URL.search(url)
    return match.group(1) if match else None


# ---------------------------------------------------------------------------------------
# When it is safe (pure: the facts are read by retire_endpoint)


def flip_verdict(index: str, stamp: dict[str, Any], successor_meta: dict[str, Any] | None) -> str | None:
    """None when ``index`` lost the alias to a newer index by a re-embed flip, else why not.

    ``stamp``: the index's ``_meta.semsearch.retired``; ``successor_meta``: the
    ``_meta.semsearch`` of the index it names as ``replaced_by`` (None when that is gone).
    """
    successor = stamp.get("replaced_by")
    if not successor:
        if stamp.get("reason") == "delete":
            return (f"{index} was retired by a Delete (an IndexName change or a stack deletion), not replaced "
                    "by a re-embed: its endpoint is the stack's own")
        return f"{index} is not retired by a re-embed flip (it was deleted, or never lost the alias)"
    if successor_meta is None:
        return f"{successor}, which replaced {index}, is gone: nothing says how the alias moved"
    flipped = successor_meta.get("flipped") or {}
    # "by" names what moved the alias; indices flipped before it was written have none, and
    # there only a re-embed wrote "documents".
    by = flipped.get("by") or ("reembed" if "documents" in flipped else "handback")
    if flipped.get("from") == index and by == "rollback":
        return (f"a rollback: the alias went back to {successor}, which {index} had replaced; "
                f"{index}'s endpoint is the one CloudFormation keeps, and {successor}'s serves again")
    if flipped.get("from") != index or by != "reembed":
        return (f"the alias was handed back to {successor} by a Delete (a rollback or a stack deletion), "
                f"not moved by a re-embed: {index}'s endpoint is the one CloudFormation keeps")
    if (successor_meta.get("reembed") or {}).get("reinstating"):
        return (f"a rollback: the alias went back to {successor}, which {index} had replaced; "
                f"{index}'s endpoint is the one CloudFormation keeps, and {successor}'s serves again")
    return None


def name_verdict(target: Target, prefix: str) -> str | None:
    """None when every name of ``target`` is one of this stage's (``<prefix>-...``)."""
    outside = [n for n in (target.endpoint, target.component) if n and not n.startswith(f"{prefix}-")]
    if outside:
        return f"{', '.join(outside)} not named {prefix}-*: not this stage's to delete"
    return None


def connector_users(connectors: list[dict[str, Any]], target: Target) -> list[str]:
    """Names of the connectors whose actions invoke ``target``'s endpoint or name its component.

    ``connectors``: ml-commons connector documents (``name``, ``actions``, ``parameters``).
    """
    users = []
    for connector in connectors:
        parameters = connector.get("parameters") or {}

        def filled(text: str, parameters: dict[str, Any] = parameters) -> str:
            return PARAMETER.sub(lambda m: str(parameters.get(m.group(1), m.group(0))), text)

        for action in connector.get("actions") or []:
            endpoint = endpoint_in(filled(str(action.get("url", ""))))
            headers = {str(k).lower(): filled(str(v)) for k, v in (action.get("headers") or {}).items()}
            component = headers.get(COMPONENT_HEADER, "")
            if (endpoint is not None and endpoint.lower() == target.endpoint.lower()) or (
                    target.component and component.lower() == target.component.lower()):
                users.append(str(connector.get("name") or connector.get("id") or "?"))
                break
    return sorted(set(users))


# ---------------------------------------------------------------------------------------
# SageMaker


def _says(error: Exception, words: str) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(error, ClientError) and words in str(error.response.get("Error", {}).get("Message", "")).lower()


def _missing(error: Exception) -> bool:
    return _says(error, NOT_FOUND)


def _message(error: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(error, ClientError):
        e = error.response.get("Error", {})
        return f"{e.get('Code', '?')}: {e.get('Message', '')}"
    return f"{type(error).__name__}: {error}"


def _component_status(sagemaker: Any, component: str) -> str | None:
    try:
        answer = sagemaker.describe_inference_component(InferenceComponentName=component)
        return str(answer.get("InferenceComponentStatus", "of unknown status"))
    except Exception as e:
        if _missing(e):
            return None
        raise


def _endpoint_status(sagemaker: Any, endpoint: str) -> str | None:
    try:
        return str(sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointStatus"])
    except Exception as e:
        if _missing(e):
            return None
        raise


def delete_serving(sagemaker: Any, target: Target, *, wait_s: float = 0.0,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> tuple[str, str]:
    """Delete ``target``'s inference component, then its endpoint: ("retired", what happened)
    or ("pending", what is left and why). Waits up to ``wait_s`` for the component to go.

    A failed call (other than "could not find") leaves the rest pending; only an unexpected
    error (no credentials, access denied on a Describe) raises.
    """
    done: list[str] = []
    if target.component:
        status = _component_status(sagemaker, target.component)
        if status is None:
            done.append(f"inference component {target.component} already gone")
        elif status != "Deleting":
            try:
                sagemaker.delete_inference_component(InferenceComponentName=target.component)
                status = "Deleting"
            except Exception as e:
                if _missing(e):
                    status = None
                elif _says(e, ALREADY_DELETING):
                    status = "Deleting"
                else:
                    return "pending", f"DeleteInferenceComponent {target.component} failed ({_message(e)})"
        deadline = clock() + wait_s
        while status is not None:
            if clock() >= deadline:
                return "pending", (f"inference component {target.component} is {status}; endpoint {target.endpoint} "
                                   "is deleted once it is gone")
            sleep(POLL_S)
            status = _component_status(sagemaker, target.component)
        if not done:
            done.append(f"inference component {target.component} deleted")
    status = _endpoint_status(sagemaker, target.endpoint)
    if status is None:
        done.append(f"endpoint {target.endpoint} already gone")
    elif status == "Deleting":
        done.append(f"endpoint {target.endpoint} deleting")
    else:
        try:
            sagemaker.delete_endpoint(EndpointName=target.endpoint)
            done.append(f"endpoint {target.endpoint} deleted")
        except Exception as e:
            if not _missing(e):
                # E.g. a component other than ours still on it, or the endpoint is Updating.
                return "pending", "; ".join([f"DeleteEndpoint {target.endpoint} failed ({_message(e)})", *done])
            done.append(f"endpoint {target.endpoint} already gone")
    return "retired", "; ".join(done)


# ---------------------------------------------------------------------------------------
# The Delete and the watchdog


def retire_endpoint(client: OpenSearch, props: GlueProperties, names: Names, *, sagemaker: Any = None,
                    wait_s: float = DELETE_WAIT_S) -> dict[str, Any]:
    """After the Delete of ``names.physical_id`` (``props``: its properties) removed its
    connectors: retire the endpoint they invoked when that is safe (module docstring).

    Returns {"Endpoint", "InferenceComponent", "Action": kept | retired | pending | failed,
    "Detail"}; never raises.
    """
    target = target_of(props)
    if target is None:
        return {"Endpoint": props.endpoint_name, "InferenceComponent": props.inference_component, "Action": "kept",
                "Detail": f"the connectors invoked {props.invocation_url}, no SageMaker endpoint by EndpointName"}
    return _retire(client, names, target, props.name, sagemaker=sagemaker, wait_s=wait_s)


def finish_pending(client: OpenSearch, props: GlueProperties, names: Names, *,
                   sagemaker: Any = None) -> dict[str, Any]:
    """The watchdog's part: retry the retirements a Delete left pending, one per retired index
    of this alias (``_meta.semsearch.serving``). {index: result}; never raises."""
    results: dict[str, Any] = {}
    try:
        for index in reembed.holders(client, reembed.retired_alias(names)):
            record = reembed.read_meta(client, index).get("serving") or {}
            if record.get("state") != "pending":
                continue
            target = Target(record["endpoint"], record.get("inference_component", ""), record["region"])
            results[index] = _retire(client, Names(index, names.alias), target, props.name, sagemaker=sagemaker,
                                     wait_s=0)
            if results[index]["Action"] == "kept":
                # Kept for good (say, a connector invokes it again): no more retries.
                reembed.write_meta(client, index, serving={**record, "state": "kept",
                                                           "detail": results[index]["Detail"], "at": time.time()})
    except Exception as e:
        log.exception("serving: could not look for pending retirements")
        results["Error"] = f"could not look for pending retirements: {type(e).__name__}: {e}"
    return results


def _retire(client: OpenSearch, names: Names, target: Target, prefix: str, *, sagemaker: Any,
            wait_s: float) -> dict[str, Any]:
    result: dict[str, Any] = {"Endpoint": target.endpoint, "InferenceComponent": target.component}
    try:
        reason = _why_keep(client, names, target, prefix)
    except Exception as e:
        log.exception("serving: could not tell whether %s may go", target.endpoint)
        return {**result, "Action": "failed", "Detail": f"could not tell whether it may go: {type(e).__name__}: {e}"}
    if reason:
        log.info("serving: endpoint %s kept: %s", target.endpoint, reason)
        return {**result, "Action": "kept", "Detail": reason}
    try:
        state, detail = delete_serving(sagemaker or make_client(target.region), target, wait_s=wait_s)
    except Exception as e:
        state, detail = "pending", _message(e)
    (log.info if state == "retired" else log.warning)("serving: %s for %s: %s", state, names.index, detail)
    try:
        reembed.write_meta(client, names.index, serving={
            "endpoint": target.endpoint, "inference_component": target.component, "region": target.region,
            "state": state, "detail": detail, "at": time.time()})
    except Exception as e:
        log.exception("serving: could not record the retirement in %s", names.index)
        detail += f" (not recorded in {names.index} for the watchdog: {type(e).__name__}: {e})"
    return {**result, "Action": state, "Detail": detail}


def _why_keep(client: OpenSearch, names: Names, target: Target, prefix: str) -> str | None:
    """Why ``target`` must stay (module docstring, 1-3), or None."""
    reason = name_verdict(target, prefix)
    if reason:
        return reason
    if client.call("serving", "HEAD", f"/{names.index}", ok=(404,))[0] == 404:
        return f"{names.index} was deleted, not retired by a re-embed flip"
    stamp = reembed.read_meta(client, names.index).get("retired") or {}
    successor = stamp.get("replaced_by")
    successor_meta = None
    if successor and client.call("serving", "HEAD", f"/{successor}", ok=(404,))[0] == 200:
        successor_meta = reembed.read_meta(client, successor)
    reason = flip_verdict(names.index, stamp, successor_meta)
    if reason:
        return reason
    users = connector_users(_connectors(client), target)
    if users:
        return f"still invoked by connector(s) {', '.join(users)}"
    return None


def _connectors(client: OpenSearch) -> list[dict[str, Any]]:
    """Every connector on the domain: the standalone ones and those inline in a model."""
    found = []
    for kind, source in (("connectors", ["name", "actions", "parameters"]), ("models", ["name", "connector"])):
        # Before the first object of a kind exists its system index does not either: 404 = none.
        status, body = client.call("serving", "POST", f"/_plugins/_ml/{kind}/_search",
                                   {"size": 10000, "_source": source, "query": {"match_all": {}}}, ok=(404,))
        for hit in body["hits"]["hits"] if status == 200 else []:
            doc = hit.get("_source") or {}
            if kind == "connectors":
                found.append({"id": hit.get("_id"), **doc})
            elif doc.get("connector"):
                found.append({"id": hit.get("_id"), **doc["connector"], "name": f"{doc.get('name')} (inline)"})
    return found
