"""What each flavor's container is told at start: its environment, built from the endpoint config.

No CDK import: the stacks (the endpoint's model, the model the fine-tune workflow promotes) and
the CLI (`semsearch loadtest` reads the batch limits a stage deploys) share these definitions.
"""

from __future__ import annotations

import hashlib
import json

from stacks.catalog import InstanceSpec
from stacks.config import EndpointConfig

# Where SageMaker unpacks model.tar.gz inside the container.
MODEL_MOUNT = "/opt/ml/model"


def model_version(config: EndpointConfig) -> str:
    """8 hex digits naming what the endpoint serves that defines its vectors: the flavor,
    the model and its pooling, and the weights in S3. Not the instance type, counts or batch
    limits: those change how it serves, not what it answers.
    """
    served = {"flavor": config.flavor, "hf_id": config.model.hf_id, "pooling": config.model.pooling,
              "dimension": config.model.dimension, "model_data_s3_uri": config.model_data_s3_uri}
    return hashlib.sha256(json.dumps(served, sort_keys=True).encode()).hexdigest()[:8]


def custom_container_environment(config: EndpointConfig, instance: InstanceSpec) -> dict[str, str]:
    """Environment of our handler (inference_code) in the SageMaker PyTorch inference container.

    The one definition for the endpoint's model and for a model the fine-tune workflow promotes
    onto the same endpoint (same config, same instance type).
    """
    return {
        # The PyTorch inference toolkit imports code/inference.py from the model archive.
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": f"{MODEL_MOUNT}/code",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SEMSEARCH_MAX_BATCH": str(config.max_client_batch_size * 8),
        # One model-server worker using every core: several workers that each use all
        # cores oversubscribe the CPU (the handler batches within a request instead).
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
        "SEMSEARCH_THREADS": str(instance.vcpus),
    }


def tei_container_environment(config: EndpointConfig) -> dict[str, str]:
    """Environment of Text Embeddings Inference: the model (from S3 or the Hub) and its batch limits."""
    return {
        "HF_MODEL_ID": MODEL_MOUNT if config.model_data_s3_uri else config.model.hf_id,
        "POOLING": config.model.pooling,
        "MAX_BATCH_TOKENS": str(config.max_batch_tokens),
        "MAX_CLIENT_BATCH_SIZE": str(config.max_client_batch_size),
        "AUTO_TRUNCATE": "true",
    }
