"""Lambda entry point: batch-transform output in S3 -> vectors in the OpenSearch index.

Handler: ``bulk_loader.handler.handler`` (code asset: the lambda/ folder).

Event (every key optional except an input; defaults from the environment in brackets)::

    {"input": "s3://bucket/transform-out/part-0.jsonl.out"   # or a prefix ending in "/",
                                                            # or a list of either
     # or "bucket": "..." with "prefix": "jobs/batch/<job>/" or "key": "<one object>"
     "suffix": ".out",            # with a prefix: only keys ending so [""]
     "index": "documents",        # [INDEX_NAME]
     "vector_field": "embedding", # [EMBEDDING_FIELD, "embedding"]
     "text_field": "text",        # [TEXT_FIELD, "text"]; filled when the input was joined
     "endpoint_name": "semsearch-dev-cpu-1a2b3c4d",  # the endpoint whose model made the vectors
     # or, on a stage on Amazon Bedrock (bulk_loader.embed_bedrock made them):
     "bedrock_model_id": "amazon.titan-embed-text-v2:0",
     "bedrock_parameters": {"dimensions": 512, "normalize": true}}  # what the run sent beside the texts

With ``endpoint_name`` (the batch-embed workflow always gives it) the loader first checks that
the index behind the alias embeds with that endpoint (bulk_loader.serving): otherwise it
writes nothing and raises VersionMismatch; when it does, it writes into that concrete index.
With ``bedrock_model_id`` the check is that the index's connector invokes that Bedrock model
with those parameters (bulk_loader.serving.check_bedrock_model).

Environment: OPENSEARCH_URL; AUTH_MODE (sigv4 | basic | none; default sigv4, region from
AWS_REGION); OPENSEARCH_USERNAME / OPENSEARCH_PASSWORD for basic; CA_FILE; BULK_DOCS (500),
BULK_BYTES (5000000), MAX_ATTEMPTS (6), BACKOFF_S (0.5); LOG_LEVEL (INFO). Logs are one JSON
line each, with the invocation's request id (json_logging).

Returns {"documents_in", "documents_indexed", "documents_failed", "retried", "requests",
"complete", "failures", "objects", "index", "written_to"} when every document was indexed.
Otherwise raises BulkLoadError whose message holds the counts and the first failures by id
(or by "<uri> line <n>" for lines that were not documents), so a Step Functions Catch sees them.
Documents carry ``_id`` = their id, so running the same input again is safe.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from json_logging import lambda_entry, set_level
from opensearch_http import ClientConfigError, OpenSearchClient

from .bulk import BulkWriter, LoadError, Report, vector_dimension
from .serving import check_bedrock_model, check_version
from .source import BadLine, expand, parse_documents, read_lines

log = logging.getLogger(__name__)
LOGGERS = ("bulk_loader", "opensearch_http")
set_level(*LOGGERS)

# Stop reading with this much time left, so the error (and what was done) gets reported.
TIME_RESERVE_MS = 30_000


class BulkLoadError(Exception):
    """Some documents were not indexed; the message says how many, which, and why."""


def _setting(event: dict[str, Any], key: str, env: str, default: str = "") -> str:
    value = event.get(key, os.environ.get(env, default))
    if not isinstance(value, str) or not value:
        raise LoadError(f"{key!r} missing: give it in the event or set {env}")
    return value


def _inputs(event: dict[str, Any]) -> list[str]:
    if "input" in event:
        value = event["input"]
        uris = [value] if isinstance(value, str) else value
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and u for u in uris):
            raise LoadError("'input' must be an s3:// URI or a list of them")
        return uris
    if "bucket" in event and ("key" in event or "prefix" in event):
        where = event["key"] if "key" in event else event["prefix"].rstrip("/") + "/"
        return [f"s3://{event['bucket']}/{where}"]
    raise LoadError("no input: give 'input' (s3:// URI, prefix or list), or 'bucket' with 'prefix' or 'key'")


def client_from_env() -> OpenSearchClient:
    url = os.environ.get("OPENSEARCH_URL")
    if not url:
        raise LoadError("OPENSEARCH_URL is not set (the domain endpoint, https://...)")
    try:
        return OpenSearchClient(
            url,
            auth_mode=os.environ.get("AUTH_MODE", "sigv4"),
            region=os.environ.get("AWS_REGION", ""),
            username=os.environ.get("OPENSEARCH_USERNAME", ""),
            password=os.environ.get("OPENSEARCH_PASSWORD", ""),
            ca_file=os.environ.get("CA_FILE", ""),
        )
    except ClientConfigError as e:
        raise LoadError(f"{e} (AUTH_MODE, AWS_REGION)") from e


def load(event: dict[str, Any], *, client: OpenSearchClient, s3_client: Any = None,
         remaining_ms: Callable[[], int] | None = None,
         sleep: Callable[[float], None] | None = None) -> dict[str, Any]:
    """The handler's work with its collaborators passed in (the tests give a local node)."""
    index = _setting(event, "index", "INDEX_NAME")
    vector_field = _setting(event, "vector_field", "EMBEDDING_FIELD", "embedding")
    text_field = _setting(event, "text_field", "TEXT_FIELD", "text")
    endpoint_name = event.get("endpoint_name")
    if endpoint_name is not None and (not isinstance(endpoint_name, str) or not endpoint_name):
        raise LoadError("'endpoint_name' must be the SageMaker endpoint name the vectors come from")
    bedrock_model_id = event.get("bedrock_model_id")
    bedrock_parameters = event.get("bedrock_parameters", {})
    if bedrock_model_id is not None and (not isinstance(bedrock_model_id, str) or not bedrock_model_id):
        raise LoadError("'bedrock_model_id' must be the Bedrock model id the vectors come from")
    if not isinstance(bedrock_parameters, dict):
        raise LoadError("'bedrock_parameters' must be an object (the body's fixed parameters the run sent)")
    if endpoint_name and bedrock_model_id:
        raise LoadError("give 'endpoint_name' (a SageMaker endpoint) or 'bedrock_model_id', not both: the vectors "
                        "come from one model")
    uris = expand(_inputs(event), suffix=event.get("suffix", ""), s3_client=s3_client)
    dimension = vector_dimension(client, index, vector_field)
    if endpoint_name:
        target = check_version(client, index, endpoint_name)
    elif bedrock_model_id:
        target = check_bedrock_model(client, index, bedrock_model_id, bedrock_parameters)
    else:
        target = index
    report = Report()
    writer = BulkWriter(client, target, report, vector_field=vector_field, text_field=text_field,
                        max_docs=int(os.environ.get("BULK_DOCS", 500)),
                        max_bytes=int(os.environ.get("BULK_BYTES", 5_000_000)),
                        attempts=int(os.environ.get("MAX_ATTEMPTS", 6)),
                        backoff_s=float(os.environ.get("BACKOFF_S", 0.5)), sleep=sleep or time.sleep)
    for uri in uris:
        for number, line in read_lines(uri, s3_client=s3_client):
            if remaining_ms is not None and remaining_ms() < TIME_RESERVE_MS:
                writer.flush()
                raise BulkLoadError(f"out of time at {uri} line {number}: {report.as_dict(10)}; "
                                    "split the input into smaller objects (re-running is safe: ids are kept)")
            for doc in parse_documents(line, f"{uri} line {number}", dimension):
                report.documents_in += 1
                if isinstance(doc, BadLine):
                    report.failed[doc.key] = str(doc).removeprefix(doc.key + ": ")
                else:
                    writer.add(doc)
        log.info("read %s: %d documents so far", uri, report.documents_in)
    writer.flush()
    result = {**report.as_dict(), "objects": uris, "index": index, "written_to": target}
    log.info("bulk load: %d of %d document(s) indexed", report.documents_indexed, report.documents_in,
             extra={"data": {k: v for k, v in result.items() if k != "failures"}})
    if not report.complete:
        raise BulkLoadError(report.summary())
    return result


@lambda_entry(*LOGGERS)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return load(event, client=client_from_env(), remaining_ms=remaining)
