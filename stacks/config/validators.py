"""What each configuration value may be beyond its type: ranges, known instance types and
cross-field rules. Every validator appends to ``problems`` and never raises, so one
``ConfigError`` can name every bad field at once (stacks/config/loading.py raises it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from stacks.catalog import BEDROCK_MODELS, INSTANCES, MODELS, TEI_CPU_FRAMEWORK, TEI_GPU_FRAMEWORK, tei_framework_for
from stacks.config.schema import (
    BedrockConfig,
    EndpointConfig,
    JobsConfig,
    OpsConfig,
    PipelineConfig,
    SearchConfig,
    StageConfig,
    VpcConfig,
)

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
# Short enough that semsearch-<stage>-<name>-<version>-<promotion tag>-model (the
# inference component of a scale-to-zero endpoint) stays within SageMaker's 63 characters.
ENDPOINT_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_ARN_ROLE_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")


def validate_stage(stage: StageConfig, path: str, problems: list[str]) -> None:
    if stage.account and not re.fullmatch(r"\d{12}", stage.account):
        problems.append(f"{path}.account: bad value {stage.account!r}; allowed: a 12-digit AWS account id or ''")
    if stage.region and not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", stage.region):
        problems.append(f"{path}.region: bad value {stage.region!r}; allowed: an AWS region such as us-east-1, or ''")
    validate_transform_instance(stage, path, problems)
    if stage.search is not None:
        # A bedrock block that failed to build has said why already.
        if stage.search.provider == "bedrock" and stage.bedrock is None and f"{path}.bedrock" not in str(problems):
            problems.append(f"{path}.bedrock: required with search.provider 'bedrock' (model_id, and dimension "
                            f"where the model offers several); models: {', '.join(BEDROCK_MODELS)}")
        elif stage.search.provider != "bedrock" and stage.bedrock is not None:
            problems.append(f"{path}.bedrock: set, but search.provider is {stage.search.provider!r}; allowed: "
                            "search.provider 'bedrock' with it, or no bedrock block")


def validate_bedrock(bedrock: BedrockConfig, path: str, problems: list[str]) -> None:
    """A known Bedrock model, a dimension it offers, normalize only where it is an option."""
    model = BEDROCK_MODELS.get(bedrock.model_id)
    if model is None:
        problems.append(f"{path}.model_id: unknown Bedrock embedding model {bedrock.model_id!r}; allowed: "
                        f"{', '.join(BEDROCK_MODELS)}")
        return
    if bedrock.dimension and bedrock.dimension not in model.dimensions:
        problems.append(f"{path}.dimension: {bedrock.model_id} does not offer dimension {bedrock.dimension}; "
                        f"allowed: 0 (its default, {model.default_dimension}), "
                        f"{', '.join(str(d) for d in model.dimensions)}")
    if not bedrock.normalize and not model.normalize_option:
        problems.append(f"{path}.normalize: {bedrock.model_id} has no normalize option (its vectors are as the "
                        "model makes them; the index compares them by cosine); allowed: true")


def validate_transform_instance(stage: StageConfig, path: str, problems: list[str]) -> None:
    """Batch transform runs the serving model of the endpoint the search stack fronts, image
    and all: a GPU image needs a GPU instance, a CPU image a CPU one."""
    if stage.search is None or stage.jobs is None:  # their own problems are reported already
        return
    endpoint = stage.endpoints.get(stage.search.endpoint)
    serving = INSTANCES.get(endpoint.instance_type) if endpoint else None
    transform = INSTANCES.get(stage.jobs.transform_instance_type)
    if serving is None or transform is None or serving.accelerated == transform.accelerated:
        return
    kind = "GPU" if serving.accelerated else "CPU"
    allowed = sorted(name for name, spec in INSTANCES.items() if spec.accelerated == serving.accelerated)
    problems.append(
        f"{path}.jobs.transform_instance_type: {transform.name} is a {'GPU' if transform.accelerated else 'CPU'} "
        f"instance, but batch transform runs the model of {path}.endpoints.{stage.search.endpoint} "
        f"(search.endpoint), whose instance_type {serving.name} takes the {kind} image; allowed: a {kind} "
        f"instance type ({', '.join(allowed)})")


def validate_endpoint(ep: EndpointConfig, path: str, problems: list[str], *, dimension: int | None = None) -> None:
    """``dimension`` is what the user's config states, if anything: the catalog's is the only legal value."""
    model = MODELS.get(ep.model_id)
    if model is None:
        problems.append(f"{path}.model_id: unknown model {ep.model_id!r}; allowed: {', '.join(MODELS)}")
    elif dimension is not None and dimension != model.dimension:
        problems.append(f"{path}.dimension: {dimension} disagrees with the catalog's {model.dimension} "
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


def validate_search(search: SearchConfig, raw_endpoints: Mapping[str, Any], path: str,
                    problems: list[str]) -> None:
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
    if not 0 <= search.retired_index_hours <= 8760:
        problems.append(f"{path}.retired_index_hours: bad value {search.retired_index_hours}; allowed: 0..8760 "
                        "(hours; 0 deletes a retired index at the watchdog's next run)")
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


def validate_jobs(jobs: JobsConfig, raw_endpoints: Mapping[str, Any], path: str, problems: list[str]) -> None:
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


def validate_pipeline(pipeline: PipelineConfig, raw_stages: Mapping[str, Any], problems: list[str]) -> None:
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


def validate_ops(ops: OpsConfig, stage: str, path: str, problems: list[str]) -> None:
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


def validate_vpc(vpc: VpcConfig, path: str, problems: list[str]) -> None:
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
