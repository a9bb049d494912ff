"""How the batch-embed transform job takes its records, and how big they may be.

Pure Python (no CDK import): the workflow (stacks/components/batch_embed_workflow.py) sets
its CreateTransformJob from these, and the local stand-in (semsearch.local.transform) that
the e2e tests and the bench run handles records by the same settings.

Each input line is one request line of bulk_loader.prepare, ``{"ids", "texts", "request"}``:
the endpoint gets the request alone, one line per call (it takes one JSON body, not lines);
its answer, one vector per input, is joined to the line, of which the output keeps the ids,
the texts and the vectors for the loader to pair (bulk_loader.source).
"""

from __future__ import annotations

from stacks.config import EndpointConfig, JobsConfig

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
