"""Model and instance catalogs: the single source of truth for model shapes and hardware.

Pure Python (no CDK import) so the CLI, the tests and the stacks all read the same entries.
The k-NN dimension, the connector request body, TEI's environment and the default
instance types are all derived from these entries; none of them is typed anywhere else.
Amazon Bedrock's embedding models (``BEDROCK_MODELS``) are defined in
lambda/endpoint_request/bedrock.py, which the glue's Lambda carries, and listed here.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

# The Bedrock models are defined where the glue's Lambda asset carries them (lambda/ is not a
# package: its folder goes on the import path, as stacks/glue_properties.py does).
_LAMBDA_DIR = str(Path(__file__).resolve().parents[1] / "lambda")
if _LAMBDA_DIR not in sys.path:
    sys.path.append(_LAMBDA_DIR)

from endpoint_request.bedrock import MODELS as BEDROCK_MODELS  # noqa: E402, F401 (re-exported)
from endpoint_request.bedrock import BedrockModel  # noqa: E402, F401 (re-exported)

Pooling = Literal["mean", "cls"]


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """One embedding model.

    ``max_tokens`` is the sequence length the model was trained for; longer inputs are
    truncated (never rejected). ``query_prefix`` / ``passage_prefix`` are prepended by
    whoever embeds (e5 models need "query: " / "passage: "; bge and arctic use an
    instruction on queries only).
    """

    id: str
    hf_id: str
    dimension: int
    max_tokens: int
    pooling: Pooling
    normalize: bool
    query_prefix: str = ""
    passage_prefix: str = ""
    multilingual: bool = False
    default_gpu_instance: str = "ml.g5.xlarge"
    default_cpu_instance: str = "ml.c6i.xlarge"

    @property
    def space_type(self) -> str:
        """k-NN space type matching how the model was trained to compare vectors."""
        # Normalized embeddings: inner product equals cosine and is the cheapest exact score.
        return "innerproduct" if self.normalize else "cosinesimil"


_BGE_QUERY = "Represent this sentence for searching relevant passages: "

MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        m.id: m
        for m in (
            ModelSpec(id="all-MiniLM-L6-v2", hf_id="sentence-transformers/all-MiniLM-L6-v2",
                      dimension=384, max_tokens=256, pooling="mean", normalize=True),
            ModelSpec(id="bge-small-en-v1.5", hf_id="BAAI/bge-small-en-v1.5",
                      dimension=384, max_tokens=512, pooling="cls", normalize=True,
                      query_prefix=_BGE_QUERY),
            ModelSpec(id="bge-base-en-v1.5", hf_id="BAAI/bge-base-en-v1.5",
                      dimension=768, max_tokens=512, pooling="cls", normalize=True,
                      query_prefix=_BGE_QUERY),
            ModelSpec(id="bge-large-en-v1.5", hf_id="BAAI/bge-large-en-v1.5",
                      dimension=1024, max_tokens=512, pooling="cls", normalize=True,
                      query_prefix=_BGE_QUERY, default_cpu_instance="ml.c6i.2xlarge"),
            ModelSpec(id="gte-base", hf_id="thenlper/gte-base",
                      dimension=768, max_tokens=512, pooling="mean", normalize=True),
            ModelSpec(id="gte-large", hf_id="thenlper/gte-large",
                      dimension=1024, max_tokens=512, pooling="mean", normalize=True,
                      default_cpu_instance="ml.c6i.2xlarge"),
            ModelSpec(id="e5-base-v2", hf_id="intfloat/e5-base-v2",
                      dimension=768, max_tokens=512, pooling="mean", normalize=True,
                      query_prefix="query: ", passage_prefix="passage: "),
            ModelSpec(id="e5-large-v2", hf_id="intfloat/e5-large-v2",
                      dimension=1024, max_tokens=512, pooling="mean", normalize=True,
                      query_prefix="query: ", passage_prefix="passage: ",
                      default_cpu_instance="ml.c6i.2xlarge"),
            ModelSpec(id="multilingual-e5-base", hf_id="intfloat/multilingual-e5-base",
                      dimension=768, max_tokens=512, pooling="mean", normalize=True,
                      query_prefix="query: ", passage_prefix="passage: ", multilingual=True),
            ModelSpec(id="multilingual-e5-large", hf_id="intfloat/multilingual-e5-large",
                      dimension=1024, max_tokens=512, pooling="mean", normalize=True,
                      query_prefix="query: ", passage_prefix="passage: ", multilingual=True,
                      default_cpu_instance="ml.c6i.2xlarge"),
            ModelSpec(id="snowflake-arctic-embed-m", hf_id="Snowflake/snowflake-arctic-embed-m",
                      dimension=768, max_tokens=512, pooling="cls", normalize=True,
                      query_prefix=_BGE_QUERY),
        )
    }
)


def bedrock_space_type(model: BedrockModel, normalize: bool) -> str:
    """k-NN space type for a Bedrock model's vectors: innerproduct for unit vectors (Titan v2
    asked to normalize), cosinesimil otherwise (Cohere v3 makes no promise of unit length)."""
    return "innerproduct" if model.normalize_option and normalize else "cosinesimil"


@dataclass(frozen=True, kw_only=True)
class InstanceSpec:
    """A SageMaker instance type as far as deployment decisions need it."""

    name: str
    vcpus: int
    memory_gib: int
    gpus: int = 0
    # Instance-store NVMe volumes: SageMaker rejects a KMS volume key on these types.
    local_nvme: bool = False

    @property
    def accelerated(self) -> bool:
        return self.gpus > 0


def _family(prefix: str, sizes: dict[str, tuple[int, int, int]], *, local_nvme: bool = False,
            ) -> list[InstanceSpec]:
    return [InstanceSpec(name=f"ml.{prefix}.{size}", vcpus=v, memory_gib=m, gpus=g,
                         local_nvme=local_nvme) for size, (v, m, g) in sizes.items()]


INSTANCES: Mapping[str, InstanceSpec] = MappingProxyType(
    {
        i.name: i
        for i in [
            *_family("c6i", {"large": (2, 4, 0), "xlarge": (4, 8, 0), "2xlarge": (8, 16, 0),
                             "4xlarge": (16, 32, 0), "8xlarge": (32, 64, 0)}),
            *_family("c7i", {"large": (2, 4, 0), "xlarge": (4, 8, 0), "2xlarge": (8, 16, 0),
                             "4xlarge": (16, 32, 0)}),
            *_family("m6i", {"large": (2, 8, 0), "xlarge": (4, 16, 0), "2xlarge": (8, 32, 0)}),
            *_family("m5", {"large": (2, 8, 0), "xlarge": (4, 16, 0), "2xlarge": (8, 32, 0)}),
            *_family("g5", {"xlarge": (4, 16, 1), "2xlarge": (8, 32, 1), "4xlarge": (16, 64, 1),
                            "12xlarge": (48, 192, 4)}, local_nvme=True),
            *_family("g6", {"xlarge": (4, 16, 1), "2xlarge": (8, 32, 1)}, local_nvme=True),
            *_family("g4dn", {"xlarge": (4, 16, 1), "2xlarge": (8, 32, 1)}, local_nvme=True),
        ]
    }
)

# TEI publishes one image family per hardware kind; the SageMaker SDK names them so.
TEI_GPU_FRAMEWORK = "huggingface-tei"
TEI_CPU_FRAMEWORK = "huggingface-tei-cpu"


def tei_framework_for(instance: InstanceSpec) -> str:
    return TEI_GPU_FRAMEWORK if instance.accelerated else TEI_CPU_FRAMEWORK
