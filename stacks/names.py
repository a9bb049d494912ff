"""Names shared by the CDK app and the semsearch CLI: stack names and the search stack's outputs.

The CLI finds a deployed stage by these names (CloudFormation ``describe_stacks``), so the
app and the CLI read them from here. No CDK import: the CLI loads this without aws_cdk.
"""

from __future__ import annotations


def stack_name(stage: str, part: str) -> str:
    """``semsearch-<stage>-<part>``: part is storage, model, search, jobs or ops."""
    return f"semsearch-{stage}-{part}"


class SearchOutputs:
    """Output names of the search stack (stacks/search_stack.py)."""

    #: The ml-commons model the ingest pipeline embeds with (and neural queries use).
    MODEL_ID = "ModelId"
    #: The alias searches and ingests go to (the index behind it is versioned).
    INDEX_NAME = "IndexName"
    #: ``https://`` + the domain's endpoint.
    DOMAIN_ENDPOINT = "DomainEndpoint"
    #: The document field the ingest pipeline embeds, and the k-NN field it writes.
    TEXT_FIELD = "TextField"
    EMBEDDING_FIELD = "EmbeddingField"
