"""Entry points: ``on_event`` and ``is_complete`` (CDK Provider framework) and ``watchdog``.

on_event   Create/Update: settings, role mappings, model group, and per text kind (passage;
           query too for an asymmetric model) connector, register, deploy request.
           Delete: the whole teardown, except an index with documents: that one is
           kept, retired, for a person to delete (reembed.retire_or_delete_index);
           after a re-embed moved the alias away, the old SageMaker endpoint is
           retired too (serving.retire_endpoint; never fails the Delete).
           Returns the physical id (and, under "Serving", what became of the endpoint).
is_complete  waits for DEPLOYED, then the _predict smoke tests (dimension check), ingest
           pipeline (passage model), search pipeline (query model, hybrid normalization),
           k-NN index (that pipeline as its default), alias. Returns the outputs (Data).
watchdog   scheduled: redeploys the model if it is no longer deployed or no longer answers;
           an inference component scaled to zero is reported asleep, not broken; deletes
           indices a model change retired once their retention period is over (reembed)
           and finishes endpoint retirements a Delete left pending (serving).

A failed Create or Update removes the objects that request created, and only those: an
object a repeated Create found and adopted keeps serving. Nothing here talks to CloudFormation: the Provider framework turns a returned dict into
SUCCESS and an exception into FAILED, with the exception's message as the reason.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from json_logging import lambda_entry, set_level

from . import reembed, serving, steps
from .client import OpenSearch, StepError
from .properties import PHYSICAL_ID_RE, GlueProperties, PropertyError, parse
from .steps import Names

log = logging.getLogger(__name__)
# Every step is worth a line in CloudWatch: LOG_LEVEL (default INFO), one JSON line each.
LOGGERS = ("search_glue", "opensearch_http")
set_level(*LOGGERS)


class GlueFailure(Exception):
    """The reason CloudFormation shows: the failed step, HTTP status and body, and the cleanup."""


def _old_properties(event: dict[str, Any]) -> GlueProperties | None:
    try:
        return parse(event.get("OldResourceProperties"))
    except PropertyError:
        return None  # nothing valid was deployed under those


@contextlib.contextmanager
def _cleanup_on_failure(client: OpenSearch, names: Names, created: list[str],
                        abandon: Callable[[], list[str]] | None = None) -> Iterator[None]:
    """On failure, remove what this request created (never what it found and adopted), re-raise.

    ``abandon`` stops work of earlier calls of this request and names what else it created.
    """
    try:
        yield
    except Exception as e:
        reason = str(e) if isinstance(e, StepError) else f"unexpected {type(e).__name__}: {e}"
        log.exception("failed: %s", reason)
        if abandon is not None:
            try:
                created.extend(k for k in abandon() if k not in created)
            except Exception as abandon_error:
                raise GlueFailure(f"{reason} [stopping the re-embed also failed: {abandon_error}]") from e
        if not created:
            raise GlueFailure(f"{reason} [cleaned up {names.physical_id}: nothing had been created]") from e
        try:
            steps.teardown(client, names, only=set(created))
        except Exception as cleanup_error:
            raise GlueFailure(f"{reason} [cleanup of {names.physical_id} also failed: {cleanup_error}]") from e
        raise GlueFailure(f"{reason} [cleaned up {names.physical_id}: removed {', '.join(created)}]") from e


@lambda_entry(*LOGGERS)
def on_event(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    request_type = event.get("RequestType")
    log.info("on_event %s %s", request_type, event.get("PhysicalResourceId", "(new)"))
    if request_type == "Delete":
        return _delete(event)
    if request_type not in ("Create", "Update"):
        raise GlueFailure(f"RequestType: unknown {request_type!r}")
    props = parse(event.get("ResourceProperties"))  # before any API call
    names = Names(props.physical_id, props.index_name)
    old = _old_properties(event) if request_type == "Update" else None
    client = OpenSearch.from_properties(props)
    created: list[str] = []
    with _cleanup_on_failure(client, names, created):
        steps.apply_cluster_settings(client, props)
        steps.merge_role_mappings(client, props, old)
        steps.ensure_access_roles(client, props, names, created, old)
        # A passage model (ingest) and, for an asymmetric model, a query model (neural queries).
        kinds = steps.text_kinds(props)
        credentials_changed = old is not None and old.credential() != props.credential()
        connector_ids = {kind: steps.ensure_connector(client, props, names, created, kind=kind,
                                                      credentials_changed=credentials_changed) for kind in kinds}
        group_id = steps.ensure_model_group(client, names, created)
        model_ids = {kind: steps.ensure_model(client, names, connector_ids[kind], group_id, created, kind=kind,
                                                bedrock_model_id=props.bedrock_model_id)
                     for kind in kinds}
        for model_id in model_ids.values():
            steps.request_deploy(client, model_id)
    # "Created" is not for CloudFormation: the Provider framework passes every field of this
    # answer on to is_complete, which needs it to clean up after a failure of its own.
    return {"PhysicalResourceId": names.physical_id, "Created": created,
            "Data": {"ConnectorId": connector_ids["passage"], "ModelGroupId": group_id,
                     "ModelId": model_ids["passage"], "QueryModelId": model_ids.get("query", model_ids["passage"])}}


@lambda_entry(*LOGGERS)
def is_complete(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    if event.get("RequestType") == "Delete":
        return {"IsComplete": True}
    props = parse(event.get("ResourceProperties"))
    names = Names(props.physical_id, props.index_name)
    client = OpenSearch.from_properties(props)
    created = list(event.get("Created") or [])
    with _cleanup_on_failure(client, names, created, abandon=lambda: reembed.abandon(client, names)):
        models = {kind: _only(steps.find_all(client, "deploy", "models", names.model_for(kind)), "model",
                              names.model_for(kind)) for kind in steps.text_kinds(props)}
        if not all([steps.deployed(client, m["id"]) for m in models.values()]):
            return {"IsComplete": False}
        for kind, m in models.items():
            steps.smoke_test(client, props, m["id"], connector_hint=f"{names.connector_for(kind)} "
                                                                    f"({m['connector_id']}) -> {props.invocation_url}")
        model, query_model = models["passage"], models.get("query", models["passage"])
        steps.ensure_ingest_pipeline(client, props, names, model["id"], created)
        # Before the index that names it as its default.
        search_pipeline = steps.ensure_search_pipeline(client, props, names, query_model["id"], created)
        steps.ensure_index(client, props, names, created)
        # Beside an old index, the documents are re-embedded before the alias moves (polls).
        if not reembed.move_alias(client, props, names):
            return {"IsComplete": False}
    return {"IsComplete": True, "Data": {
        "ConnectorId": model["connector_id"],
        "ModelGroupId": model["model_group_id"],
        "ModelId": model["id"],
        "QueryModelId": query_model["id"],
        "PipelineName": names.ingest_pipeline,
        "IndexName": names.alias,
        "ConcreteIndexName": names.index,
        "SearchPipelineName": search_pipeline,
        "Dimension": str(props.dimension),
        "SearchRoleName": names.search_role if props.search_backend_roles else "",
        "LoaderRoleName": names.loader_role if props.loader_backend_roles else "",
    }}


def _only(hits: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    if not hits:
        raise StepError("deploy", f"no {kind} named {name}: was it deleted outside CloudFormation?")
    return min(hits, key=lambda h: h.get("created_time", 0))


def _delete(event: dict[str, Any]) -> dict[str, Any]:
    physical_id = str(event.get("PhysicalResourceId", ""))
    if not PHYSICAL_ID_RE.match(physical_id):
        # A Create that failed before naming anything: there is nothing of ours to remove.
        log.info("delete: %r is not one of ours, nothing to do", physical_id)
        return {"PhysicalResourceId": physical_id}
    props = parse(event.get("ResourceProperties"))
    # The roles exist only while their properties name backend roles (an Update that drops
    # them removes the role); otherwise the security API is not asked at all.
    kinds = set(steps.KINDS) - {kind for kind, given in (("search_role", props.search_backend_roles),
                                                         ("loader_role", props.loader_backend_roles)) if not given}
    client, names = OpenSearch.from_properties(props), Names(physical_id, props.index_name)
    try:
        # Only an empty index is deleted: one with documents is kept, retired (a rollback
        # hands the alias back from it first).
        reembed.retire_or_delete_index(client, names)
        steps.teardown(client, names, only=kinds - {"index"})
    except StepError as e:
        raise GlueFailure(str(e)) from e
    # After the teardown (its connectors no longer count as users); never raises.
    return {"PhysicalResourceId": physical_id, "Serving": serving.retire_endpoint(client, props, names)}


@lambda_entry(*LOGGERS)
def watchdog(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Redeploy a model if it dropped out (a domain restart can leave it undeployed): the
    passage model, and the query model of an asymmetric one (its result under QueryModel).

    An endpoint whose inference component has 0 copies (scaled to zero outside its active
    hours) is asleep, not broken: reported as ``"Endpoint": "asleep"``, nothing redeployed.
    When the endpoint answers, its embedding length is checked against Dimension (the
    check a night-time Create or Update had to skip).

    The event carries the custom resource's properties, under ``ResourceProperties`` or as
    the event itself (a scheduled rule's constant input).
    """
    props = parse(event.get("ResourceProperties", event))
    names = Names(props.physical_id, props.index_name)
    client = OpenSearch.from_properties(props)
    result = _watch(client, props, names, "passage")
    if props.asymmetric:
        result["QueryModel"] = _watch(client, props, names, "query")
    # Before the sweep, which may delete the retired index that records them.
    pending = serving.finish_pending(client, props, names)
    if pending:
        result["RetiredEndpoints"] = pending
    # Indices retired by a model change: deleted once RetiredIndexHours are over.
    retired = reembed.sweep_retired(client, props, names)
    if retired:
        result["RetiredIndices"] = retired
    return result


def _watch(client: OpenSearch, props: GlueProperties, names: Names, kind: str) -> dict[str, Any]:
    """The watchdog's check of the model for ``kind`` texts (redeployed when it dropped out)."""
    model = _only(steps.find_all(client, "watchdog", "models", names.model_for(kind)), "model", names.model_for(kind))
    model_id = model["id"]
    state = steps.model_state(client, model_id)
    hint = f"{names.connector_for(kind)} -> {props.invocation_url}"
    if state == "DEPLOYED":
        try:
            endpoint = _probe(client, props, model_id, hint)
            log.info("watchdog: model %s deployed, endpoint %s", model_id, endpoint)
            return {"ModelId": model_id, "State": state, "Action": "none", "Endpoint": endpoint}
        except steps.DimensionMismatch:
            raise  # redeploying cannot fix it
        except StepError as e:
            log.warning("watchdog: model %s reads DEPLOYED but does not answer (%s): redeploying", model_id, e)
    else:
        log.warning("watchdog: model %s is %s: redeploying", model_id, state)
    client.call("watchdog", "POST", f"/_plugins/_ml/models/{model_id}/_deploy")
    steps.wait_deployed(client, model_id)
    endpoint = _probe(client, props, model_id, hint)
    return {"ModelId": model_id, "State": "DEPLOYED", "Action": "redeployed", "PreviousState": state,
            "Endpoint": endpoint}


def _probe(client: OpenSearch, props: GlueProperties, model_id: str, hint: str) -> str:
    """"answering" (with the right dimension) or "asleep"; anything else raises StepError."""
    try:
        (vector,) = steps.embed(client, model_id, [steps.SMOKE_TEXT], step="watchdog", connector_hint=hint, props=props)
    except steps.EndpointAsleep as e:
        log.info("watchdog: endpoint asleep: %s", e.detail)
        return "asleep"
    steps.check_dimension(props, vector, "watchdog", "the index expects Dimension: fix the model or Dimension")
    return "answering"
