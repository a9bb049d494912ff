"""Resource properties: every one validated and coerced before any API call.

CloudFormation stringifies every property value ("384", "true"), so each field accepts
its string form as well as the native type. Every problem is collected and reported in one
error that names each bad field.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
# The physical id is the Name plus a hash of what defines the objects (see identity()).
PHYSICAL_ID_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}-[0-9a-f]{10}$")
FLAVORS = ("tei", "custom")
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


class PropertyError(ValueError):
    """One message naming every bad property."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid properties: " + "; ".join(problems))


@dataclass(frozen=True)
class GlueProperties:
    # How the glue reaches the domain.
    opensearch_url: str
    auth_mode: Literal["sigv4", "basic", "none"]
    region: str
    username: str
    password: str = field(repr=False)
    ca_file: str
    role_mappings: dict[str, list[str]]
    cluster_settings: dict[str, Any]
    # What the objects are.
    name: str
    flavor: Literal["tei", "custom"]
    endpoint_name: str
    endpoint_url: str
    dimension: int
    connector_role_arn: str
    connector_access_key: str
    connector_secret_key: str = field(repr=False)
    endpoint_instance_count: int
    read_timeout_s: int
    connection_timeout_s: int
    max_retry_times: int
    retry_backoff_policy: str
    retry_backoff_millis: int
    index_name: str
    text_field: str
    embedding_field: str
    knn_engine: str
    space_type: str
    hnsw_m: int
    hnsw_ef_construction: int
    number_of_shards: int
    number_of_replicas: int
    ingest_batch_size: int
    hybrid_search: bool
    # An endpoint that scales to zero hosts its model as an inference component, which
    # every invocation must name (header X-Amzn-SageMaker-Inference-Component).
    inference_component: str = ""
    # Backend roles (IAM role ARNs on AWS) given least-privilege FGAC roles the glue owns:
    # search = neural queries on the index; loader = bulk writes into it.
    search_backend_roles: tuple[str, ...] = ()
    loader_backend_roles: tuple[str, ...] = ()

    @property
    def self_managed(self) -> bool:
        """Not Amazon OpenSearch Service: no SigV4 to the domain, no native k-NN engines."""
        return self.auth_mode != "sigv4"

    @property
    def invocation_url(self) -> str:
        if self.endpoint_url:
            return self.endpoint_url
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

    def json_object(self, key: str) -> dict[str, Any]:
        """An object, given as one (direct invocation) or as its JSON text (CloudFormation)."""
        value = self._get(key, False)
        if value is None:
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as e:
                self.problems.append(f"{key}: not valid JSON ({e})")
                return {}
        if not isinstance(value, dict):
            self.problems.append(f"{key}: expected a JSON object, got {type(value).__name__}")
            return {}
        return value

    def json_list(self, key: str) -> tuple[str, ...]:
        """A list of non-empty strings, given as one or as its JSON text (CloudFormation)."""
        value = self._get(key, False)
        if value is None:
            return ()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as e:
                self.problems.append(f"{key}: not valid JSON ({e})")
                return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problems.append(f"{key}: expected a list of backend role names (IAM role ARNs)")
            return ()
        return tuple(dict.fromkeys(value))


def parse(raw: Any) -> GlueProperties:
    """Validated, typed properties, or PropertyError naming every bad field."""
    if not isinstance(raw, dict):
        raise PropertyError([f"ResourceProperties: expected an object, got {type(raw).__name__}"])
    r = _Reader(raw)
    auth_mode = r.text("AuthMode", default="sigv4", choices=AUTH_MODES)
    url = r.text("OpenSearchUrl", required=True, pattern=re.compile(r"^https?://[^/\s]+/?$"),
                hint="expected http(s)://host[:port] with no path")
    if auth_mode == "sigv4" and url.startswith("http://"):
        r.problems.append("OpenSearchUrl: SigV4 (AuthMode sigv4) needs an https:// domain endpoint")
    # The connector signs its calls for this region, locally too (the endpoint checks it).
    region = r.text("Region", required=True, pattern=re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$"),
                    hint="expected an AWS region such as us-east-1")
    username = r.text("Username", required=auth_mode == "basic")
    password = r.text("Password", required=auth_mode == "basic")

    mappings = r.json_object("RoleMappings")
    for role, backend_roles in mappings.items():
        if not isinstance(backend_roles, list) or not all(isinstance(b, str) and b for b in backend_roles):
            r.problems.append(f"RoleMappings.{role}: expected a list of backend role names (IAM role ARNs)")

    endpoint_name = r.text("EndpointName", pattern=re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"),
                          hint="expected a SageMaker endpoint name")
    endpoint_url = r.text("EndpointUrl", pattern=re.compile(r"^https?://\S+$"), hint="expected an http(s) URL")
    if not endpoint_name and not endpoint_url:
        r.problems.append("EndpointName: required (or EndpointUrl for an endpoint outside SageMaker)")

    role_arn = r.text("ConnectorRoleArn", pattern=re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$"),
                     hint="expected an IAM role ARN")
    access_key = r.text("ConnectorAccessKey")
    secret_key = r.text("ConnectorSecretKey")
    if role_arn and (access_key or secret_key):
        r.problems.append("ConnectorRoleArn: give either a role ARN or an access key pair, not both")
    elif not role_arn and not (access_key and secret_key):
        r.problems.append("ConnectorRoleArn: required (or ConnectorAccessKey and ConnectorSecretKey "
                          "for an endpoint on a self-managed node)")

    knn_engine = r.text("KnnEngine", default="lucene", choices=KNN_ENGINES)
    if auth_mode != "sigv4" and knn_engine in NATIVE_ENGINES:
        r.problems.append(f"KnnEngine: {knn_engine!r} needs the k-NN native libraries, which a self-managed node "
                          "built from Maven Central lacks (it would crash on the first document); use lucene")
    search_backend_roles = r.json_list("SearchBackendRoles")
    loader_backend_roles = r.json_list("LoaderBackendRoles")
    if auth_mode == "none":
        for key, given in (("SearchBackendRoles", search_backend_roles), ("LoaderBackendRoles", loader_backend_roles)):
            if given:
                r.problems.append(f"{key}: needs fine-grained access control (AuthMode sigv4 or basic); "
                                  "a node without security has no roles")
    text_field = r.text("TextField", default="text", pattern=re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$"))
    embedding_field = r.text("EmbeddingField", default="embedding", pattern=re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$"))
    if text_field == embedding_field:
        r.problems.append("EmbeddingField: must differ from TextField")

    props = GlueProperties(
        opensearch_url=url.rstrip("/"),
        auth_mode=auth_mode,  # type: ignore[arg-type]
        region=region,
        username=username,
        password=password,
        ca_file=r.text("CaFile"),
        role_mappings=mappings,
        cluster_settings=r.json_object("ClusterSettings"),
        name=r.text("Name", required=True, pattern=NAME_RE,
                   hint="lowercase letters, digits and '-', starting with a letter, at most 40 characters"),
        flavor=r.text("Flavor", required=True, choices=FLAVORS),  # type: ignore[arg-type]
        endpoint_name=endpoint_name,
        endpoint_url=endpoint_url,
        dimension=r.integer("Dimension", required=True, low=1, high=16000),
        connector_role_arn=role_arn,
        connector_access_key=access_key,
        connector_secret_key=secret_key,
        endpoint_instance_count=r.integer("EndpointInstanceCount", default=1, low=1, high=100),
        read_timeout_s=r.integer("ReadTimeoutSeconds", default=30, low=1, high=SAGEMAKER_LIMIT_S - 1),
        connection_timeout_s=r.integer("ConnectionTimeoutSeconds", default=5, low=1, high=SAGEMAKER_LIMIT_S - 1),
        max_retry_times=r.integer("MaxRetryTimes", default=3, low=0, high=10),
        retry_backoff_policy=r.text("RetryBackoffPolicy", default="exponential_full_jitter", choices=BACKOFF_POLICIES),
        retry_backoff_millis=r.integer("RetryBackoffMillis", default=200, low=1, high=10_000),
        index_name=r.text("IndexName", required=True, pattern=re.compile(r"^[a-z0-9][a-z0-9_-]{0,200}$"),
                         hint="lowercase letters, digits, '-' and '_'"),
        text_field=text_field,
        embedding_field=embedding_field,
        knn_engine=knn_engine,
        space_type=r.text("SpaceType", required=True, choices=SPACE_TYPES),
        hnsw_m=r.integer("HnswM", default=16, low=2, high=100),
        hnsw_ef_construction=r.integer("HnswEfConstruction", default=128, low=2, high=4096),
        number_of_shards=r.integer("NumberOfShards", default=1, low=1, high=1024),
        number_of_replicas=r.integer("NumberOfReplicas", default=1, low=0, high=15),
        ingest_batch_size=r.integer("IngestBatchSize", default=32, low=1, high=512),
        hybrid_search=r.flag("HybridSearch"),
        inference_component=r.text("InferenceComponentName", pattern=re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"),
                                   hint="expected a SageMaker inference component name"),
        search_backend_roles=search_backend_roles,
        loader_backend_roles=loader_backend_roles,
    )
    # A misspelt property would otherwise fall back to its default without a word.
    for key in sorted(set(raw) - r.read - CLOUDFORMATION_KEYS):
        r.problems.append(f"{key}: unknown property")
    if r.problems:
        raise PropertyError(r.problems)
    return props
