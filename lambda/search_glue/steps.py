"""The ml-commons / neural-search objects, one function per step, each safe to repeat.

Every object is named after the physical id, so a repeated Create finds (adopts) what
exists instead of making a duplicate, and a Delete knows what to remove from the id alone.
The index behind the ``IndexName`` alias is versioned the same way: a replacement builds
a new index and moves the alias; the old index goes with the old resource's Delete.

The ``ensure_*`` steps append the kind of each object they create (not adopt) to a
``created`` list, so a failed request removes exactly what it made and nothing it found.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

# The body each serving flavor expects, and who adds the prefix: shared with the batch-embed
# request lines (bulk_loader.prepare), so both paths send the endpoint the same request.
from endpoint_request import CUSTOM_BODY, TEI_BODY, bedrock, body_template, caller_prefix  # noqa: F401 (re-exported)

from .client import OpenSearch, StepError
from .properties import GlueProperties

log = logging.getLogger(__name__)

PRE_PROCESS = "connector.pre_process.default.embedding"
POST_PROCESS = "connector.post_process.default.embedding"
# What a text is embedded as. neural-search sends ingest and query texts to a model the
# same way, so the kind lives in which model (and so which connector) is called.
TEXT_KINDS = ("passage", "query")
SMOKE_TEXT = "semsearch smoke test"
# Hybrid search: keyword (first sub-query) and neural (second) scores after min-max.
HYBRID_WEIGHTS = [0.3, 0.7]
POLL_S = 1.0
# Object kinds, in teardown order.
KINDS = ("index", "ingest_pipeline", "search_pipeline", "query_model", "model", "query_connector", "connector",
         "model_group", "search_role", "loader_role")
# What SageMaker answers (HTTP 400 ValidationError) when the inference component named in
# the call has no copies: a scale-to-zero endpoint outside its active hours. ml-commons
# passes the status on and quotes the body in its own error ("Error from remote service: ...").
NO_CAPACITY = "Inference Component has no capacity to process this request"


@dataclass(frozen=True)
class Names:
    """Every object's name, from the physical id (and the alias from the properties)."""

    physical_id: str
    alias: str = ""

    @property
    def connector(self) -> str:
        return self.physical_id

    @property
    def query_connector(self) -> str:
        return f"{self.physical_id}-query"

    @property
    def model_group(self) -> str:
        return self.physical_id

    @property
    def model(self) -> str:
        """The passage model (the ingest pipeline's; the only one of a symmetric model)."""
        return self.physical_id

    @property
    def query_model(self) -> str:
        return f"{self.physical_id}-query"

    def connector_for(self, kind: str) -> str:
        return self.query_connector if kind == "query" else self.connector

    def model_for(self, kind: str) -> str:
        return self.query_model if kind == "query" else self.model

    @property
    def ingest_pipeline(self) -> str:
        return self.physical_id

    @property
    def index(self) -> str:
        return self.physical_id

    @property
    def search_pipeline(self) -> str:
        """The index's default search pipeline: its query model (and hybrid normalization)."""
        return f"{self.physical_id}-search-pipeline"

    @property
    def legacy_search_pipeline(self) -> str:
        """What the hybrid-only pipeline was called before every index had one."""
        return f"{self.physical_id}-hybrid"

    @property
    def search_role(self) -> str:
        return f"{self.physical_id}-search"

    @property
    def loader_role(self) -> str:
        return f"{self.physical_id}-loader"

    @property
    def family(self) -> re.Pattern[str]:
        """Indices of every version of this resource (same Name, any hash)."""
        prefix = self.physical_id.rsplit("-", 1)[0]
        return re.compile(rf"^{re.escape(prefix)}-[0-9a-f]{{10}}$")


# ---------------------------------------------------------------------------------------
# Settings and role mappings


def apply_cluster_settings(client: OpenSearch, props: GlueProperties) -> None:
    if props.cluster_settings:
        client.call("cluster_settings", "PUT", "/_cluster/settings", {"persistent": props.cluster_settings})


def merge_role_mappings(client: OpenSearch, props: GlueProperties, old: GlueProperties | None = None) -> None:
    """Add backend roles to FGAC role mappings, keeping every mapping already there.

    PUT would replace a mapping's whole list; a JSON-patch ``add`` at ``/<role>/backend_roles/-``
    appends one entry, and only the roles that are missing are appended. An Update takes
    back what the previous properties mapped and these no longer do (say, the loader's role
    leaving all_access for its own role), and nothing else.
    """
    for role, wanted in props.role_mappings.items():
        status, body = client.call("role_mapping", "GET", f"/_plugins/_security/api/rolesmapping/{role}", ok=(404,))
        existing = (body or {}).get(role, {}).get("backend_roles", []) if status == 200 else None
        if existing is None:
            ops = [{"op": "add", "path": f"/{role}", "value": {"backend_roles": list(dict.fromkeys(wanted))}}]
        else:
            ops = [{"op": "add", "path": f"/{role}/backend_roles/-", "value": arn}
                   for arn in dict.fromkeys(wanted) if arn not in existing]
        if ops:
            log.info("role_mapping: adding %s to %s", [a for a in wanted if a not in (existing or [])], role)
            client.call("role_mapping", "PATCH", "/_plugins/_security/api/rolesmapping", ops)
    for role, before in (old.role_mappings if old else {}).items():
        dropped = set(before) - set(props.role_mappings.get(role, []))
        if not dropped:
            continue
        status, body = client.call("role_mapping", "GET", f"/_plugins/_security/api/rolesmapping/{role}", ok=(404,))
        existing = body[role].get("backend_roles", []) if status == 200 else []
        # Highest index first: each removal leaves the positions of the next ones unchanged.
        positions = sorted((i for i, arn in enumerate(existing) if arn in dropped), reverse=True)
        if positions:
            log.info("role_mapping: removing %s from %s", [existing[i] for i in positions], role)
            client.call("role_mapping", "PATCH", "/_plugins/_security/api/rolesmapping",
                    [{"op": "remove", "path": f"/{role}/backend_roles/{i}"} for i in positions])


def access_roles(props: GlueProperties, names: Names) -> dict[str, tuple[str, dict[str, Any], tuple[str, ...]]]:
    """kind -> (FGAC role name, role body, backend roles) of the least-privilege roles.

    Both reach the index by its alias and by this version's concrete index, nothing else.
    FGAC cluster permissions cannot name a model: the search role may call predict, which
    a neural query does as the searching user to embed the query text.
    """
    indices = [names.alias, names.index]
    search = {
        "description": f"neural search on {names.alias}: search it, embed the query with its model",
        "cluster_permissions": ["cluster:admin/opensearch/ml/predict"],
        "index_permissions": [{"index_patterns": indices, "allowed_actions": ["indices:data/read/search"]}],
    }
    # The loader reads the chain index -> ingest pipeline -> model -> connector first, to
    # write only vectors of the model version the index embeds with (bulk_loader.serving).
    loader = {
        "description": f"bulk loader for {names.alias}: read its mapping and model version, write documents",
        "cluster_permissions": ["indices:data/write/bulk", "cluster:admin/ingest/pipeline/get",
                                "cluster:admin/opensearch/ml/models/get", "cluster:admin/opensearch/ml/connectors/get"],
        "index_permissions": [{"index_patterns": indices, "allowed_actions": [
            "indices:admin/mappings/get", "indices:monitor/settings/get", "indices:data/write/bulk[s]",
            "indices:data/write/index"]}],
    }
    return {"search_role": (names.search_role, search, props.search_backend_roles),
            "loader_role": (names.loader_role, loader, props.loader_backend_roles)}


def ensure_access_roles(client: OpenSearch, props: GlueProperties, names: Names, created: list[str],
                        old: GlueProperties | None = None) -> None:
    """The search and loader roles, each mapped to exactly its backend roles.

    The glue owns these roles (named after the physical id), so PUT sets the whole role and
    the whole mapping: a backend role dropped from the properties loses its access. A role
    with no backend roles is not made, and an Update that drops the last one removes it.
    """
    if props.auth_mode == "none":
        return  # no security plugin, no roles (properties refuse backend roles here)
    before = access_roles(old, names) if old else {}
    for kind, (role, body, backend_roles) in access_roles(props, names).items():
        if not backend_roles:
            if kind in before and before[kind][2]:
                _delete_role(client, role)
                log.info("%s: %s removed (no backend roles any more)", kind, role)
            continue
        status, _ = client.call(kind, "GET", f"/_plugins/_security/api/roles/{role}", ok=(404,))
        client.call(kind, "PUT", f"/_plugins/_security/api/roles/{role}", body)
        if status == 404:
            created.append(kind)
        client.call(kind, "PUT", f"/_plugins/_security/api/rolesmapping/{role}", {"backend_roles": list(backend_roles)})
        log.info("%s: %s mapped to %s", kind, role, list(backend_roles))


def _delete_role(client: OpenSearch, role: str) -> None:
    client.call("delete_role", "DELETE", f"/_plugins/_security/api/rolesmapping/{role}", ok=(404,))
    client.call("delete_role", "DELETE", f"/_plugins/_security/api/roles/{role}", ok=(404,))


# ---------------------------------------------------------------------------------------
# Finding by name


def find_all(client: OpenSearch, step: str, kind: str, name: str) -> list[dict[str, Any]]:
    """ml-commons objects (connectors, model_groups, models) whose name is exactly ``name``."""
    query = {"size": 100, "query": {"term": {"name.keyword": name}}}
    # Before the first object of a kind exists its system index does not either: 404 = none.
    status, body = client.call(step, "POST", f"/_plugins/_ml/{kind}/_search", query, ok=(404,))
    if status == 404:
        return []
    return [{"id": hit["_id"], **hit["_source"]} for hit in body["hits"]["hits"]]


def _first_id(hits: list[dict[str, Any]]) -> str | None:
    return min(hits, key=lambda h: h.get("created_time", 0))["id"] if hits else None


# ---------------------------------------------------------------------------------------
# Connector, model group, model


def text_kinds(props: GlueProperties) -> tuple[str, ...]:
    """The kinds this model version registers a model for: passage, and query when asymmetric."""
    return TEXT_KINDS if props.asymmetric else ("passage",)


def prefix_script(prefix: str) -> str:
    """A painless pre_process function: ml-commons' default embedding input with ``prefix``
    in front of every text.

    ml-commons 2.19 hands a script ``params.text_docs``, each text already escaped for a JSON
    string but without its quotes (StringUtils.processTextDoc), and reads the ``parameters``
    of the JSON the script returns; a list value reaches ``${parameters.input}`` as a JSON
    array, as the default function's does.
    """
    as_json = json.dumps(prefix)[1:-1]  # the prefix as it sits inside a JSON string
    literal = "'" + as_json.replace("\\", "\\\\").replace("'", "\\'") + "'"  # ... in a painless string
    return ("List texts = new ArrayList(); "
            f"for (def doc : params.text_docs) {{ texts.add('\"' + {literal} + doc + '\"'); }} "
            "return '{\"parameters\": {\"input\": [' + String.join(',', texts) + ']}}';")


def predict_action(props: GlueProperties, kind: str) -> dict[str, str]:
    """How the connector of ``kind`` asks the endpoint: the request body and pre_process function.

    TEI embeds the inputs as given (its prompts only exist where the model's files define
    them), so the connector prepends the catalog's prefix; our handler is told the kind.
    """
    prefix = caller_prefix(props.flavor, props.query_prefix if kind == "query" else props.passage_prefix)
    return {"request_body": body_template(props.flavor, kind),
            "pre_process_function": prefix_script(prefix) if prefix else PRE_PROCESS}


def connector_body(props: GlueProperties, name: str, kind: str = "passage") -> dict[str, Any]:
    if props.flavor == "bedrock":
        return bedrock_connector_body(props, name, kind)
    return {
        "name": name,
        "description": f"SageMaker endpoint {props.endpoint_name or props.invocation_url} ({props.flavor}, "
                       f"{kind} texts)",
        "version": "1",
        "protocol": "aws_sigv4",
        "parameters": {"region": props.region, "service_name": "sagemaker"},
        "credential": props.credential(),
        "client_config": props.client_config(),
        "actions": [{
            "action_type": "predict",
            "method": "POST",
            "url": props.invocation_url,
            "headers": {"content-type": "application/json",
                        **({"X-Amzn-SageMaker-Inference-Component": props.inference_component}
                           if props.inference_component else {})},
            **predict_action(props, kind),
            "post_process_function": POST_PROCESS,
        }],
    }


def bedrock_connector_body(props: GlueProperties, name: str, kind: str) -> dict[str, Any]:
    """The connector for a Bedrock model: its InvokeModel body, limits and pre/post-processing
    from endpoint_request.bedrock (the `semsearch` client's definitions too); Cohere's
    input_type follows ``kind`` (search_document for ingest, search_query for queries)."""
    model_id = props.bedrock_model_id
    return {
        "name": name,
        "description": f"Amazon Bedrock model {model_id} ({kind} texts)",
        "version": "1",
        "protocol": "aws_sigv4",
        "parameters": bedrock.connector_parameters(model_id, kind, region=props.region, dimension=props.dimension,
                                                   normalize=props.bedrock_normalize_sent),
        "credential": props.credential(),
        "client_config": props.client_config(),
        "actions": [bedrock.connector_action(model_id, props.invocation_url)],
    }


def ensure_connector(client: OpenSearch, props: GlueProperties, names: Names, created: list[str], *,
                     credentials_changed: bool, kind: str = "passage") -> str:
    """The id of the connector for ``kind`` texts, created if missing; client_config/credential
    brought up to date.

    ml-commons refuses to change a connector a deployed model uses, so an update undeploys
    the model first; ``request_deploy`` redeploys it.
    """
    name = names.connector_for(kind)
    hits = find_all(client, "connector", "connectors", name)
    if not hits:
        _, body = client.call("connector", "POST", "/_plugins/_ml/connectors/_create",
                              connector_body(props, name, kind))
        created.append("query_connector" if kind == "query" else "connector")
        log.info("connector: created %s (%s)", body["connector_id"], kind)
        return str(body["connector_id"])
    connector_id = _first_id(hits)
    assert connector_id is not None
    stored = next(h for h in hits if h["id"] == connector_id).get("client_config") or {}
    drifted = any(stored.get(k) != v for k, v in props.client_config().items())
    if drifted or credentials_changed:
        log.info("connector: updating %s (client_config %s, credentials %s)", connector_id,
                 "changed" if drifted else "same", "changed" if credentials_changed else "same")
        for model in find_all(client, "connector", "models", names.model_for(kind)):
            undeploy(client, model["id"])
        client.call("connector", "PUT", f"/_plugins/_ml/connectors/{connector_id}", props.updatable_connector_part())
    else:
        log.info("connector: adopted %s", connector_id)
    return connector_id


def ensure_model_group(client: OpenSearch, names: Names, created: list[str]) -> str:
    found = _first_id(find_all(client, "model_group", "model_groups", names.model_group))
    if found:
        log.info("model_group: adopted %s", found)
        return found
    _, body = client.call("model_group", "POST", "/_plugins/_ml/model_groups/_register",
                      {"name": names.model_group, "description": "semsearch remote embedding models"})
    created.append("model_group")
    log.info("model_group: created %s", body["model_group_id"])
    return str(body["model_group_id"])


def wait_task(client: OpenSearch, step: str, task_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        _, task = client.call(step, "GET", f"/_plugins/_ml/tasks/{task_id}")
        if task.get("state") == "COMPLETED":
            return dict(task)
        if task.get("state") in ("FAILED", "CANCELLED", "COMPLETED_WITH_ERROR"):
            raise StepError(step, f"task {task_id} ended {task.get('state')}: {task.get('error')}")
        if time.monotonic() > deadline:
            raise StepError(step, f"task {task_id} still {task.get('state')} after {timeout_s:.0f} s")
        time.sleep(POLL_S)


def ensure_model(client: OpenSearch, names: Names, connector_id: str, group_id: str, created: list[str], *,
                 kind: str = "passage", timeout_s: float = 60, bedrock_model_id: str = "") -> str:
    """The id of the registered remote model (function_name remote) for ``kind`` texts,
    registering it if missing."""
    name = names.model_for(kind)
    provider = f"Amazon Bedrock model {bedrock_model_id}" if bedrock_model_id else "SageMaker endpoint"
    for hit in find_all(client, "register", "models", name):
        if hit.get("model_group_id") == group_id and hit.get("model_state") not in ("REGISTER_FAILED",):
            log.info("register: adopted %s model %s (%s)", kind, hit["id"], hit.get("model_state"))
            return str(hit["id"])
    _, body = client.call("register", "POST", "/_plugins/_ml/models/_register", {
        "name": name, "function_name": "remote", "model_group_id": group_id,
        "connector_id": connector_id, "description": f"remote embedding model for {kind} texts ({provider})",
    })
    created.append("query_model" if kind == "query" else "model")
    model_id = body.get("model_id") or wait_task(client, "register", body["task_id"], timeout_s)["model_id"]
    log.info("register: %s model %s", kind, model_id)
    return str(model_id)


def model_state(client: OpenSearch, model_id: str) -> str:
    _, body = client.call("deploy", "GET", f"/_plugins/_ml/models/{model_id}")
    return str(body.get("model_state", "UNKNOWN"))


def request_deploy(client: OpenSearch, model_id: str) -> None:
    """Ask for deployment unless the model is deployed (or deploying) already."""
    if model_state(client, model_id) not in ("DEPLOYED", "DEPLOYING"):
        client.call("deploy", "POST", f"/_plugins/_ml/models/{model_id}/_deploy")
        log.info("deploy: requested for %s", model_id)


def deployed(client: OpenSearch, model_id: str) -> bool:
    """True once deployed, False while deploying; a failed deployment raises."""
    state = model_state(client, model_id)
    if state == "DEPLOYED":
        return True
    if state in ("DEPLOY_FAILED", "UNDEPLOYED", "REGISTERED"):
        raise StepError("deploy", f"model {model_id} is {state}, not DEPLOYED")
    return False


def wait_deployed(client: OpenSearch, model_id: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not deployed(client, model_id):
        if time.monotonic() > deadline:
            raise StepError("deploy", f"model {model_id} not DEPLOYED after {timeout_s:.0f} s")
        time.sleep(POLL_S)


def undeploy(client: OpenSearch, model_id: str, timeout_s: float = 30) -> None:
    """Undeploy and wait until the model no longer reads deployed (the answer comes first)."""
    status, _ = client.call("undeploy", "POST", f"/_plugins/_ml/models/{model_id}/_undeploy", ok=(404,))
    if status == 404:
        return
    deadline = time.monotonic() + timeout_s
    while model_state(client, model_id) in ("DEPLOYED", "DEPLOYING", "PARTIALLY_DEPLOYED"):
        if time.monotonic() > deadline:
            raise StepError("undeploy", f"model {model_id} still deployed {timeout_s:.0f} s after _undeploy")
        time.sleep(POLL_S)
    log.info("undeploy: %s", model_id)


# ---------------------------------------------------------------------------------------
# Smoke test, pipelines, index, alias


class EndpointAsleep(StepError):
    """The endpoint's inference component has 0 copies: scaled to zero, not broken."""


def scaled_to_zero(props: GlueProperties, error: StepError) -> bool:
    """True when ``error`` is SageMaker's answer for an inference component with no copies.

    Only an endpoint that hosts its model as an inference component can say so; for any
    other endpoint the same words would be a real fault, and stay one.
    """
    return bool(props.inference_component) and error.status == 400 and NO_CAPACITY in json.dumps(error.body)


def embed(client: OpenSearch, model_id: str, texts: list[str], *, step: str = "predict",
          connector_hint: str = "", attempts: int = 4, props: GlueProperties | None = None) -> list[list[float]]:
    """The model's vectors for ``texts`` through the connector (what ingest will do).

    A 5xx is retried with backoff (1, 2, 4 s): right after a node restart ml-commons may
    time out fetching its master key, and a waking endpoint may refuse a first call.
    With ``props``, an inference component with 0 copies raises EndpointAsleep.
    """
    for attempt in range(1, attempts + 1):
        try:
            _, body = client.call(step, "POST", f"/_plugins/_ml/models/{model_id}/_predict",
                                  {"parameters": predict_parameters(props, texts)})
            break
        except StepError as e:
            if props is not None and scaled_to_zero(props, e):
                raise EndpointAsleep(step, f"inference component {props.inference_component} has 0 copies "
                                           f"(scaled to zero): {e.detail[:500]}", e.status, e.body) from e
            if 500 <= e.status < 600 and attempt < attempts:
                log.warning("%s: attempt %d failed (%s); retrying", step, attempt, e.detail[:300])
                time.sleep(2 ** (attempt - 1))
                continue
            raise StepError(step, f"{e.detail} (through connector {connector_hint}: is the endpoint up and "
                                  f"answering?)", e.status, e.body) from e
    outputs = body["inference_results"][0]["output"]
    return [list(o["data"]) for o in outputs]


def predict_parameters(props: GlueProperties | None, texts: list[str]) -> dict[str, Any]:
    """What _predict fills the connector's request body with (no pre_process runs on it): the
    texts where the template takes them (a Bedrock model's inputText or texts, else input)."""
    if props is not None and props.flavor == "bedrock":
        return bedrock.predict_parameters(props.bedrock_model_id, texts)
    return {"input": texts}


class DimensionMismatch(StepError):
    """The endpoint answers, with vectors of another length than Dimension."""


def check_dimension(props: GlueProperties, vector: list[float], step: str, consequence: str) -> None:
    if len(vector) != props.dimension:
        raise DimensionMismatch(step, f"dimension mismatch: expected {props.dimension} (Dimension), the endpoint "
                              f"returned {len(vector)}; {consequence}")


def smoke_test(client: OpenSearch, props: GlueProperties, model_id: str, connector_hint: str) -> bool:
    """One real embedding: its length must equal Dimension before any index is built on it.

    Returns False, having checked nothing, when the endpoint's inference component is
    scaled to zero (a night-time deploy): the index is then built on Dimension, which the
    stack takes from the model catalog, and the watchdog makes the same check on its first
    run after the component wakes.
    """
    try:
        (vector,) = embed(client, model_id, [SMOKE_TEXT], connector_hint=connector_hint, props=props)
    except EndpointAsleep as e:
        log.warning("predict: smoke test skipped: %s. The index is built for Dimension %d unchecked; the "
                    "watchdog checks it once the component has a copy", e.detail, props.dimension)
        return False
    check_dimension(props, vector, "predict", "no index was created")
    log.info("predict: %d dimensions, as expected", len(vector))
    return True


def ensure_ingest_pipeline(client: OpenSearch, props: GlueProperties, names: Names, model_id: str,
                           created: list[str]) -> None:
    status, _ = client.call("ingest_pipeline", "GET", f"/_ingest/pipeline/{names.ingest_pipeline}", ok=(404,))
    if status == 404:
        created.append("ingest_pipeline")
    # PUT replaces the whole pipeline: the same call creates it and applies a new batch size.
    client.call("ingest_pipeline", "PUT", f"/_ingest/pipeline/{names.ingest_pipeline}", {
        "description": f"embed {props.text_field} into {props.embedding_field} with model {model_id}",
        "processors": [{"text_embedding": {
            "model_id": model_id,
            "field_map": {props.text_field: props.embedding_field},
            "batch_size": props.ingest_batch_size,
        }}],
    })


def index_body(props: GlueProperties, names: Names) -> dict[str, Any]:
    return {
        "settings": {"index": {
            "knn": True,
            "default_pipeline": names.ingest_pipeline,
            # Queries name no model: this pipeline's enricher supplies the index's query model.
            "search": {"default_pipeline": names.search_pipeline},
            "number_of_shards": props.number_of_shards,
            "number_of_replicas": props.number_of_replicas,
        }},
        "mappings": {"properties": {
            props.text_field: {"type": "text"},
            props.embedding_field: {
                "type": "knn_vector",
                "dimension": props.dimension,
                "method": {"name": "hnsw", "engine": props.knn_engine, "space_type": props.space_type,
                           "parameters": {"m": props.hnsw_m, "ef_construction": props.hnsw_ef_construction}},
            },
        }},
    }


def ensure_index(client: OpenSearch, props: GlueProperties, names: Names, created: list[str]) -> None:
    status, _ = client.call("index", "HEAD", f"/{names.index}", ok=(404,))
    if status == 404:
        client.call("index", "PUT", f"/{names.index}", index_body(props, names))
        created.append("index")
        log.info("index: created %s", names.index)
    else:
        # Replicas are the one index setting an in-place Update may change; the search
        # pipeline is set too, for an index made before it had one.
        client.call("index", "PUT", f"/{names.index}/_settings", {"index": {
            "number_of_replicas": props.number_of_replicas, "search": {"default_pipeline": names.search_pipeline}}})
        log.info("index: adopted %s", names.index)


def point_alias(client: OpenSearch, names: Names) -> None:
    """Move the alias to this index in one atomic action (searches never see no index)."""
    status, body = client.call("alias", "GET", f"/_alias/{names.alias}", ok=(404,))
    holders = list(body) if status == 200 else []
    if holders == [names.index]:
        return
    actions: list[dict[str, Any]] = [{"remove": {"index": i, "alias": names.alias}} for i in holders if i != names.index]
    actions.append({"add": {"index": names.index, "alias": names.alias}})
    client.call("alias", "POST", "/_aliases", {"actions": actions})
    log.info("alias: %s -> %s (was %s)", names.alias, names.index, holders or "unset")


def search_pipeline_body(props: GlueProperties, query_model_id: str) -> dict[str, Any]:
    """The index's default search pipeline: neural queries without a model id get the query
    model; with HybridSearch, hybrid queries get min-max normalized scores too."""
    body: dict[str, Any] = {
        "description": f"neural queries embedded by model {query_model_id}"
                       + ("; hybrid: min-max normalized keyword and neural scores" if props.hybrid_search else ""),
        "request_processors": [{"neural_query_enricher": {"default_model_id": query_model_id}}],
    }
    if props.hybrid_search:
        body["phase_results_processors"] = [{"normalization-processor": {
            "normalization": {"technique": "min_max"},
            "combination": {"technique": "arithmetic_mean", "parameters": {"weights": HYBRID_WEIGHTS}},
        }}]
    return body


def ensure_search_pipeline(client: OpenSearch, props: GlueProperties, names: Names, query_model_id: str,
                           created: list[str]) -> str:
    """The search pipeline (PUT replaces it whole: HybridSearch is updated in place)."""
    path = f"/_search/pipeline/{names.search_pipeline}"
    status, _ = client.call("search_pipeline", "GET", path, ok=(404,))
    if status == 404:
        created.append("search_pipeline")
    client.call("search_pipeline", "PUT", path, search_pipeline_body(props, query_model_id))
    return names.search_pipeline


# ---------------------------------------------------------------------------------------
# Teardown


def _hand_alias_back(client: OpenSearch, names: Names) -> None:
    """Before deleting an index that holds the alias, give the alias to the newest sibling.

    A replacement moves the alias to the new index; if the stack then rolls back, the new
    resource is deleted and the old one must serve again.
    """
    if not names.alias:
        return
    status, body = client.call("delete_index", "GET", f"/_alias/{names.alias}", ok=(404,))
    if status == 404 or names.index not in body:
        return
    prefix = names.physical_id.rsplit("-", 1)[0]
    status, indices = client.call("delete_index", "GET", f"/{prefix}-*/_settings/index.creation_date", ok=(404,))
    siblings = sorted((int(s["settings"]["index"]["creation_date"]), name) for name, s in (indices or {}).items()
                      if names.family.match(name) and name != names.index)
    if siblings:
        newest = siblings[-1][1]
        client.call("delete_index", "POST", "/_aliases", {"actions": [
            {"remove": {"index": names.index, "alias": names.alias}},
            {"add": {"index": newest, "alias": names.alias}}]})
        log.info("alias: %s handed back to %s", names.alias, newest)


def teardown(client: OpenSearch, names: Names, only: set[str] | frozenset[str] = frozenset(KINDS)) -> None:
    """Remove the objects of this physical id (the kinds in ``only``) in dependency order;
    404 counts as done.

    A connector or model group that ml-commons refuses to delete (409: models still use it)
    does not stop the rest: every other object goes, then StepError names what stays and the
    models that hold it (``_delete_in_use``).
    """
    if "index" in only:
        _hand_alias_back(client, names)
        client.call("delete_index", "DELETE", f"/{names.index}", ok=(404,))
    if "ingest_pipeline" in only:
        client.call("delete_ingest_pipeline", "DELETE", f"/_ingest/pipeline/{names.ingest_pipeline}", ok=(404,))
    # After the index: a search pipeline an index names as its default cannot go first.
    if "search_pipeline" in only:
        for pipeline in (names.search_pipeline, names.legacy_search_pipeline):
            client.call("delete_search_pipeline", "DELETE", f"/_search/pipeline/{pipeline}", ok=(404,))
    for kind in ("query_model", "model"):
        if kind in only:
            for model in find_all(client, "delete_model", "models", names.model_for(kind.removesuffix("_model"))):
                undeploy(client, model["id"])
                _delete_model(client, model["id"])
    kept: list[str] = []
    for kind in ("query_connector", "connector"):
        if kind in only:
            text_kind = kind.removesuffix("_connector")
            for connector in find_all(client, "delete_connector", "connectors", names.connector_for(text_kind)):
                kept += _delete_in_use(client, "delete_connector", "connector", connector["id"], "connector_id",
                                       ours={names.model_for(text_kind)})
    if "model_group" in only:
        for group in find_all(client, "delete_model_group", "model_groups", names.model_group):
            kept += _delete_in_use(client, "delete_model_group", "model_group", group["id"], "model_group_id",
                                   ours={names.model_for(kind) for kind in TEXT_KINDS})
    if "search_role" in only:
        _delete_role(client, names.search_role)
    if "loader_role" in only:
        _delete_role(client, names.loader_role)
    if kept:
        raise StepError("teardown", f"{names.physical_id}: everything else removed, but " + "; ".join(kept), 409)
    log.info("teardown: %s removed (%s)", names.physical_id, ", ".join(k for k in KINDS if k in only))


# A delete that ml-commons refuses while our models use the object is tried this many times,
# each retry after removing the models it named: progress, never a wait.
DELETE_ATTEMPTS = 3
# ml-commons 2.19's 409 for a connector: "<n> models are still using this connector, please
# delete or update the models first: [<id>, <id>]" (the ids of its search's first 10 hits).
LISTED_MODELS = re.compile(r"models are still using this connector[^\[]*\[([^\]]*)\]")
# A model group's 409 names no models: "Cannot delete the model group when it has associated model versions".


def _delete_in_use(client: OpenSearch, step: str, kind: str, object_id: str, field: str,
                   ours: set[str]) -> list[str]:
    """Delete a connector or model group; [] once gone, else one line on why it stays.

    ml-commons answers 409 while its model index holds models it counts as users: models
    whose ``field`` matches the id. Ours (``field`` exactly this id and one of our names: a
    model the name search missed, or one registered since) are undeployed and deleted, then
    the delete is tried again. Any other model is never touched: one another stack registered
    on our object, or, for a connector, one that only ml-commons counts: it finds users with
    a match query on connector_id, a text field, where an id is the words between its '-', so
    a model on any connector whose id shares one of those words with ours holds ours too.
    """
    path = f"/_plugins/_ml/{kind}s/{object_id}"
    for attempt in range(1, DELETE_ATTEMPTS + 1):
        status, refusal = client.call(step, "DELETE", path, ok=(404, 409))
        if status != 409:
            return []
        users = _models_matching(client, step, field, object_id)
        mine = [m for m in users if m.get(field) == object_id and m.get("name") in ours]
        if not any(m.get(field) == object_id for m in users):
            # Only models on other objects hold it (ml-commons' text match): nothing uses it, and
            # nothing of ours is in it. Left behind, empty, rather than failing the Delete over
            # another stack's model; a later Create of the same stack adopts it.
            log.warning("%s: ml-commons still counts models of other %ss as users of %s %s (%s); "
                        "left behind, empty", step, kind, kind, object_id, ", ".join(m["id"] for m in users))
            return []
        if not mine or attempt == DELETE_ATTEMPTS:
            break
        for model in mine:
            log.warning("%s: model %s (%s) still uses %s %s; removing it first", step, model["id"],
                        model.get("name"), kind, object_id)
            undeploy(client, model["id"])
            _delete_model(client, model["id"])
    return [_still_used(client, step, kind, object_id, field, ours, refusal, users)]


def _models_matching(client: OpenSearch, step: str, field: str, value: str) -> list[dict[str, Any]]:
    """The models ml-commons' own check finds: a match query on ``field`` (exact for a keyword field)."""
    query = {"size": 1000, "query": {"match": {field: value}}}
    status, body = client.call(step, "POST", "/_plugins/_ml/models/_search", query, ok=(404,))
    if status == 404:
        return []
    return [{"id": hit["_id"], **hit["_source"]} for hit in body["hits"]["hits"]]


def _still_used(client: OpenSearch, step: str, kind: str, object_id: str, field: str, ours: set[str],
                refusal: Any, users: list[dict[str, Any]]) -> str:
    """Why ``object_id`` stays: each model ml-commons counts, and whose it is."""
    reason = json.dumps(refusal)
    listed = LISTED_MODELS.search(reason)
    found = {m["id"]: m for m in users}
    ids = [i.strip() for i in listed.group(1).split(",") if i.strip()] if listed else list(found)
    parts = []
    for model_id in ids:
        model = found.get(model_id)
        if model is None:
            status, body = client.call(step, "GET", f"/_plugins/_ml/models/{model_id}", ok=(403, 404))
            model = body if status == 200 else None
        if model is None:
            parts.append(f"{model_id} ({'gone since' if status == 404 else 'not readable by the glue'})")
        elif model.get(field) != object_id:
            parts.append(f"{model_id} ({model.get('name')}, on {kind} {model.get(field)}: another {kind} whose id "
                         f"shares a '-'-separated word with {object_id}; ml-commons matches {field} as text)")
        elif model.get("name") not in ours:
            parts.append(f"{model_id} ({model.get('name')}: not ours, never deleted here)")
        else:
            parts.append(f"{model_id} ({model.get('name')}: ours, still there after {DELETE_ATTEMPTS} deletes)")
    held = ", ".join(parts) or f"none found ({reason[:300]})"
    return (f"{kind} {object_id} not deleted: ml-commons counts models as still using it: {held}. "
            f"Once they are gone, DELETE /_plugins/_ml/{kind}s/{object_id} (or this Delete again) removes it")


def _delete_model(client: OpenSearch, model_id: str) -> None:
    client.call("delete_model", "DELETE", f"/_plugins/_ml/models/{model_id}", ok=(404,))
