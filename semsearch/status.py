"""`semsearch status`: what a stage (or the local stack) serves: models, the index behind the alias, documents.

Read from the domain itself: the alias's index, its ingest pipeline's model (documents are
embedded by it) and, when the index has a default search pipeline with a
``neural_query_enricher``, its query model; each model's ml-commons state; the document
count. A part the credentials may not read (a search-only role) is shown as not readable,
with the HTTP status, and the rest is still shown.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from semsearch import stage
from semsearch.errors import UsageError

# isort: split
from opensearch_http import HTTPStatusError


def _read(target: stage.Target, path: str, notes: list[str]) -> Any:
    """GET ``path``; None (and a note) when the domain refuses it."""
    try:
        return target.client.request("GET", path)[1]
    except HTTPStatusError as e:
        reason = (e.body or {}).get("error", {}) if isinstance(e.body, dict) else {}
        kind = reason.get("type") if isinstance(reason, dict) else None
        notes.append(f"GET {path}: HTTP {e.status}{f' {kind}' if kind else ''}")
        return None


def _pipeline_models(target: stage.Target, kind: str, name: str, notes: list[str]) -> list[str]:
    """Model ids named by an ingest pipeline's text_embedding or a search pipeline's enricher."""
    path = f"/_ingest/pipeline/{name}" if kind == "ingest" else f"/_search/pipeline/{name}"
    body = _read(target, path, notes) or {}
    pipeline = body.get(name) or {}
    ids = []
    if kind == "ingest":
        for processor in pipeline.get("processors", []):
            ids += [p["model_id"] for p in processor.values() if isinstance(p, dict) and p.get("model_id")]
    else:
        for processor in pipeline.get("request_processors", []):
            enricher = processor.get("neural_query_enricher") or {}
            if enricher.get("default_model_id"):
                ids.append(enricher["default_model_id"])
            ids += list((enricher.get("neural_field_default_id") or {}).values())
    return ids


def collect(target: stage.Target) -> dict[str, Any]:
    notes: list[str] = []
    out: dict[str, Any] = {"target": target.label, **target.details, "alias": target.alias,
                           "stack_model_id": target.model_id}
    aliases = _read(target, f"/_alias/{target.alias}", notes)
    out["indices"] = sorted(aliases) if aliases is not None else None
    indices: list[dict[str, Any]] = []
    for index in out["indices"] or []:
        settings = (_read(target, f"/{index}/_settings", notes) or {}).get(index, {}).get("settings", {})
        index_settings = settings.get("index", {})
        ingest_pipeline = index_settings.get("default_pipeline")
        search_pipeline = (index_settings.get("search") or {}).get("default_pipeline")
        indices.append({
            "index": index,
            "ingest_pipeline": ingest_pipeline,
            "ingest_model_ids": _pipeline_models(target, "ingest", ingest_pipeline, notes) if ingest_pipeline else [],
            "search_pipeline": search_pipeline,
            "query_model_ids": _pipeline_models(target, "search", search_pipeline, notes) if search_pipeline else [],
        })
    out["index_details"] = indices
    model_ids = [target.model_id, target.details.get("stack_query_model_id")]
    model_ids += [m for i in indices for m in i["ingest_model_ids"] + i["query_model_ids"]]
    models = []
    for model_id in dict.fromkeys(m for m in model_ids if m):  # in order, once each
        model = _read(target, f"/_plugins/_ml/models/{model_id}", notes) or {}
        models.append({"model_id": model_id, "name": model.get("name"), "state": model.get("model_state")})
    out["models"] = models
    count = _read(target, f"/{target.alias}/_count", notes)
    out["documents"] = count["count"] if count else None
    out["not_readable"] = notes
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="models, the index behind the alias and the document count",
                                   description=__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON object")
    stage.add_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    target = stage.resolve(args)
    try:
        status = collect(target)
    except stage.DOMAIN_ERRORS as e:
        raise UsageError(f"{target.label}: {e}") from None
    if args.json:
        print(json.dumps(status))
        return 0
    print(status["target"])
    for key in ("domain_endpoint", "opensearch_url", "alias", "documents"):
        if status.get(key) is not None:
            print(f"  {key + ':':<18}{status[key]}")
    print(f"  {'indices:':<18}{', '.join(status['indices']) if status['indices'] is not None else 'not readable'}")
    for index in status["index_details"]:
        print(f"    {index['index']}: ingest {index['ingest_pipeline']} -> {', '.join(index['ingest_model_ids']) or '?'}"
              + (f"; queries {index['search_pipeline']} -> {', '.join(index['query_model_ids']) or '?'}"
                 if index["search_pipeline"] else ""))
    for model in status["models"]:
        print(f"  model {model['model_id']}: {model['name'] or '?'} ({model['state'] or 'state not readable'})"
              + ("  [the stack's ModelId]" if model["model_id"] == status["stack_model_id"] else ""))
    for note in status["not_readable"]:
        print(f"  not readable: {note}")
    return 0
