"""How the batch-embed transform job takes its records, and how big they may be.

On a stage on Amazon Bedrock no transform runs: the request lines carry the model's
InvokeModel bodies and bulk_loader.embed_bedrock sends them, one line a call, writing the same
output (``bedrock_requests``, ``bedrock_parameters``).

Pure Python (no CDK import): the workflow (stacks/components/batch_embed_workflow.py) sets
its CreateTransformJob from these, and the local stand-in (semsearch.local.transform) that
the e2e tests and the bench run handles records by the same settings.

Each input line is one request line of bulk_loader.prepare, ``{"ids", "texts", "request"}``:
the endpoint gets the request alone, one line per call (it takes one JSON body, not lines);
its answer, one vector per input, is joined to the line, of which the output keeps the ids,
the texts and the vectors for the loader to pair (bulk_loader.source).
"""

from __future__ import annotations

from typing import Any

from stacks.catalog import BEDROCK_MODELS  # noqa: F401  (puts lambda/, endpoint_request's home, on the import path)
from stacks.config import BedrockConfig, EndpointConfig, JobsConfig

# isort: split
from endpoint_request import bedrock as bedrock_bodies

CONTENT_TYPE = "application/json"
SPLIT_TYPE = "Line"
BATCH_STRATEGY = "SingleRecord"
ASSEMBLE_WITH = "Line"
DATA_PROCESSING = {"InputFilter": "$.request", "JoinSource": "Input",
                   "OutputFilter": "$['ids','texts','SageMakerOutput']"}
#: What the transform adds to each output object's name.
OUTPUT_SUFFIX = ".out"
#: TEI's default request size limit (text-embeddings-router --payload-limit, 2 000 000
#: bytes); the stacks leave it as it is, so a TEI request line stays under it too.
TEI_PAYLOAD_LIMIT = 2_000_000


def request_limits(endpoint: EndpointConfig, jobs: JobsConfig) -> dict[str, int]:
    """Texts per request (what the endpoint takes in one call: the ingest pipeline's batch
    size) and bytes per request line (the job's MaxPayloadInMB, and TEI's own limit)."""
    max_bytes = jobs.transform_max_payload_mb * 1024 * 1024
    if endpoint.flavor == "tei":
        max_bytes = min(max_bytes, TEI_PAYLOAD_LIMIT)
    return {"max_texts": endpoint.max_client_batch_size, "max_bytes": max_bytes}


#: Bytes per request line on Bedrock (its ids, texts and body, which the embed function holds):
#: the body itself stays far under InvokeModel's 25 MB, its texts clipped to the model's limit.
BEDROCK_LINE_BYTES = 6 * 1024 * 1024


def bedrock_requests(bedrock: BedrockConfig) -> dict[str, Any]:
    """What prepare (flavor bedrock) and the embed function are told: the model, its dimension,
    normalize where the model has the option, the model's texts per call, bytes per line."""
    spec = bedrock.model
    request: dict[str, Any] = {"model_id": bedrock.model_id, "dimension": bedrock.embedding_dimension,
                               "max_texts": spec.max_texts, "max_bytes": BEDROCK_LINE_BYTES}
    if spec.normalize_option:
        request["normalize"] = bedrock.normalize
    return request


def bedrock_parameters(bedrock: BedrockConfig) -> dict[str, Any]:
    """The body's fixed parameters for passages (what the index's connector holds beside the
    model id): the loader's check compares them with the connector's."""
    return bedrock_bodies.template_parameters(
        bedrock.model_id, input_type=bedrock_bodies.input_type_for("passage"), dimension=bedrock.embedding_dimension,
        normalize=bedrock.normalize if bedrock.model.normalize_option else None)
