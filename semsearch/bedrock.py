"""Embedding texts with an Amazon Bedrock model: InvokeModel on a ``bedrock-runtime`` client.

Each model's request body, limits and response shape are defined once, in
lambda/endpoint_request/bedrock.py (it ships in the glue's Lambda asset, where the ml-commons
connector is built from the same templates); this module re-exports them and adds the client:

    embed_texts("cohere.embed-english-v3", texts, input_type="search_query")

splits ``texts`` into calls the model accepts (Titan v2: one text a call; Cohere v3: 96),
clips over-long texts to the documented character limit, and returns one vector per text in
order. ``input_type`` is Cohere's (search_document for what is searched, search_query for the
query); Titan v2 embeds both alike and only checks it is a known type. An unknown model,
a dimension the model does not offer, or an answer of the wrong shape raises
BedrockModelError (a ValueError) naming it; service errors are botocore's ClientError.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import stacks.glue_properties  # noqa: F401  (puts lambda/, endpoint_request's home, on the import path)

# isort: split
from endpoint_request.bedrock import (  # noqa: F401 (re-exported)
    CONTENT_TYPE,
    INPUT_TYPES,
    KIND_INPUT_TYPES,
    MODELS,
    BedrockModel,
    BedrockModelError,
    batches,
    clip,
    dimension_for,
    input_type_for,
    model,
    normalize_for,
    parse_response,
    request_body,
)


def client_for(region: str | None = None) -> Any:
    """A ``bedrock-runtime`` client (boto3's default credentials and, without ``region``, its region)."""
    import boto3

    return boto3.client("bedrock-runtime", region_name=region)


def invoke(client: Any, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """One InvokeModel call with a JSON body; the JSON answer."""
    response = client.invoke_model(modelId=model_id, body=json.dumps(body).encode(), contentType=CONTENT_TYPE,
                                   accept=CONTENT_TYPE)
    answer: dict[str, Any] = json.loads(response["body"].read())
    return answer


def embed_texts(model_id: str, texts: Sequence[str], *, input_type: str, dimension: int | None = None,
                client: Any = None, normalize: bool | None = None) -> list[list[float]]:
    """One vector per text, in order, from Bedrock model ``model_id``.

    ``dimension``: one the model offers (None: its default, 1024 for all three).
    ``normalize``: Titan v2 only (None: unit vectors, the model's default).
    ``client``: a boto3 ``bedrock-runtime`` client (None: a new one, boto3's defaults).
    """
    dim = dimension_for(model_id, dimension)
    # Checked before any call, so bad arguments cost nothing.
    normalize_for(model_id, normalize)
    if input_type not in INPUT_TYPES:
        raise BedrockModelError(f"unknown input_type {input_type!r}; expected one of {', '.join(INPUT_TYPES)}")
    if not texts:
        return []
    client = client if client is not None else client_for()
    vectors: list[list[float]] = []
    for batch in batches(model_id, texts):
        body = request_body(model_id, batch, input_type=input_type, dimension=dim, normalize=normalize)
        vectors.extend(parse_response(model_id, invoke(client, model_id, body), count=len(batch), dimension=dim))
    return vectors
