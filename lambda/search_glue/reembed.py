"""Model changes that re-embed: nothing lost, searches answered the whole time.

A change of anything in ``GlueProperties.identity()`` (model, endpoint, weights, prefixes,
dimension, space type, ...) builds new objects and a new index under a new physical id.
When the ``IndexName`` alias already stands on another index, that index's documents are
re-embedded into the new one from their stored text, and only then does the alias move:

1. copy     ``_reindex`` (``wait_for_completion=false``) from the old index into the new
            one through the new ingest pipeline (``dest.pipeline``); the old vectors are
            dropped on the way (script) so every vector comes from the new model.
2. catch-up writes to the old index are blocked (``index.blocks.write``: a writer gets an
            error, nothing vanishes) and the documents written during the copy
            (``_seq_no`` above the copy's start) are re-embedded the same way.
3. check    after a refresh, documents in == documents out (counts), else the change fails.
4. flip     one ``_aliases`` call: the alias leaves the old index for the new one, and the
            old one takes ``<alias>-retired`` -- the flip and the retirement are one step.

Searches use the alias, which stays on the old index until step 4. Each is_complete call is
a fresh Lambda invocation, so the progress (phase, task id, sequence numbers) is kept in the
new index's mapping ``_meta.semsearch``. A failure at any step unblocks the old index,
leaves the alias where it was, and names the step, the counts and the task's failures; the
handler then removes the new index (its documents are copies).

Retired indices stay, read-only, for ``RetiredIndexHours``; CloudFormation's Delete
of the old physical id removes its models, connector and pipelines but keeps the index
(``retire_or_delete_index``). The scheduled watchdog (``sweep_retired``) deletes a retired
index once its period is over, and never one that holds the live alias, has more documents
than the live index, or received writes that were not copied anywhere (``unique_writes``).

No Delete removes documents that may exist nowhere else: an index that is not retired and
not handed back is deleted only when it holds no documents. With documents (an IndexName
change, which re-embeds nothing; a stack deletion that keeps the domain) it is retired
instead -- alias removed, ``<alias>-retired`` added, writes blocked, pipelines detached,
``_meta.semsearch.retired`` = {at, reason: "delete", unique_writes: true} -- so the
watchdog never deletes it: a person does. A later Create of the same physical id (the stack
deployed again on the kept domain) adopts it and puts it back in service.

A stack rollback after the flip sends an Update back to the old properties: the alias's
target is then a retired index this one was re-embedded from, so it is reinstated -- only
the documents written to the new index since the flip are re-embedded into it (catch-up),
then the alias flips back and the new index is retired in turn. A Delete of the new physical
id while it still holds the alias flips back at once without the catch-up, and the new index
is kept (marked ``unique_writes`` when it received writes since the flip).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from . import steps
from .client import OpenSearch, StepError
from .properties import GlueProperties
from .steps import Names

log = logging.getLogger(__name__)

META = "semsearch"
RUNNING = ("copy", "catchup")
# Drop every stored vector: the new pipeline writes the new model's one (params.fields).
DROP_VECTORS = "for (f in params.fields) { ctx._source.remove(f) }"
FAILURES_SHOWN = 3


class ReembedFailed(StepError):
    """The re-embed stopped; the alias has not moved and the old index serves as before."""


def retired_alias(names: Names) -> str:
    return f"{names.alias}-retired"


# ---------------------------------------------------------------------------------------
# Small reads and writes


def holders(client: OpenSearch, alias: str) -> list[str]:
    status, body = client.call("reembed", "GET", f"/_alias/{alias}", ok=(404,))
    return sorted(body) if status == 200 else []


def read_meta(client: OpenSearch, index: str) -> dict[str, Any]:
    _, body = client.call("reembed", "GET", f"/{index}/_mapping")
    return dict(body[index]["mappings"].get("_meta", {}).get(META, {}))


def write_meta(client: OpenSearch, index: str, **changes: Any) -> None:
    """Set top-level keys of ``_meta.semsearch``, keeping the others (read, modify, write)."""
    meta = {**read_meta(client, index), **changes}
    client.call("reembed", "PUT", f"/{index}/_mapping", {"_meta": {META: meta}})


def count(client: OpenSearch, index: str) -> int:
    client.call("reembed", "POST", f"/{index}/_refresh")
    _, body = client.call("reembed", "GET", f"/{index}/_count")
    return int(body["count"])


def max_seq_nos(client: OpenSearch, index: str) -> dict[str, int]:
    """Shard number -> its primary's highest sequence number (every write raises it)."""
    _, body = client.call("reembed", "GET", f"/{index}/_stats/docs?level=shards")
    shards = body["indices"][index]["shards"]
    return {number: int(copy["seq_no"]["max_seq_no"]) for number, copies in shards.items()
            for copy in copies if copy["routing"]["primary"]}


def block_writes(client: OpenSearch, index: str, blocked: bool) -> None:
    client.call("reembed", "PUT", f"/{index}/_settings", {"index": {"blocks.write": blocked}})


def detach_pipelines(client: OpenSearch, index: str) -> None:
    """A kept index stops naming the pipelines its Delete removes: a search (or count) of an
    index whose default search pipeline is gone fails. An Update that adopts it again sets
    its search pipeline back (steps.ensure_index)."""
    client.call("delete_index", "PUT", f"/{index}/_settings",
                {"index": {"default_pipeline": "_none", "search": {"default_pipeline": "_none"}}})


def vector_fields(client: OpenSearch, index: str) -> tuple[list[str], dict[str, Any]]:
    _, body = client.call("reembed", "GET", f"/{index}/_mapping")
    properties = body[index]["mappings"].get("properties", {})
    return sorted(f for f, spec in properties.items() if spec.get("type") == "knn_vector"), properties


# ---------------------------------------------------------------------------------------
# The re-embed, one is_complete call at a time


def move_alias(client: OpenSearch, props: GlueProperties, names: Names) -> bool:
    """Put the alias on ``names.index``, re-embedding first when it stands on another index.

    True once the alias is there; False while a re-embed runs (call again). A failure raises
    ReembedFailed after unblocking the old index (``abandon`` tells the cleanup what to remove).
    """
    current = holders(client, names.alias)
    if current == [names.index]:
        _back_in_service(client, names)
        return True
    if not current:
        _back_in_service(client, names)  # a Delete kept it (stack deleted, domain kept): it serves again
        steps.point_alias(client, names)  # the first version: nothing to copy
        return True
    if len(current) > 1:
        raise StepError("reembed", f"alias {names.alias} stands on {current}: expected one index; "
                                   f"point it at the one that serves and retry")
    return _advance(client, props, names, current[0], names.index)


def _back_in_service(client: OpenSearch, names: Names) -> None:
    """An adopted index that a Delete retired (``retire_or_delete_index``) takes writes again
    through its ingest pipeline (its search pipeline is set back by steps.ensure_index)."""
    if names.index not in holders(client, retired_alias(names)):
        return
    client.call("alias", "POST", "/_aliases", {"actions": [
        {"remove": {"index": names.index, "alias": retired_alias(names)}}]})
    block_writes(client, names.index, False)
    client.call("index", "PUT", f"/{names.index}/_settings", {"index": {"default_pipeline": names.ingest_pipeline}})
    write_meta(client, names.index, retired={})
    log.info("index: %s, kept by an earlier Delete, serves again", names.index)


def abandon(client: OpenSearch, names: Names) -> list[str]:
    """After a failure in any step of an Update: stop a re-embed into ``names.index`` (cancel
    its task, unblock its source) and return what the cleanup may remove -- this index and
    its pipeline when they never served (their documents are copies), else nothing."""
    status, _ = client.call("reembed", "HEAD", f"/{names.index}", ok=(404,))
    if status == 404:
        return []
    meta = read_meta(client, names.index)
    state = meta.get("reembed") or {}
    if state.get("phase") not in RUNNING:
        return []
    if state.get("task"):
        client.call("reembed", "POST", f"/_tasks/{state['task']}/_cancel", ok=(404,))
        deadline = time.monotonic() + 30
        while not client.call("reembed", "GET", f"/_tasks/{state['task']}", ok=(404,))[1].get("completed", True):
            if time.monotonic() > deadline:
                raise StepError("reembed", f"task {state['task']} still running 30 s after its cancellation")
            time.sleep(steps.POLL_S)
    if client.call("reembed", "HEAD", f"/{state['source']}", ok=(404,))[0] == 200:
        block_writes(client, state["source"], False)
    log.info("reembed: %s -> %s abandoned; the alias stays on %s", state["source"], names.index, state["source"])
    if meta.get("flipped") or names.index in holders(client, retired_alias(names)):
        return []  # it served before: keep it
    return ["ingest_pipeline", "index"]


def _advance(client: OpenSearch, props: GlueProperties, names: Names, source: str, target: str) -> bool:
    state = read_meta(client, target).get("reembed") or {}
    if state.get("source") != source or state.get("phase") not in RUNNING:
        _start(client, props, names, source, target)
        return False
    task = _task_result(client, source, target, state)
    if task is None:
        return False  # still running
    if state["phase"] == "copy":
        block_writes(client, source, True)
        _start_catchup(client, names, source, target, state["from_seq_no"], took_s=task.get("took", 0) / 1000,
                       reinstating=False)
        return False
    _check_and_flip(client, names, source, target, state)
    return True


def _start(client: OpenSearch, props: GlueProperties, names: Names, source: str, target: str) -> None:
    fields, mapping = vector_fields(client, source)
    if props.text_field not in mapping:
        raise ReembedFailed("reembed", f"{source} has no field {props.text_field!r} (TextField) to re-embed "
                                       f"from: its fields are {sorted(mapping)}; the alias stays on {source}")
    target_meta = read_meta(client, target)
    retired = holders(client, retired_alias(names))
    if target in retired:
        block_writes(client, target, False)  # coming back into service
    flipped = read_meta(client, source).get("flipped") or {}
    if target in retired and flipped.get("from") == target:
        # A rollback: the target holds every document up to the flip; copy only what the
        # source received since.
        log.info("reembed: reinstating %s (retired when the alias moved to %s)", target, source)
        block_writes(client, source, True)
        _start_catchup(client, names, source, target, flipped["seq_no"], took_s=0, reinstating=True, fields=fields)
        return
    seq = max_seq_nos(client, source)
    task = _reindex(client, names, source, fields, {"match_all": {}})
    write_meta(client, target, reembed={**target_meta.get("reembed", {}), "source": source, "phase": "copy",
                                        "task": task, "from_seq_no": seq, "vector_fields": fields,
                                        "reinstating": False, "started_at": time.time()})
    log.info("reembed: copying %s -> %s through pipeline %s (task %s)", source, target, names.ingest_pipeline, task)


def _start_catchup(client: OpenSearch, names: Names, source: str, target: str, since: dict[str, int], *,
                   took_s: float, reinstating: bool, fields: list[str] | None = None) -> None:
    """Writes are blocked on ``source``: re-embed what it received after ``since``."""
    now = max_seq_nos(client, source)
    task = None
    if now != since:
        # Sequence numbers are per shard: the lowest start covers every shard (a document
        # copied twice is overwritten with the same text, same vector).
        query = {"range": {"_seq_no": {"gt": min(since.values())}}}
        if fields is None:
            fields = read_meta(client, target)["reembed"]["vector_fields"]
        task = _reindex(client, names, source, fields, query)
    state = read_meta(client, target).get("reembed", {})
    write_meta(client, target, reembed={**state, "source": source, "phase": "catchup", "task": task,
                                        "reinstating": reinstating, "copy_s": took_s,
                                        "catchup_started_at": time.time()})
    log.info("reembed: %s blocked for writes; catch-up %s -> %s: %s", source, source, target,
             f"task {task}" if task else "nothing written since")


def _reindex(client: OpenSearch, names: Names, source: str, fields: list[str], query: dict[str, Any]) -> str:
    """Start a _reindex task into this version's index through its ingest pipeline."""
    _, body = client.call("reembed", "POST", "/_reindex?wait_for_completion=false", {
        "source": {"index": source, "query": query},
        "dest": {"index": names.index, "pipeline": names.ingest_pipeline},
        **({"script": {"lang": "painless", "source": DROP_VECTORS, "params": {"fields": fields}}} if fields else {}),
    })
    return str(body["task"])


def _task_result(client: OpenSearch, source: str, target: str, state: dict[str, Any]) -> dict[str, Any] | None:
    """The finished task's response; None while it runs; ReembedFailed when it failed."""
    task_id = state.get("task")
    if not task_id:
        return {}
    _, task = client.call("reembed", "GET", f"/_tasks/{task_id}")
    status = task.get("task", {}).get("status", {})
    if not task.get("completed"):
        log.info("reembed: %s %s -> %s: %s of %s documents", state["phase"], source, target,
                 status.get("created", 0) + status.get("updated", 0), status.get("total", "?"))
        return None
    response = task.get("response") or {}
    failures = response.get("failures") or []
    if task.get("error") or failures:
        block_writes(client, source, False)
        shown = [f"{f.get('id')}: {f.get('cause', {}).get('type')}: {f.get('cause', {}).get('reason')}"
                 for f in failures[:FAILURES_SHOWN]]
        raise ReembedFailed("reembed", (
            f"{state['phase']} {source} -> {target} (task {task_id}) failed after "
            f"{response.get('created', 0) + response.get('updated', 0)} of {response.get('total', '?')} documents: "
            + (f"{len(failures)} failures, e.g. {shown}" if failures else f"{task['error']}")
            + f"; the alias stays on {source}, which keeps serving"))
    return dict(response)


def _check_and_flip(client: OpenSearch, names: Names, source: str, target: str, state: dict[str, Any]) -> None:
    documents_in, documents_out = count(client, source), count(client, target)
    # A rollback may find fewer documents in the index it leaves (deleted during the
    # window); the index it returns to keeps them. A forward change must match exactly.
    ok = documents_out >= documents_in if state.get("reinstating") else documents_out == documents_in
    if not ok:
        block_writes(client, source, False)
        raise ReembedFailed("reembed", f"count check failed: {documents_in} documents in {source}, "
                                       f"{documents_out} in {target}; the alias stays on {source}, which keeps serving")
    retired = holders(client, retired_alias(names))
    actions: list[dict[str, Any]] = [
        {"remove": {"index": source, "alias": names.alias}},
        {"add": {"index": target, "alias": names.alias}},
        {"add": {"index": source, "alias": retired_alias(names)}},
    ]
    if target in retired:
        actions.append({"remove": {"index": target, "alias": retired_alias(names)}})
    client.call("alias", "POST", "/_aliases", {"actions": actions})
    now = time.time()
    log.info("alias: %s -> %s (was %s, now retired); %d documents re-embedded", names.alias, target, source,
             documents_out)
    # After the flip: a failure here leaves an unstamped retiree, which the watchdog stamps.
    write_meta(client, source, retired={"at": now, "replaced_by": target, "unique_writes": False})
    write_meta(client, target, retired={}, reembed={**state, "phase": "done", "documents": documents_out},
               # "by": what moved the alias (serving.flip_verdict retires the old endpoint only
               # after a forward re-embed, never after a rollback or a hand-back).
               flipped={"from": source, "at": now, "seq_no": max_seq_nos(client, target),
                        "by": "rollback" if state.get("reinstating") else "reembed",
                        "documents": documents_out, "copy_s": state.get("copy_s", 0),
                        "catchup_s": now - state.get("catchup_started_at", now)})


# ---------------------------------------------------------------------------------------
# Delete and the watchdog


def retire_or_delete_index(client: OpenSearch, names: Names) -> str:
    """The index part of a Delete: "kept" (retired), "handed back" (rollback) or "deleted".

    Only an index with no documents is deleted; any other is kept, retired (see the module
    docstring), whatever holds the alias.
    """
    status, _ = client.call("delete_index", "HEAD", f"/{names.index}", ok=(404,))
    if status == 404:
        return "deleted"
    retired = holders(client, retired_alias(names))
    if names.index in retired:
        detach_pipelines(client, names.index)
        log.info("delete: index %s is retired: kept for the watchdog to delete after its period", names.index)
        return "kept"
    meta = read_meta(client, names.index)
    predecessor = (meta.get("flipped") or {}).get("from")
    if names.index in holders(client, names.alias) and predecessor in retired:
        # The stack rolls back (or drops this version) while this index serves: flip back to
        # the index it replaced, which still has every document up to the flip.
        unique = max_seq_nos(client, names.index) != meta["flipped"]["seq_no"]
        block_writes(client, predecessor, False)
        client.call("delete_index", "POST", "/_aliases", {"actions": [
            {"remove": {"index": names.index, "alias": names.alias}},
            {"add": {"index": predecessor, "alias": names.alias}},
            {"remove": {"index": predecessor, "alias": retired_alias(names)}},
            {"add": {"index": names.index, "alias": retired_alias(names)}}]})
        block_writes(client, names.index, True)
        detach_pipelines(client, names.index)
        now = time.time()
        write_meta(client, names.index, retired={"at": now, "replaced_by": predecessor, "unique_writes": unique})
        write_meta(client, predecessor, retired={}, flipped={"from": names.index, "at": now, "by": "handback",
                                                            "seq_no": max_seq_nos(client, predecessor)})
        log.warning("delete: alias %s handed back to %s; %s kept (retired)%s", names.alias, predecessor,
                    names.index, ": it received writes since the flip that exist only there" if unique else "")
        return "handed back"
    # Nothing else holds these documents (an IndexName change re-embeds nothing; a stack
    # deletion may leave the domain standing): an index with documents is retired, never
    # deleted. Writes are blocked first, so none lands between the count and the delete.
    block_writes(client, names.index, True)
    detach_pipelines(client, names.index)  # before the count: it reads through the search pipeline
    documents = count(client, names.index)
    if documents == 0:
        steps.teardown(client, names, only={"index"})
        log.info("delete: index %s held no documents: deleted", names.index)
        return "deleted"
    # Retired as a model change retires an index, but the alias is not handed to another
    # version: their documents are not these. The stamp's unique_writes keeps the watchdog
    # from ever deleting it: a person does, once the documents are elsewhere.
    actions: list[dict[str, Any]] = [{"add": {"index": names.index, "alias": retired_alias(names)}}]
    if names.index in holders(client, names.alias):
        actions.insert(0, {"remove": {"index": names.index, "alias": names.alias}})
    client.call("delete_index", "POST", "/_aliases", {"actions": actions})
    write_meta(client, names.index, retired={"at": time.time(), "reason": "delete", "unique_writes": True})
    log.warning("delete: index %s kept (retired under %s, writes blocked): it holds %d documents that may exist "
                "nowhere else; delete it by hand once they do", names.index, retired_alias(names), documents)
    return "kept"


def sweep_retired(client: OpenSearch, props: GlueProperties, names: Names, now: float | None = None) -> dict[str, Any]:
    """Delete the retired indices whose period is over; say why each other one is kept."""
    now = time.time() if now is None else now
    retired = holders(client, retired_alias(names))
    if not retired:
        return {}
    live = holders(client, names.alias)
    live_count = count(client, live[0]) if len(live) == 1 else None
    deleted: list[str] = []
    kept: dict[str, str] = {}
    for index in retired:
        stamp = read_meta(client, index).get("retired") or {}
        if not stamp.get("at"):
            write_meta(client, index, retired={**stamp, "at": now, "unique_writes": stamp.get("unique_writes", False)})
            stamp = {"at": now}
        documents = count(client, index)
        left_h = props.retired_index_retention_hours - (now - float(stamp["at"])) / 3600
        if index in live:
            kept[index] = "holds the live alias"
        elif live_count is None:
            kept[index] = f"no single live index behind {names.alias} ({live}) to compare with"
        elif left_h > 0:
            kept[index] = f"retention: {left_h:.1f} h left"
        elif stamp.get("unique_writes"):
            kept[index] = "received writes that exist nowhere else: delete it by hand once copied"
        elif documents > live_count:
            kept[index] = f"{documents} documents, more than the live index's {live_count}"
        else:
            client.call("watchdog", "DELETE", f"/{index}", ok=(404,))
            deleted.append(index)
            log.info("watchdog: retired index %s deleted (%d documents, live %s has %d)", index, documents,
                     live[0], live_count)
            continue
        log.info("watchdog: retired index %s kept: %s", index, kept[index])
    return {"Deleted": deleted, "Kept": kept}
