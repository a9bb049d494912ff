"""Typed, validated configuration for every stage of the app.

Raw configuration is plain JSON-like data: the ``stages`` block of cdk.json's context,
deep-merged with an optional JSON file (``-c config=path.json``) and with ``-c`` overrides
whose key is a dotted path (``-c prod.endpoints.gpu.max_capacity=6``). ``load_config``
turns it into frozen dataclasses. Validation never stops at the first problem: it collects
every bad field and raises one ``ConfigError`` naming each field, its bad value and what is
allowed, so a wrong ``-c`` fails ``cdk synth`` in seconds with the whole list.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from stacks.catalog import INSTANCES, MODELS, TEI_CPU_FRAMEWORK, TEI_GPU_FRAMEWORK, ModelSpec, tei_framework_for

STAGE_NAMES = ("dev", "prod")
# Context keys that are not dotted config overrides.
RESERVED_CONTEXT_KEYS = ("stages", "stage", "config", "pipeline", "deploy")
#: Who deploys the stages on a push to main: the CDK pipeline (stacks/pipeline_stack.py) or
#: GitHub Actions (.github/workflows/deploy.yml). Exactly one, so a push never deploys twice.
DEPLOY_PATHS = ("pipeline", "github")

# OpenSearch Service node types we allow; each supports encryption at rest, which FGAC needs.
SEARCH_INSTANCE_TYPES = (
    "t3.small.search", "t3.medium.search",
    "m6g.large.search", "m6g.xlarge.search", "m6g.2xlarge.search",
    "r6g.large.search", "r6g.xlarge.search", "r6g.2xlarge.search",
    "c6g.large.search", "c6g.xlarge.search",
    "or1.medium.search", "or1.large.search",
)
TEI_VERSIONS = ("1.8.2",)
PYTORCH_INFERENCE_VERSIONS = ("2.6.0",)
KNN_ENGINES = ("lucene", "faiss")
# HNSW limits. Lucene refuses a beam width (ef_construction) above 3200
# (Lucene99HnswVectorsFormat.MAXIMUM_BEAM_WIDTH); the glue accepts up to 4096 and m up to 100.
HNSW_M_MAX = 100
HNSW_EF_CONSTRUCTION_MAX = {"lucene": 3200, "faiss": 4096}
SPACE_TYPES = ("cosinesimil", "innerproduct", "l2")
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_ARN_ROLE_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")


class ConfigError(ValueError):
    """Every problem found in a configuration, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid semsearch configuration:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True, kw_only=True)
class EndpointConfig:
    """One SageMaker real-time endpoint.

    flavor "tei" runs Hugging Face Text Embeddings Inference; "custom" runs our own
    inference_code in the SageMaker PyTorch inference container.
    """

    model_id: str
    flavor: Literal["tei", "custom"] = "tei"
    instance_type: str = "ml.c6i.xlarge"
    #: "auto" derives the container family from the instance (GPU or CPU image). Naming a
    #: family explicitly is allowed, and checked against the instance type.
    image: Literal["auto", "huggingface-tei", "huggingface-tei-cpu", "pytorch-inference"] = "auto"
    tei_version: str = "1.8.2"
    pytorch_version: str = "2.6.0"
    #: s3:// URI of a model.tar.gz. Required for "custom"; for "tei" it serves a fine-tuned
    #: model instead of downloading ``hf_id`` from the Hugging Face Hub.
    model_data_s3_uri: str = ""
    #: Optional cross-check: if given it must equal the catalog's dimension.
    dimension: int = 0
    initial_instance_count: int = 1
    min_capacity: int = 1
    max_capacity: int = 2
    #: Target-tracking value: SageMakerVariantInvocationsPerInstance per minute.
    target_invocations_per_instance: int = 600
    max_client_batch_size: int = 32
    max_batch_tokens: int = 16384
    #: ModelLatency p99 alarm threshold (milliseconds).
    latency_alarm_ms: int = 500
    #: 5xx errors per 5 minutes that raise the alarm.
    error_alarm_threshold: int = 5

    @property
    def model(self) -> ModelSpec:
        return MODELS[self.model_id]

    @property
    def container_family(self) -> str:
        if self.flavor == "custom":
            return "pytorch-inference"
        if self.image != "auto":
            return self.image
        return tei_framework_for(INSTANCES[self.instance_type])

    @property
    def volume_kms_supported(self) -> bool:
        return not INSTANCES[self.instance_type].local_nvme


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Amazon OpenSearch Service domain and the neural-search objects the glue creates."""

    #: Name of the endpoint (a key of ``endpoints``) the ml-commons connector fronts.
    endpoint: str
    engine_version: Literal["2.19"] = "2.19"
    data_node_type: str = "t3.medium.search"
    data_node_count: int = 1
    dedicated_master_type: str = ""
    dedicated_master_count: int = 0
    availability_zones: Literal[1, 2, 3] = 1
    volume_size_gib: int = 20
    index_name: str = "documents"
    pipeline_name: str = "embed-documents"
    text_field: str = "text"
    embedding_field: str = "embedding"
    knn_engine: str = "lucene"
    #: HNSW graph parameters of the k-NN index (the glue's HnswM and HnswEfConstruction).
    hnsw_m: int = 16
    hnsw_ef_construction: int = 128
    #: "" derives the space type from the model (normalized → innerproduct).
    space_type: str = ""
    #: IAM roles mapped to OpenSearch's all_access role (people and CI that administer it).
    admin_role_arns: tuple[str, ...] = ()
    #: IAM roles allowed to search (mapped to a read-only neural-search role).
    search_role_arns: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class JobsConfig:
    """Fine-tuning (train → evaluate → gate → deploy) and batch embedding."""

    #: Key of ``endpoints`` that a promoted fine-tuned model replaces (blue/green).
    promote_endpoint: str = ""
    training_instance_type: str = "ml.g5.xlarge"
    training_use_spot: bool = False
    training_max_runtime_hours: int = 4
    epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 2e-5
    #: Promote only if tuned nDCG@10 >= base nDCG@10 + this gain.
    min_ndcg_gain: float = 0.005
    transform_instance_type: str = "ml.c6i.xlarge"
    transform_instance_count: int = 1
    transform_max_payload_mb: int = 6
    #: Expected usage, for `semsearch cost` only.
    training_hours_per_month: float = 2.0
    transform_hours_per_month: float = 4.0


@dataclass(frozen=True, kw_only=True)
class OpsConfig:
    """Dashboards, alarms and dev cost control."""

    #: Alarm notifications go to this address (an SNS email subscription); "" = topic only.
    alarm_email: str = ""
    #: Dev only: keep endpoints at min capacity only inside these UTC hours on weekdays and
    #: at zero outside them ("" = always on). Format "HH-HH", e.g. "07-19".
    active_hours_utc: str = ""


@dataclass(frozen=True, kw_only=True)
class VpcConfig:
    """Place endpoints, the domain and every function in existing subnets (no lookups: synth stays offline).

    The security groups must let their members reach each other on HTTPS (the glue and the bulk
    loader call the domain), and the subnets need a route (NAT, or VPC endpoints) to S3, Lambda
    and Step Functions: the CDK Provider framework's functions call them to run the glue.
    """

    vpc_id: str
    availability_zones: tuple[str, ...]
    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class StageConfig:
    name: str
    account: str = ""
    region: str = ""
    endpoints: Mapping[str, EndpointConfig] = field(default_factory=dict)
    search: SearchConfig
    vpc: VpcConfig | None = None
    jobs: JobsConfig = field(default_factory=JobsConfig)
    ops: OpsConfig = field(default_factory=OpsConfig)
    #: Keep stateful resources (buckets, keys, domain) when the stack is deleted.
    retain_data: bool = False

    @property
    def connector_endpoint(self) -> EndpointConfig:
        return self.endpoints[self.search.endpoint]

    @property
    def space_type(self) -> str:
        return self.search.space_type or self.connector_endpoint.model.space_type

    @property
    def promote_endpoint(self) -> str:
        return self.jobs.promote_endpoint or self.search.endpoint


#: The default config's connection: a documented placeholder so `make synth` always shows
#: the pipeline. Replace it (and the repository) before deploying the pipeline stack.
PLACEHOLDER_CONNECTION_ARN = ("arn:aws:codeconnections:us-east-1:111111111111:"
                              "connection/00000000-0000-0000-0000-000000000000")


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """The self-mutating CDK pipeline: source → synth (make test, make synth) → dev → approval → prod."""

    repository: str = "my-org/semsearch"
    branch: str = "main"
    connection_arn: str = PLACEHOLDER_CONNECTION_ARN
    account: str = ""
    region: str = ""
    #: Stages deployed in order; a manual approval guards every stage after the first.
    stages: tuple[str, ...] = ("dev", "prod")


@dataclass(frozen=True)
class AppConfig:
    stages: tuple[StageConfig, ...]
    pipeline: PipelineConfig | None = None
    #: One of DEPLOY_PATHS; the pipeline is built only when it is "pipeline".
    deploy: str = "pipeline"

    def stage(self, name: str) -> StageConfig:
        return next(s for s in self.stages if s.name == name)


# ---------------------------------------------------------------------------------------
# Loading: merge the raw sources, then build dataclasses collecting every problem.


def load_config(context: Mapping[str, Any]) -> AppConfig:
    """Build the validated config from CDK context (cdk.json + ``-c`` flags)."""
    problems: list[str] = []
    raw_stages = copy.deepcopy(context.get("stages") or {})
    if not isinstance(raw_stages, dict):
        raise ConfigError([f"stages: expected an object, got {type(raw_stages).__name__}"])

    config_file = context.get("config")
    if config_file:
        path = Path(str(config_file))
        try:
            file_data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError([f"config: file {str(path)!r} not found"]) from None
        except json.JSONDecodeError as e:
            raise ConfigError([f"config: {path} is not valid JSON ({e})"]) from None
        _deep_merge(raw_stages, file_data.get("stages", file_data))

    for key, value in sorted(context.items()):
        if key in RESERVED_CONTEXT_KEYS or "." not in key or key.startswith("@"):
            continue
        if key.split(".", 1)[0] in raw_stages or key.split(".", 1)[0] in STAGE_NAMES:
            _set_dotted(raw_stages, key, _parse_scalar(value))

    selected = str(context.get("stage") or "all")
    if selected == "all":
        names = [n for n in raw_stages]
    elif selected in raw_stages:
        names = [selected]
    else:
        raise ConfigError([f"stage: unknown stage {selected!r}; allowed: all, {', '.join(raw_stages)}"])

    stages = []
    for name in names:
        if name not in STAGE_NAMES:
            problems.append(f"stages.{name}: unknown stage; allowed: {', '.join(STAGE_NAMES)}")
            continue
        stage = _build_stage(name, raw_stages[name], problems)
        if stage is not None:
            stages.append(stage)
    deploy = str(context.get("deploy") or "pipeline")
    if deploy not in DEPLOY_PATHS:
        problems.append(f"deploy: bad value {deploy!r}; allowed: {', '.join(DEPLOY_PATHS)}")
    pipeline = None
    raw_pipeline = copy.deepcopy(_parse_scalar(context.get("pipeline")))
    for key, value in context.items():
        if key.startswith("pipeline.") and isinstance(raw_pipeline, dict):
            _set_dotted(raw_pipeline, key.removeprefix("pipeline."), _parse_scalar(value))
    if deploy == "pipeline" and raw_pipeline is None:
        problems.append("pipeline: missing; deploy 'pipeline' needs the pipeline block (repository, "
                        "connection_arn, stages); allowed: a pipeline block, or deploy 'github'")
    if deploy == "pipeline" and raw_pipeline is not None and selected == "all":
        pipeline = _build(PipelineConfig, raw_pipeline, "pipeline", problems)
        if pipeline is not None:
            _validate_pipeline(pipeline, raw_stages, problems)
    if problems:
        raise ConfigError(problems)
    return AppConfig(stages=tuple(stages), pipeline=pipeline, deploy=deploy)


def _deep_merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for k, v in other.items():
        if isinstance(v, Mapping) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def _parse_scalar(value: Any) -> Any:
    """`-c` values arrive as strings: read JSON literals (numbers, booleans, lists)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _build(cls: type, raw: Any, path: str, problems: list[str], **given: Any) -> Any:
    """Build a frozen dataclass from raw data, recording every bad field in ``problems``."""
    if not isinstance(raw, Mapping):
        problems.append(f"{path}: expected an object, got {raw!r}")
        return None
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for unknown in sorted(set(raw) - known):
        problems.append(f"{path}.{unknown}: unknown field; allowed: {', '.join(sorted(known - set(given)))}")
    values: dict[str, Any] = dict(given)
    ok = True
    for f in fields(cls):
        if f.name in given:
            continue
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                problems.append(f"{path}.{f.name}: required field is missing")
                ok = False
            continue
        coerced, error = _coerce(raw[f.name], hints[f.name])
        if error:
            problems.append(f"{path}.{f.name}: {error}")
            ok = False
        else:
            values[f.name] = coerced
    return cls(**values) if ok else None


def _coerce(value: Any, hint: Any) -> tuple[Any, str | None]:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        if value in args:
            return value, None
        # "-c" may deliver "3" where the literal is the int 3.
        for a in args:
            if str(a) == str(value):
                return a, None
        return None, f"bad value {value!r}; allowed: {', '.join(str(a) for a in args)}"
    if hint is bool:
        if isinstance(value, bool):
            return value, None
        return None, f"bad value {value!r}; allowed: true, false"
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return None, f"bad value {value!r}; allowed: an integer"
        return value, None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"bad value {value!r}; allowed: a number"
        return float(value), None
    if hint is str:
        if not isinstance(value, str):
            return None, f"bad value {value!r}; allowed: a string"
        return value, None
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return None, f"bad value {value!r}; allowed: a list of strings"
        return tuple(value), None
    raise TypeError(f"unsupported config type {hint!r}")  # a programming error, not input


def _build_stage(name: str, raw: Any, problems: list[str]) -> StageConfig | None:
    path = f"stages.{name}"
    if not isinstance(raw, Mapping):
        problems.append(f"{path}: expected an object, got {raw!r}")
        return None
    before = len(problems)
    endpoints: dict[str, EndpointConfig] = {}
    raw_endpoints = raw.get("endpoints", {})
    if not isinstance(raw_endpoints, Mapping) or not raw_endpoints:
        problems.append(f"{path}.endpoints: expected at least one endpoint, got {raw_endpoints!r}")
        raw_endpoints = {}
    for ep_name, ep_raw in raw_endpoints.items():
        ep_path = f"{path}.endpoints.{ep_name}"
        if not _NAME_RE.match(ep_name):
            problems.append(f"{ep_path}: bad endpoint name; allowed: lowercase letters, digits, '-' (max 31)")
        ep = _build(EndpointConfig, ep_raw, ep_path, problems)
        if ep is not None:
            _validate_endpoint(ep, ep_path, problems)
            endpoints[ep_name] = ep
    search = _build(SearchConfig, raw.get("search"), f"{path}.search", problems)
    vpc = None
    if raw.get("vpc") is not None:
        vpc = _build(VpcConfig, raw.get("vpc"), f"{path}.vpc", problems)
    jobs = _build(JobsConfig, raw.get("jobs", {}), f"{path}.jobs", problems)
    ops = _build(OpsConfig, raw.get("ops", {}), f"{path}.ops", problems)
    rest = {k: v for k, v in raw.items() if k not in ("endpoints", "search", "vpc", "jobs", "ops")}
    stage = _build(StageConfig, rest, path, problems, name=name, endpoints=endpoints,
                   search=search, vpc=vpc, jobs=jobs, ops=ops)
    if jobs is not None:
        _validate_jobs(jobs, raw_endpoints, f"{path}.jobs", problems)
    if ops is not None:
        _validate_ops(ops, name, f"{path}.ops", problems)
    if search is not None:
        _validate_search(search, endpoints, raw_endpoints, f"{path}.search", problems)
    if vpc is not None:
        _validate_vpc(vpc, f"{path}.vpc", problems)
    if stage is not None:
        if stage.account and not re.fullmatch(r"\d{12}", stage.account):
            problems.append(f"{path}.account: bad value {stage.account!r}; allowed: a 12-digit AWS account id or ''")
        if stage.region and not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", stage.region):
            problems.append(f"{path}.region: bad value {stage.region!r}; allowed: an AWS region such as us-east-1, or ''")
    return stage if len(problems) == before else None


def _validate_endpoint(ep: EndpointConfig, path: str, problems: list[str]) -> None:
    model = MODELS.get(ep.model_id)
    if model is None:
        problems.append(f"{path}.model_id: unknown model {ep.model_id!r}; allowed: {', '.join(MODELS)}")
    elif ep.dimension and ep.dimension != model.dimension:
        problems.append(f"{path}.dimension: {ep.dimension} disagrees with the catalog's {model.dimension} "
                        f"for {ep.model_id}; allowed: {model.dimension} (or omit it)")
    instance = INSTANCES.get(ep.instance_type)
    if instance is None:
        problems.append(f"{path}.instance_type: unknown instance type {ep.instance_type!r}; "
                        f"allowed: {', '.join(INSTANCES)}")
    elif ep.flavor == "tei" and ep.image != "auto" and ep.image != tei_framework_for(instance):
        kind = "GPU" if instance.accelerated else "CPU"
        problems.append(f"{path}.image: {ep.image} does not run on the {kind} instance {ep.instance_type}; "
                        f"allowed: auto, {tei_framework_for(instance)}")
    if ep.flavor == "tei" and ep.image == "pytorch-inference":
        problems.append(f"{path}.image: pytorch-inference is the custom flavor's container; "
                        f"allowed for tei: auto, {TEI_GPU_FRAMEWORK}, {TEI_CPU_FRAMEWORK}")
    if ep.flavor == "custom" and ep.image not in ("auto", "pytorch-inference"):
        problems.append(f"{path}.image: {ep.image} is a TEI image; allowed for custom: auto, pytorch-inference")
    if ep.tei_version not in TEI_VERSIONS:
        problems.append(f"{path}.tei_version: bad value {ep.tei_version!r}; allowed: {', '.join(TEI_VERSIONS)}")
    if ep.pytorch_version not in PYTORCH_INFERENCE_VERSIONS:
        problems.append(f"{path}.pytorch_version: bad value {ep.pytorch_version!r}; "
                        f"allowed: {', '.join(PYTORCH_INFERENCE_VERSIONS)}")
    if ep.flavor == "custom" and not ep.model_data_s3_uri:
        problems.append(f"{path}.model_data_s3_uri: required for the custom flavor "
                        "(the model.tar.gz built by `semsearch package`)")
    if ep.model_data_s3_uri and not re.fullmatch(r"s3://[a-z0-9.-]{3,63}/.+\.tar\.gz", ep.model_data_s3_uri):
        problems.append(f"{path}.model_data_s3_uri: bad value {ep.model_data_s3_uri!r}; "
                        "allowed: s3://bucket/key.tar.gz")
    for name in ("initial_instance_count", "min_capacity", "max_capacity", "target_invocations_per_instance",
                 "max_client_batch_size", "max_batch_tokens", "latency_alarm_ms", "error_alarm_threshold"):
        if getattr(ep, name) < 1:
            problems.append(f"{path}.{name}: bad value {getattr(ep, name)}; allowed: an integer >= 1")
    if ep.min_capacity > ep.max_capacity:
        problems.append(f"{path}.min_capacity: {ep.min_capacity} is above max_capacity {ep.max_capacity}; "
                        f"allowed: 1..{ep.max_capacity}")
    if not ep.min_capacity <= ep.initial_instance_count <= ep.max_capacity:
        problems.append(f"{path}.initial_instance_count: {ep.initial_instance_count} is outside "
                        f"min_capacity..max_capacity ({ep.min_capacity}..{ep.max_capacity})")
    if ep.max_client_batch_size > 256:
        problems.append(f"{path}.max_client_batch_size: {ep.max_client_batch_size} is above 256; allowed: 1..256")


def _validate_search(search: SearchConfig, endpoints: Mapping[str, EndpointConfig],
                     raw_endpoints: Mapping[str, Any], path: str, problems: list[str]) -> None:
    if search.endpoint not in raw_endpoints:
        problems.append(f"{path}.endpoint: unknown endpoint {search.endpoint!r}; "
                        f"allowed: {', '.join(raw_endpoints) or '(no endpoints defined)'}")
    for name in ("data_node_type",) + (("dedicated_master_type",) if search.dedicated_master_count else ()):
        value = getattr(search, name)
        if value not in SEARCH_INSTANCE_TYPES:
            problems.append(f"{path}.{name}: unknown instance type {value!r}; allowed: {', '.join(SEARCH_INSTANCE_TYPES)}")
    if search.data_node_count < 1:
        problems.append(f"{path}.data_node_count: bad value {search.data_node_count}; allowed: an integer >= 1")
    if search.dedicated_master_count not in (0, 3, 5):
        problems.append(f"{path}.dedicated_master_count: bad value {search.dedicated_master_count}; allowed: 0, 3, 5")
    if search.availability_zones > 1 and search.data_node_count % search.availability_zones:
        problems.append(f"{path}.data_node_count: {search.data_node_count} nodes cannot spread evenly over "
                        f"{search.availability_zones} availability zones; allowed: a multiple of "
                        f"{search.availability_zones}")
    if not 10 <= search.volume_size_gib <= 16384:
        problems.append(f"{path}.volume_size_gib: bad value {search.volume_size_gib}; allowed: 10..16384")
    if search.knn_engine not in KNN_ENGINES:
        problems.append(f"{path}.knn_engine: bad value {search.knn_engine!r}; allowed: {', '.join(KNN_ENGINES)}")
    if not 2 <= search.hnsw_m <= HNSW_M_MAX:
        problems.append(f"{path}.hnsw_m: bad value {search.hnsw_m}; allowed: 2..{HNSW_M_MAX}")
    ef_max = HNSW_EF_CONSTRUCTION_MAX.get(search.knn_engine, HNSW_EF_CONSTRUCTION_MAX["faiss"])
    if not 2 <= search.hnsw_ef_construction <= ef_max:
        problems.append(f"{path}.hnsw_ef_construction: bad value {search.hnsw_ef_construction}; allowed: 2..{ef_max} "
                        f"for knn_engine {search.knn_engine}")
    if search.space_type and search.space_type not in SPACE_TYPES:
        problems.append(f"{path}.space_type: bad value {search.space_type!r}; allowed: '', {', '.join(SPACE_TYPES)}")
    for name in ("index_name", "pipeline_name"):
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,100}", getattr(search, name)):
            problems.append(f"{path}.{name}: bad value {getattr(search, name)!r}; allowed: lowercase letters, "
                            "digits, '-', '_'")
    for name in ("admin_role_arns", "search_role_arns"):
        for arn in getattr(search, name):
            if not _ARN_ROLE_RE.match(arn):
                problems.append(f"{path}.{name}: bad value {arn!r}; allowed: IAM role ARNs")
    del endpoints  # validated separately; kept in the signature for readability at call sites


def _validate_jobs(jobs: JobsConfig, raw_endpoints: Mapping[str, Any], path: str, problems: list[str]) -> None:
    if jobs.promote_endpoint and jobs.promote_endpoint not in raw_endpoints:
        problems.append(f"{path}.promote_endpoint: unknown endpoint {jobs.promote_endpoint!r}; "
                        f"allowed: '', {', '.join(raw_endpoints)}")
    for name in ("training_instance_type", "transform_instance_type"):
        if getattr(jobs, name) not in INSTANCES:
            problems.append(f"{path}.{name}: unknown instance type {getattr(jobs, name)!r}; "
                            f"allowed: {', '.join(INSTANCES)}")
    for name in ("training_max_runtime_hours", "epochs", "batch_size", "transform_instance_count"):
        if getattr(jobs, name) < 1:
            problems.append(f"{path}.{name}: bad value {getattr(jobs, name)}; allowed: an integer >= 1")
    if not 1 <= jobs.transform_max_payload_mb <= 100:
        problems.append(f"{path}.transform_max_payload_mb: bad value {jobs.transform_max_payload_mb}; allowed: 1..100")
    if not 0 < jobs.learning_rate < 1:
        problems.append(f"{path}.learning_rate: bad value {jobs.learning_rate}; allowed: a number in (0, 1)")
    if not -1 < jobs.min_ndcg_gain < 1:
        problems.append(f"{path}.min_ndcg_gain: bad value {jobs.min_ndcg_gain}; allowed: a number in (-1, 1)")
    for name in ("training_hours_per_month", "transform_hours_per_month"):
        if not 0 <= getattr(jobs, name) <= 744:
            problems.append(f"{path}.{name}: bad value {getattr(jobs, name)}; allowed: 0..744 (hours in a month)")


def _validate_pipeline(pipeline: PipelineConfig, raw_stages: Mapping[str, Any], problems: list[str]) -> None:
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", pipeline.repository):
        problems.append(f"pipeline.repository: bad value {pipeline.repository!r}; allowed: owner/name")
    if not re.fullmatch(r"arn:aws[a-z-]*:(codestar-connections|codeconnections):[a-z0-9-]+:\d{12}:connection/[\w-]+",
                        pipeline.connection_arn):
        problems.append(f"pipeline.connection_arn: bad value {pipeline.connection_arn!r}; allowed: a CodeStar "
                        "connection ARN (arn:aws:codeconnections:REGION:ACCOUNT:connection/ID)")
    for stage in pipeline.stages:
        if stage not in raw_stages:
            problems.append(f"pipeline.stages: unknown stage {stage!r}; allowed: {', '.join(raw_stages)}")
    if pipeline.account and not re.fullmatch(r"\d{12}", pipeline.account):
        problems.append(f"pipeline.account: bad value {pipeline.account!r}; allowed: a 12-digit AWS account id or ''")


def active_hours(value: str) -> tuple[int, int] | None:
    """"07-19" → (7, 19); "" → None. Raises ValueError on anything else."""
    if not value:
        return None
    match = re.fullmatch(r"(\d{2})-(\d{2})", value)
    if not match or not 0 <= int(match[1]) < int(match[2]) <= 24:
        raise ValueError(value)
    return int(match[1]), int(match[2])


def _validate_ops(ops: OpsConfig, stage: str, path: str, problems: list[str]) -> None:
    if ops.alarm_email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", ops.alarm_email):
        problems.append(f"{path}.alarm_email: bad value {ops.alarm_email!r}; allowed: an e-mail address or ''")
    try:
        hours = active_hours(ops.active_hours_utc)
    except ValueError:
        problems.append(f"{path}.active_hours_utc: bad value {ops.active_hours_utc!r}; allowed: '' (always on) or "
                        "'HH-HH' with start < end, e.g. '07-19' (a schedule needs hours)")
        return
    if hours is not None and stage == "prod":
        problems.append(f"{path}.active_hours_utc: prod never scales to zero; allowed: ''")


def _validate_vpc(vpc: VpcConfig, path: str, problems: list[str]) -> None:
    if not re.fullmatch(r"vpc-[0-9a-f]{8,17}", vpc.vpc_id):
        problems.append(f"{path}.vpc_id: bad value {vpc.vpc_id!r}; allowed: vpc-xxxxxxxx")
    if not vpc.subnet_ids or not all(re.fullmatch(r"subnet-[0-9a-f]{8,17}", s) for s in vpc.subnet_ids):
        problems.append(f"{path}.subnet_ids: bad value {list(vpc.subnet_ids)!r}; allowed: one or more subnet-xxxxxxxx")
    if not vpc.security_group_ids or not all(re.fullmatch(r"sg-[0-9a-f]{8,17}", s) for s in vpc.security_group_ids):
        problems.append(f"{path}.security_group_ids: bad value {list(vpc.security_group_ids)!r}; "
                        "allowed: one or more sg-xxxxxxxx")
    if len(vpc.availability_zones) != len(vpc.subnet_ids):
        problems.append(f"{path}.availability_zones: {len(vpc.availability_zones)} zones for "
                        f"{len(vpc.subnet_ids)} subnets; allowed: one zone per subnet, in the same order")
