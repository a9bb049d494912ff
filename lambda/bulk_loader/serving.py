"""One model version per index: the loader writes vectors only into an index that the same
endpoint version (or, on a stage on Amazon Bedrock, the same Bedrock model) embeds for.

Each index the glue makes embeds through its default ingest pipeline, whose text_embedding
processor names an ml-commons model, whose connector calls one SageMaker endpoint; the
endpoint's name carries the model version (``semsearch-<stage>-<ep>-<8hex>[-ft<millis>]``).
Vectors a batch transform made with endpoint E belong in the index behind the alias only
when that chain ends at E: a re-embed in flight (the alias still on the old version's index)
or a model change since the workflow started ends elsewhere, and the load stops before
writing anything.

On a Bedrock stage the connector calls the Bedrock runtime's InvokeModel URL
(``…/model/<model id>/invoke``) with the model's fixed parameters (Titan v2: dimensions and
normalize; Cohere v3: input_type and truncate): vectors that bulk_loader.embed_bedrock made
belong in the index only when both are those the run sent (``check_bedrock_model``).

The REST calls (each a read; the glue's loader role grants them): ``GET /<alias>/_settings``,
``GET /_ingest/pipeline/<id>``, ``GET /_plugins/_ml/models/<id>``, ``GET
/_plugins/_ml/connectors/<id>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from opensearch_http import CredentialsError, OpenSearchClient, Unreachable

from .bulk import LoadError

#: The endpoint a connector calls: SageMaker runtime's (and the local endpoint's) invocation path.
ENDPOINT_IN_URL = re.compile(r"/endpoints/([^/]+)/invocations")
#: The Bedrock model a connector calls: the runtime's (and the local stand-in's) InvokeModel path.
BEDROCK_MODEL_IN_URL = re.compile(r"/model/([^/]+)/invoke$")


class VersionMismatch(LoadError):
    """The index behind the alias is embedded by another endpoint (model version) than the vectors."""


def _get(client: OpenSearchClient, path: str, what: str) -> Any:
    try:
        status, body = client.send("GET", path)
    except (Unreachable, CredentialsError) as e:
        raise LoadError(str(e)) from e
    if status != 200:
        hint = " (the loader's role needs the glue's loader FGAC role)" if status == 403 else ""
        raise LoadError(f"checking the index's model version: GET {path} ({what}) -> HTTP {status}: "
                        f"{json.dumps(body)[:500]}{hint}")
    return body


def _connector(client: OpenSearchClient, index: str) -> tuple[str, str, dict[str, Any]]:
    """(concrete index behind ``index``, its passage model id, that model's connector)."""
    settings = _get(client, f"/{index}/_settings/index.default_pipeline", "the index's default ingest pipeline")
    if len(settings) != 1:
        raise LoadError(f"{index!r} stands for {len(settings)} indices ({', '.join(sorted(settings))}); "
                        "the loader writes into one")
    (concrete, body), = settings.items()
    pipeline = body.get("settings", {}).get("index", {}).get("default_pipeline")
    if not pipeline or pipeline == "_none":
        raise VersionMismatch(f"index {concrete} (behind {index!r}) has no default ingest pipeline: no model "
                              "embeds for it, so none can vouch for these vectors")
    processors = _get(client, f"/_ingest/pipeline/{pipeline}", "the ingest pipeline")[pipeline]["processors"]
    models = [p["text_embedding"]["model_id"] for p in processors if "text_embedding" in p]
    if len(models) != 1:
        raise VersionMismatch(f"ingest pipeline {pipeline} of index {concrete} has {len(models)} text_embedding "
                              "processors; expected one")
    model = _get(client, f"/_plugins/_ml/models/{models[0]}", "the pipeline's model")
    connector = model.get("connector") or _get(client, f"/_plugins/_ml/connectors/{model.get('connector_id')}",
                                               "the model's connector")
    return concrete, models[0], connector


def _predict_url(connector: Mapping[str, Any]) -> str:
    urls = [a.get("url", "") for a in connector.get("actions", []) if a.get("action_type", "").lower() == "predict"]
    return str(urls[0]) if urls else ""


def connector_endpoint(client: OpenSearchClient, index: str) -> tuple[str, str, str]:
    """(concrete index behind ``index``, its passage model id, the endpoint its connector calls)."""
    concrete, model_id, connector = _connector(client, index)
    url = _predict_url(connector)
    found = ENDPOINT_IN_URL.search(url)
    if not found:
        raise VersionMismatch(f"model {model_id} of index {concrete} calls {url or 'no URL'}, not a SageMaker "
                              "endpoint's invocation URL")
    return concrete, model_id, found.group(1)


def check_version(client: OpenSearchClient, index: str, endpoint_name: str) -> str:
    """The concrete index behind ``index`` when its ingest pipeline embeds with ``endpoint_name``;
    VersionMismatch otherwise. The loader then writes into that concrete index, not the alias:
    were the alias to move mid-load, the writes would hit the old index (write-blocked once
    retired) instead of mixing versions in the new one."""
    concrete, model_id, serving = connector_endpoint(client, index)
    if serving != endpoint_name:
        raise VersionMismatch(
            f"index {concrete} (behind {index!r}) embeds with model {model_id} on endpoint {serving}, but these "
            f"vectors come from endpoint {endpoint_name}: a re-embed is in flight or the model changed since "
            "the workflow started. Nothing was written; run the workflow again once the alias stands on the "
            "index of the endpoint now serving (it reads the serving endpoint anew)")
    return concrete


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def check_bedrock_model(client: OpenSearchClient, index: str, model_id: str, parameters: Mapping[str, Any]) -> str:
    """The concrete index behind ``index`` when its ingest pipeline's connector invokes Bedrock
    model ``model_id`` with these fixed ``parameters`` (what the run sent beside the texts:
    endpoint_request.bedrock.template_parameters); VersionMismatch otherwise, before any write."""
    concrete, pipeline_model, connector = _connector(client, index)
    url = _predict_url(connector)
    found = BEDROCK_MODEL_IN_URL.search(url.split("?", 1)[0])
    if not found:
        raise VersionMismatch(f"index {concrete} (behind {index!r}) embeds with model {pipeline_model}, which calls "
                              f"{url or 'no URL'}, not a Bedrock model, but these vectors come from Bedrock model "
                              f"{model_id}. Nothing was written")
    called = unquote(found.group(1))
    if called != model_id:
        raise VersionMismatch(f"index {concrete} (behind {index!r}) embeds with model {pipeline_model} on Bedrock "
                              f"model {called}, but these vectors come from Bedrock model {model_id}: the stage's "
                              "model changed since the workflow started. Nothing was written")
    # ml-commons keeps connector parameters as strings ("512", "true"): compared as JSON text.
    stored = connector.get("parameters") or {}
    differ = {k: (stored.get(k), v) for k, v in parameters.items() if _as_text(stored.get(k)) != _as_text(v)}
    if differ:
        shown = ", ".join(f"{k} {theirs!r} (these vectors: {ours!r})" for k, (theirs, ours) in sorted(differ.items()))
        raise VersionMismatch(f"index {concrete} (behind {index!r}) embeds with Bedrock model {model_id} but with "
                              f"{shown}: another vector space. Nothing was written")
    return concrete
