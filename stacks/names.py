"""Names shared by the CDK app and the semsearch CLI: stacks, endpoints and the search stack's outputs.

The CLI finds a deployed stage by these names (CloudFormation ``describe_stacks``), so the
app and the CLI read them from here. No CDK import: the CLI loads this without aws_cdk.
"""

from __future__ import annotations


def stack_name(stage: str, part: str) -> str:
    """``semsearch-<stage>-<part>``: part is storage, model, search, jobs or ops."""
    return f"semsearch-{stage}-{part}"


def endpoint_name(stage: str, name: str) -> str:
    """The SageMaker endpoint name of one configured endpoint (stable: the connector URL uses it)."""
    return f"semsearch-{stage}-{name}"


def inference_component_name(endpoint: str) -> str:
    """The inference component that hosts the model of a scale-to-zero endpoint."""
    return f"{endpoint}-model"


class SearchOutputs:
    """Output names of the search stack (stacks/search_stack.py)."""

    #: The ml-commons model the ingest pipeline embeds documents with.
    MODEL_ID = "ModelId"
    #: The model neural queries are embedded with: the index's search pipeline names it, so
    #: queries need not (the same as MODEL_ID for a symmetric model).
    QUERY_MODEL_ID = "QueryModelId"
    #: The alias searches and ingests go to (the index behind it is versioned).
    INDEX_NAME = "IndexName"
    #: ``https://`` + the domain's endpoint.
    DOMAIN_ENDPOINT = "DomainEndpoint"
    #: The document field the ingest pipeline embeds, and the k-NN field it writes.
    TEXT_FIELD = "TextField"
    EMBEDDING_FIELD = "EmbeddingField"
