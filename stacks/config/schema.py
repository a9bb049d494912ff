"""The configuration's shape: frozen dataclasses, one per block of a stage, and their defaults.

What a value may be beyond its type (ranges, instance types, cross-field rules) is checked in
stacks/config/validators.py; how raw context becomes these objects is stacks/config/loading.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from stacks.catalog import (
    BEDROCK_MODELS,
    INSTANCES,
    MODELS,
    BedrockModel,
    ModelSpec,
    bedrock_space_type,
    tei_framework_for,
)

STAGE_NAMES = ("dev", "prod")
#: Who deploys the stages on a push to main: the CDK pipeline (stacks/pipeline_stack.py) or
#: GitHub Actions (.github/workflows/deploy.yml). Exactly one, so a push never deploys twice.
DEPLOY_PATHS = ("pipeline", "github")


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
class BedrockConfig:
    """An Amazon Bedrock embedding model that the connector calls instead of a SageMaker endpoint
    (``search.provider: "bedrock"``). Nothing is deployed for it: the connector role may invoke
    exactly this foundation model in the stage's region. Models: stacks.catalog.BEDROCK_MODELS.
    """

    model_id: str
    #: 0: the model's default (1024). Titan Text Embeddings v2 also offers 512 and 256.
    dimension: int = 0
    #: Titan v2 only: ask for unit-length vectors (k-NN space innerproduct; false: cosinesimil).
    #: Cohere v3 has no such option: leave it true.
    normalize: bool = True

    @property
    def model(self) -> BedrockModel:
        return BEDROCK_MODELS[self.model_id]

    @property
    def embedding_dimension(self) -> int:
        return self.dimension or self.model.default_dimension

    @property
    def space_type(self) -> str:
        return bedrock_space_type(self.model, self.normalize)


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Amazon OpenSearch Service domain and the neural-search objects the glue creates."""

    #: Name of the endpoint (a key of ``endpoints``) the ml-commons connector fronts (with
    #: provider "bedrock": the endpoint promotion uses; the connector and batch embedding call Bedrock).
    endpoint: str
    #: Who embeds for the index: "sagemaker" (the endpoint above) or "bedrock" (the stage's
    #: ``bedrock`` block: an Amazon Bedrock model, called by API).
    provider: Literal["sagemaker", "bedrock"] = "sagemaker"
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
    #: Hybrid queries (keyword + neural) get min-max normalized scores from the index's
    #: default search pipeline (the glue's HybridSearch).
    hybrid_search: bool = False
    #: A model change re-embeds into a new index; the old one is kept (read-only, behind
    #: ``<index_name>-retired``) this many hours before the glue's watchdog deletes it.
    retired_index_hours: int = 72
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
    #: EnableNetworkIsolation on the training job: no network at all (no PyPI, no Hugging Face
    #: Hub, no AWS APIs from the container). train.py's packages come from the source bundle's
    #: wheels either way; with isolation the bundle and the base model arrive as input channels
    #: (the base model from the artifact bucket's training/base-model/, or the start input's
    #: base_model_s3_uri: a model folder or one model.tar.gz). The default config sets it for prod.
    network_isolation: bool = False
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
    #: The Bedrock model of ``search.provider: "bedrock"``.
    bedrock: BedrockConfig | None = None
    jobs: JobsConfig = field(default_factory=JobsConfig)
    ops: OpsConfig = field(default_factory=OpsConfig)
    #: Keep stateful resources (buckets, keys, domain) when the stack is deleted.
    retain_data: bool = False

    @property
    def connector_endpoint(self) -> EndpointConfig:
        return self.endpoints[self.search.endpoint]

    @property
    def on_bedrock(self) -> bool:
        """The connector calls the Bedrock model of ``bedrock``, not a SageMaker endpoint."""
        return self.search.provider == "bedrock" and self.bedrock is not None

    @property
    def space_type(self) -> str:
        if self.on_bedrock:
            assert self.bedrock is not None
            return self.search.space_type or self.bedrock.space_type
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

