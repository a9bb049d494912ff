"""The custom resource's properties: one typed definition, read by everyone who handles them.

``GlueProperties`` is the contract. Each field carries, in its metadata, the CloudFormation
property name, its default and constraints and what it means; from that one definition

- the CDK construct (stacks/components/neural_search_glue.py) and ``semsearch local up``
  build the properties they send (``to_properties``: what the caller set, nothing else),
- ``parse`` validates and coerces what the Lambda receives (CloudFormation stringifies
  every value: "384", "true"), reporting every bad field in one error, and
- ``reference()`` renders the table of the package docstring.

Dependency-free (standard library only): the stacks and the CLI import it without boto3.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
import textwrap
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any, Literal, get_type_hints

from endpoint_request import bedrock

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
# The physical id is the Name plus a hash of what defines the objects (see identity()).
PHYSICAL_ID_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}-[0-9a-f]{10}$")
#: tei and custom: a SageMaker endpoint; bedrock: a model of Amazon Bedrock (BedrockModelId).
FLAVORS = ("tei", "custom", "bedrock")
AUTH_MODES = ("sigv4", "basic", "none")
KNN_ENGINES = ("lucene", "faiss", "nmslib")
NATIVE_ENGINES = ("faiss", "nmslib")
SPACE_TYPES = ("l2", "cosinesimil", "innerproduct")
# Sent by CloudFormation (or CDK) beside the resource's own properties.
CLOUDFORMATION_KEYS = {"ServiceToken", "ServiceTimeout"}
BACKOFF_POLICIES = ("constant", "exponential_equal_jitter", "exponential_full_jitter")
# SageMaker cuts a real-time invocation at 60 s: a longer read timeout would only wait on
# an answer that can no longer come.
SAGEMAKER_LIMIT_S = 60
# Connections per endpoint instance: enough to keep one instance's workers busy, few
# enough that a single instance is not pushed into throttling.
CONNECTIONS_PER_INSTANCE = 16
MAX_CONNECTIONS = 256
_SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PropertyError(ValueError):
    """One message naming every bad property."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid properties: " + "; ".join(problems))


@dataclass(frozen=True)
class Property:
    """How one field of GlueProperties travels as a custom-resource property."""

    name: str  # the CloudFormation property name
    doc: str
    default: Any = None  # for fields the caller may leave out
    choices: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    hint: str = ""  # said instead of the pattern when a value does not match it
    low: int = 0
    high: int = 10**9


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


#: The dataclass default of every optional field: ``__post_init__`` replaces it with the
#: field's default and remembers that the caller did not set it (``to_properties``).
UNSET: Any = _Unset()


def prop(name: str, doc: str, **spec: Any) -> dict[str, Property]:
    return {"property": Property(name, doc, **spec)}


@dataclass(frozen=True, kw_only=True)
class GlueProperties:
    """What the glue provisions, and on which domain. Fields without a default are required.

    Declaration order is the order ``to_properties`` emits (and so the synthesized template).
    """

    # How the glue reaches the domain.
    opensearch_url: str = field(metadata=prop(
        "OpenSearchUrl", "https://<domain endpoint>, no path", pattern=re.compile(r"^https?://[^/\s]+/?$"),
        hint="expected http(s)://host[:port] with no path"))
    auth_mode: Literal["sigv4", "basic", "none"] = field(default=UNSET, metadata=prop(
        "AuthMode", 'sigv4 signs as the Lambda\'s role (service "es"); basic sends Username and Password '
        "(local nodes); none: a node without the security plugin", default="sigv4", choices=AUTH_MODES))
    # The connector signs its calls for this region, locally too (the endpoint checks it).
    region: str = field(metadata=prop(
        "Region", "e.g. us-east-1; also signs the connector's calls", pattern=re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$"),
        hint="expected an AWS region such as us-east-1"))
    username: str = field(default=UNSET, metadata=prop("Username", "required with AuthMode basic", default=""))
    password: str = field(default=UNSET, repr=False, metadata=prop(
        "Password", "required with AuthMode basic", default=""))
    ca_file: str = field(default=UNSET, metadata=prop(
        "CaFile", "PEM to verify TLS with (a local node's demo CA)", default=""))
    role_mappings: dict[str, list[str]] = field(default=UNSET, metadata=prop(
        "RoleMappings", '{"<FGAC role>": ["<backend role / IAM ARN>", ...]}, merged into the existing '
        "mappings with PATCH; an Update removes what only the old properties mapped", default={}))
    # Backend roles (IAM role ARNs on AWS) given least-privilege FGAC roles the glue owns:
    # search = neural queries on the index; loader = bulk writes into it.
    loader_backend_roles: tuple[str, ...] = field(default=UNSET, metadata=prop(
        "LoaderBackendRoles", 'backend roles mapped to "<physical id>-loader": read the index mapping, '
        "bulk-write into the alias and its index (needs AuthMode sigv4 or basic)", default=()))
    search_backend_roles: tuple[str, ...] = field(default=UNSET, metadata=prop(
        "SearchBackendRoles", 'backend roles mapped to "<physical id>-search": search the alias and its index, '
        "ml-commons predict (a neural query embeds as the caller; needs AuthMode sigv4 or basic)", default=()))
    cluster_settings: dict[str, Any] = field(default=UNSET, metadata=prop(
        "ClusterSettings", "persistent cluster settings, applied first", default={}))
    # What the objects are.
    name: str = field(metadata=prop(
        "Name", "prefix of every object name", pattern=NAME_RE,
        hint="lowercase letters, digits and '-', starting with a letter, at most 40 characters"))
    flavor: Literal["tei", "custom", "bedrock"] = field(metadata=prop(
        "Flavor", "selects the connector request body: a SageMaker endpoint's (tei, custom) or a Bedrock "
        "model's (bedrock: BedrockModelId)", choices=FLAVORS))
    bedrock_model_id: str = field(default=UNSET, metadata=prop(
        "BedrockModelId", "with Flavor bedrock: the Bedrock model the connector invokes (its InvokeModel URL "
        "follows from Region; EndpointUrl: a stand-in's)", default="", choices=tuple(bedrock.MODELS)))
    bedrock_normalize: bool = field(default=UNSET, metadata=prop(
        "BedrockNormalize", "with a Bedrock model that offers it (Titan v2): ask for unit-length vectors",
        default=True))
    endpoint_name: str = field(default=UNSET, metadata=prop(
        "EndpointName", "SageMaker endpoint (the invocation URL follows from Region); this or EndpointUrl",
        default="", pattern=_SAGEMAKER_NAME, hint="expected a SageMaker endpoint name"))
    endpoint_url: str = field(default=UNSET, metadata=prop(
        "EndpointUrl", "explicit invocation URL (a local endpoint); wins over EndpointName", default="",
        pattern=re.compile(r"^https?://\S+$"), hint="expected an http(s) URL"))
    dimension: int = field(metadata=prop(
        "Dimension", "must equal the embedding length the endpoint returns", low=1, high=16000))
    connector_role_arn: str = field(default=UNSET, metadata=prop(
        "ConnectorRoleArn", "credential.roleArn: the role ml-commons assumes to invoke the endpoint; "
        "this or both connector keys", default="", pattern=re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$"),
        hint="expected an IAM role ARN"))
    connector_access_key: str = field(default=UNSET, metadata=prop(
        "ConnectorAccessKey", "with ConnectorSecretKey: the keys a self-managed node signs with "
        "(the local endpoint verifies them)", default=""))
    connector_secret_key: str = field(default=UNSET, repr=False, metadata=prop(
        "ConnectorSecretKey", "see ConnectorAccessKey", default=""))
    endpoint_instance_count: int = field(default=UNSET, metadata=prop(
        "EndpointInstanceCount", f"client_config.max_connection = {CONNECTIONS_PER_INSTANCE} per instance "
        f"(at most {MAX_CONNECTIONS})", default=1, low=1, high=100))
    read_timeout_s: int = field(default=UNSET, metadata=prop(
        "ReadTimeoutSeconds", f"SageMaker's limit is {SAGEMAKER_LIMIT_S} s", default=30, low=1,
        high=SAGEMAKER_LIMIT_S - 1))
    connection_timeout_s: int = field(default=UNSET, metadata=prop(
        "ConnectionTimeoutSeconds", "", default=5, low=1, high=SAGEMAKER_LIMIT_S - 1))
    max_retry_times: int = field(default=UNSET, metadata=prop(
        "MaxRetryTimes", "retries on throttling", default=3, low=0, high=10))
    retry_backoff_policy: str = field(default=UNSET, metadata=prop(
        "RetryBackoffPolicy", "", default="exponential_full_jitter", choices=BACKOFF_POLICIES))
    retry_backoff_millis: int = field(default=UNSET, metadata=prop(
        "RetryBackoffMillis", "", default=200, low=1, high=10_000))
    index_name: str = field(metadata=prop(
        "IndexName", "an alias; the index behind it is <physical id>",
        pattern=re.compile(r"^[a-z0-9][a-z0-9_-]{0,200}$"), hint="lowercase letters, digits, '-' and '_'"))
    text_field: str = field(default=UNSET, metadata=prop(
        "TextField", "", default="text", pattern=_FIELD_NAME))
    embedding_field: str = field(default=UNSET, metadata=prop(
        "EmbeddingField", "must differ from TextField", default="embedding", pattern=_FIELD_NAME))
    knn_engine: str = field(default=UNSET, metadata=prop(
        "KnnEngine", "faiss and nmslib only with AuthMode sigv4 (a self-managed node from Maven Central "
        "lacks them)", default="lucene", choices=KNN_ENGINES))
    hnsw_m: int = field(default=UNSET, metadata=prop("HnswM", "", default=16, low=2, high=100))
    hnsw_ef_construction: int = field(default=UNSET, metadata=prop(
        "HnswEfConstruction", "", default=128, low=2, high=4096))
    space_type: str = field(metadata=prop("SpaceType", "", choices=SPACE_TYPES))
    number_of_shards: int = field(default=UNSET, metadata=prop(
        "NumberOfShards", "", default=1, low=1, high=1024))
    number_of_replicas: int = field(default=UNSET, metadata=prop(
        "NumberOfReplicas", "updated in place", default=1, low=0, high=15))
    ingest_batch_size: int = field(default=UNSET, metadata=prop(
        "IngestBatchSize", "text_embedding batch_size (texts per endpoint call)", default=32, low=1, high=512))
    hybrid_search: bool = field(default=UNSET, metadata=prop(
        "HybridSearch", "adds a normalization-processor to the index's search pipeline", default=False))
    # The catalog's prompts (stacks/catalog.py). When they differ the model is asymmetric:
    # ml-commons gets a passage model (ingest) and a query model (neural queries), each
    # connector adding its own prompt; otherwise one model serves both.
    query_prefix: str = field(default=UNSET, metadata=prop(
        "QueryPrefix", 'prepended to query texts (e5: "query: "); tei: by the query connector, custom: the '
        "handler's own (the connector names the kind)", default=""))
    passage_prefix: str = field(default=UNSET, metadata=prop(
        "PassagePrefix", 'prepended to ingested texts (e5: "passage: "), as QueryPrefix', default=""))
    # An endpoint that scales to zero hosts its model as an inference component, which
    # every invocation must name (header X-Amzn-SageMaker-Inference-Component).
    inference_component: str = field(default=UNSET, metadata=prop(
        "InferenceComponentName", "the endpoint hosts the model as this inference component (scale-to-zero "
        "endpoints); while it has 0 copies the smoke test is skipped and the watchdog reports the endpoint "
        '"asleep"', default="", pattern=_SAGEMAKER_NAME, hint="expected a SageMaker inference component name"))
    # A model change re-embeds into a new index and retires the old one (search_glue.reembed):
    # kept, read-only, this long so a rollback or a restore still has it; 72 h spans a weekend.
    retired_index_retention_hours: int = field(default=UNSET, metadata=prop(
        "RetiredIndexHours", "an index retired by a model change is kept this long, then the watchdog "
        "deletes it (never one holding the live alias, with more documents than the live index, or with writes "
        "copied nowhere else); updated in place", default=72, low=0, high=8760))
    #: The properties the caller set (the others took their defaults).
    set_by_caller: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        given = set()
        for f, spec in contract():
            if getattr(self, f.name) is UNSET:
                object.__setattr__(self, f.name, copy.deepcopy(spec.default))
            else:
                given.add(f.name)
        object.__setattr__(self, "set_by_caller", frozenset(given))

    def to_properties(self) -> dict[str, Any]:
        """The custom resource's properties: each one the caller set, by its CloudFormation name.

        Empty strings, lists and objects are left out: the parser reads them as absent. Values
        stay native (tokens included); JSON-valued ones are dicts and lists, for the caller to
        serialize the way its transport needs.
        """
        out: dict[str, Any] = {}
        for f, spec in contract():
            value = getattr(self, f.name)
            if f.name not in self.set_by_caller or (isinstance(value, (str, tuple, list, dict)) and not value):
                continue
            out[spec.name] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def self_managed(self) -> bool:
        """Not Amazon OpenSearch Service: no SigV4 to the domain, no native k-NN engines."""
        return self.auth_mode != "sigv4"

    @property
    def asymmetric(self) -> bool:
        """Queries and passages are embedded differently: two ml-commons models, one per kind
        (a Bedrock model that takes an input type: Cohere's search_query / search_document)."""
        if self.flavor == "bedrock" and bedrock.MODELS[self.bedrock_model_id].family == bedrock.COHERE_V3:
            return True
        return self.query_prefix != self.passage_prefix

    @property
    def bedrock_normalize_sent(self) -> bool | None:
        """Titan v2's ``normalize`` as the connector sends it; None for a model without the option."""
        return self.bedrock_normalize if bedrock.MODELS[self.bedrock_model_id].normalize_option else None

    @property
    def invocation_url(self) -> str:
        if self.endpoint_url:
            return self.endpoint_url
        if self.flavor == "bedrock":
            return bedrock.invoke_url(self.bedrock_model_id, self.region)
        return f"https://runtime.sagemaker.{self.region}.amazonaws.com/endpoints/{self.endpoint_name}/invocations"

    def identity(self) -> dict[str, Any]:
        """What defines the objects: a change here means new objects under a new physical id.

        Left out, and updated in place: how the glue connects (auth, CA file), role mappings,
        cluster settings, the connector's client_config and credentials, replicas, the
        ingest batch size and the hybrid search pipeline.
        """
        return {
            "opensearch_url": self.opensearch_url, "name": self.name, "flavor": self.flavor,
            "invocation_url": self.invocation_url, "region": self.region, "dimension": self.dimension,
            # Only when set, so the ids of endpoints without a component stay as they were.
            **({"inference_component": self.inference_component} if self.inference_component else {}),
            **({"bedrock_model_id": self.bedrock_model_id, "bedrock_normalize": self.bedrock_normalize_sent}
               if self.flavor == "bedrock" else {}),
            # A prefix changes every vector; only when set, as above.
            **({"query_prefix": self.query_prefix} if self.query_prefix else {}),
            **({"passage_prefix": self.passage_prefix} if self.passage_prefix else {}),
            "index_name": self.index_name, "text_field": self.text_field,
            "embedding_field": self.embedding_field, "knn_engine": self.knn_engine,
            "space_type": self.space_type, "hnsw_m": self.hnsw_m,
            "hnsw_ef_construction": self.hnsw_ef_construction, "number_of_shards": self.number_of_shards,
        }

    @property
    def physical_id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()
        return f"{self.name}-{digest[:10]}"

    def client_config(self) -> dict[str, Any]:
        return {
            "max_connection": min(CONNECTIONS_PER_INSTANCE * self.endpoint_instance_count, MAX_CONNECTIONS),
            "connection_timeout": self.connection_timeout_s,
            "read_timeout": self.read_timeout_s,
            "max_retry_times": self.max_retry_times,
            "retry_backoff_policy": self.retry_backoff_policy,
            "retry_backoff_millis": self.retry_backoff_millis,
        }

    def credential(self) -> dict[str, str]:
        if self.connector_role_arn:
            return {"roleArn": self.connector_role_arn}
        return {"access_key": self.connector_access_key, "secret_key": self.connector_secret_key}

    def updatable_connector_part(self) -> dict[str, Any]:
        """The connector fields an Update changes in place (undeploy, update, redeploy)."""
        return {"client_config": self.client_config(), "credential": self.credential()}

    def safe_dict(self) -> dict[str, Any]:
        """For logs: secrets masked."""
        d = asdict(self)
        d.pop("set_by_caller")
        for key in ("password", "connector_secret_key"):
            if d[key]:
                d[key] = "***"
        return d


class _Reader:
    """Reads one property at a time, recording problems instead of stopping at the first."""

    def __init__(self, raw: dict[str, Any]):
        self.problems: list[str] = []
        self.raw = raw
        self.read: set[str] = set()

    def _get(self, key: str, required: bool) -> Any:
        self.read.add(key)
        value = self.raw.get(key)
        if value is None or value == "":
            if required:
                self.problems.append(f"{key}: required")
            return None
        return value

    def text(self, key: str, *, default: str = "", required: bool = False, choices: tuple[str, ...] = (),
            pattern: re.Pattern[str] | None = None, hint: str = "") -> str:
        value = self._get(key, required)
        if value is None:
            return default
        if not isinstance(value, str):
            self.problems.append(f"{key}: expected a string, got {type(value).__name__}")
            return default
        if choices and value not in choices:
            self.problems.append(f"{key}: bad value {value!r}; allowed: {', '.join(choices)}")
        if pattern and not pattern.match(value):
            self.problems.append(f"{key}: bad value {value!r}; {hint or 'must match ' + pattern.pattern}")
        return value

    def integer(self, key: str, *, default: int = 0, required: bool = False, low: int = 0, high: int = 10**9) -> int:
        value = self._get(key, required)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            self.problems.append(f"{key}: expected an integer, got {type(value).__name__}")
            return default
        try:
            number = int(value.strip()) if isinstance(value, str) else value
        except ValueError:
            self.problems.append(f"{key}: expected an integer, got {value!r}")
            return default
        if not low <= number <= high:
            self.problems.append(f"{key}: {number} is out of range [{low}, {high}]")
        return number

    def flag(self, key: str, *, default: bool = False) -> bool:
        value = self._get(key, False)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.problems.append(f"{key}: expected true or false, got {value!r}")
        return default

    def _json(self, key: str) -> Any:
        """A value given as itself (direct invocation) or as its JSON text (CloudFormation);
        UNSET when absent or not valid JSON."""
        value = self._get(key, False)
        if value is None:
            return UNSET
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as e:
                self.problems.append(f"{key}: not valid JSON ({e})")
                return UNSET
        return value

    def json_object(self, key: str) -> dict[str, Any]:
        value = self._json(key)
        if value is UNSET:
            return {}
        if not isinstance(value, dict):
            self.problems.append(f"{key}: expected a JSON object, got {type(value).__name__}")
            return {}
        return value

    def json_list(self, key: str) -> tuple[str, ...]:
        """A list of non-empty strings."""
        value = self._json(key)
        if value is UNSET:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problems.append(f"{key}: expected a list of backend role names (IAM role ARNs)")
            return ()
        return tuple(dict.fromkeys(value))


def contract() -> list[tuple[Field[Any], Property]]:
    """Each field of GlueProperties with its property, in declaration order."""
    return [(f, f.metadata["property"]) for f in fields(GlueProperties) if "property" in f.metadata]


def _kind(annotation: Any) -> str:
    """How a field's value travels: its Python type decides."""
    origin = getattr(annotation, "__origin__", annotation)
    if origin is bool:
        return "bool"
    if origin is int:
        return "int"
    if origin is dict:
        return "JSON object"
    if origin is tuple:
        return "JSON list"
    return "str"  # str and Literal[...] of str


@functools.cache
def _kinds() -> dict[str, str]:
    hints = get_type_hints(GlueProperties)
    return {f.name: _kind(hints[f.name]) for f, _ in contract()}


def _read(r: _Reader, f: Field[Any], spec: Property, kind: str) -> Any:
    required = f.default is MISSING
    if kind == "bool":
        return r.flag(spec.name, default=spec.default)
    if kind == "int":
        return r.integer(spec.name, default=spec.default or 0, required=required, low=spec.low, high=spec.high)
    if kind == "JSON object":
        return r.json_object(spec.name)
    if kind == "JSON list":
        return r.json_list(spec.name)
    return r.text(spec.name, default=spec.default or "", required=required, choices=spec.choices,
                  pattern=spec.pattern, hint=spec.hint)


def parse(raw: Any) -> GlueProperties:
    """Validated, typed properties, or PropertyError naming every bad field."""
    if not isinstance(raw, dict):
        raise PropertyError([f"ResourceProperties: expected an object, got {type(raw).__name__}"])
    r = _Reader(raw)
    kinds = _kinds()
    values = {f.name: _read(r, f, spec, kinds[f.name]) for f, spec in contract()}
    v = values
    # What one field cannot say alone.
    if v["auth_mode"] == "sigv4" and v["opensearch_url"].startswith("http://"):
        r.problems.append("OpenSearchUrl: SigV4 (AuthMode sigv4) needs an https:// domain endpoint")
    v["opensearch_url"] = v["opensearch_url"].rstrip("/")
    if v["auth_mode"] == "basic":
        r.problems.extend(f"{key}: required" for key in ("Username", "Password") if raw.get(key) in (None, ""))
    for role, backend_roles in v["role_mappings"].items():
        if not isinstance(backend_roles, list) or not all(isinstance(b, str) and b for b in backend_roles):
            r.problems.append(f"RoleMappings.{role}: expected a list of backend role names (IAM role ARNs)")
    if v["flavor"] == "bedrock":
        _check_bedrock(r, v)
    elif v["bedrock_model_id"]:
        r.problems.append(f"BedrockModelId: only with Flavor bedrock (Flavor is {v['flavor']!r})")
    elif not v["endpoint_name"] and not v["endpoint_url"]:
        r.problems.append("EndpointName: required (or EndpointUrl for an endpoint outside SageMaker)")
    keys = v["connector_access_key"], v["connector_secret_key"]
    if v["connector_role_arn"] and any(keys):
        r.problems.append("ConnectorRoleArn: give either a role ARN or an access key pair, not both")
    elif not v["connector_role_arn"] and not all(keys):
        r.problems.append("ConnectorRoleArn: required (or ConnectorAccessKey and ConnectorSecretKey "
                          "for an endpoint on a self-managed node)")
    if v["auth_mode"] != "sigv4" and v["knn_engine"] in NATIVE_ENGINES:
        r.problems.append(f"KnnEngine: {v['knn_engine']!r} needs the k-NN native libraries, which a self-managed "
                          "node built from Maven Central lacks (it would crash on the first document); use lucene")
    if v["auth_mode"] == "none":
        for key, given in (("SearchBackendRoles", v["search_backend_roles"]),
                           ("LoaderBackendRoles", v["loader_backend_roles"])):
            if given:
                r.problems.append(f"{key}: needs fine-grained access control (AuthMode sigv4 or basic); "
                                  "a node without security has no roles")
    if v["text_field"] == v["embedding_field"]:
        r.problems.append("EmbeddingField: must differ from TextField")
    # A misspelt property would otherwise fall back to its default without a word.
    for key in sorted(set(raw) - r.read - CLOUDFORMATION_KEYS):
        r.problems.append(f"{key}: unknown property")
    if r.problems:
        raise PropertyError(r.problems)
    return GlueProperties(**values)


def _check_bedrock(r: _Reader, v: dict[str, Any]) -> None:
    """A Bedrock connector: a known model, a dimension it offers, no SageMaker endpoint."""
    model_id = v["bedrock_model_id"]
    if not model_id:
        r.problems.append("BedrockModelId: required with Flavor bedrock")
        return
    if model_id not in bedrock.MODELS:
        return  # the choices check named it already
    try:
        bedrock.dimension_for(model_id, v["dimension"])
    except bedrock.BedrockModelError as e:
        r.problems.append(f"Dimension: {e}")
    for key, field_name in (("EndpointName", "endpoint_name"), ("InferenceComponentName", "inference_component"),
                            ("QueryPrefix", "query_prefix"), ("PassagePrefix", "passage_prefix")):
        if v[field_name]:
            r.problems.append(f"{key}: not with Flavor bedrock (the connector calls the Bedrock model itself)")


def reference() -> str:
    """The property table of the package docstring, from the field metadata."""
    kinds = _kinds()
    lines = []
    for f, spec in contract():
        if f.default is MISSING:
            default = "required"
        elif kinds[f.name].startswith("JSON"):
            default = json.dumps(spec.default)
        elif isinstance(spec.default, bool):
            default = str(spec.default).lower()
        else:
            default = json.dumps(spec.default)
        notes = [spec.doc] if spec.doc else []
        if spec.choices:
            notes.append("one of " + " | ".join(spec.choices))
        if kinds[f.name] == "int":
            notes.append(f"{spec.low}..{spec.high}")
        text = "; ".join(notes)
        head = f"  {spec.name:<25}{kinds[f.name]:<12}{default:<26}"
        lines.extend(textwrap.wrap(text, 110, initial_indent=head, subsequent_indent=" " * len(head))
                     or [head.rstrip()])
    return "\n".join(lines) + "\n"
