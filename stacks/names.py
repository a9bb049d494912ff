"""Names shared by the CDK app and the semsearch CLI: stacks, endpoints and the search stack's outputs.

The CLI finds a deployed stage by these names (CloudFormation ``describe_stacks``), so the
app and the CLI read them from here. No CDK import: the CLI loads this without aws_cdk.
"""

from __future__ import annotations


def stack_name(stage: str, part: str) -> str:
    """``semsearch-<stage>-<part>``: part is storage, model, search, jobs or ops."""
    return f"semsearch-{stage}-{part}"


def endpoint_name(stage: str, name: str) -> str:
    """The stem of one configured endpoint's SageMaker endpoint names: ``semsearch-<stage>-<name>``.

    The endpoint itself is named per model version (``versioned_endpoint_name``): a model
    change deploys the new version beside the old one, which serves the old index until the
    glue has re-embedded the documents and moved the alias.
    """
    return f"semsearch-{stage}-{name}"


def versioned_endpoint_name(stage: str, name: str, version: str) -> str:
    """``semsearch-<stage>-<name>-<version>``; a promoted fine-tune adds ``-<tag>`` at deploy time."""
    return f"{endpoint_name(stage, name)}-{version}"


def serving_parameter(stage: str, endpoint: str, what: str) -> str:
    """SSM parameter the model stack writes with what serves an endpoint now (``what``:
    ``endpoint``, the SageMaker endpoint name; ``model``, its SageMaker model name). Other
    stacks read it at deploy time instead of importing a value that changes with the model."""
    return f"/semsearch-{stage}/{endpoint}/serving-{what}"


def promotion_parameter(stage: str, endpoint: str, version: str) -> str:
    """SSM parameter naming the fine-tune promoted onto one model version: ``none``, or the
    tag of the training job whose model serves instead (``ft-<millis>``; the job is
    ``semsearch-<stage>-<tag>``). Keyed by the version, so a new base model starts unpromoted."""
    return f"/semsearch-{stage}/{endpoint}/promoted/{version}"


#: The value of a promotion parameter before any promotion.
NOT_PROMOTED = "none"

#: Where the fine-tune workflow keeps a promoted model in the artifact bucket: outside
#: jobs/, whose objects expire, because the endpoint reads it again at every scale-out.
PROMOTED_MODELS_PREFIX = "models/"


def promoted_model_key(stage: str, tag: str) -> str:
    """The artifact-bucket key of the model a promotion with ``tag`` serves."""
    return f"{PROMOTED_MODELS_PREFIX}semsearch-{stage}-{tag}/model.tar.gz"


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


# --- Putting a stage on the model version it should serve: one rule for the fine-tune
# workflow's promotion (JSONata) and `semsearch reembed --stage` (Python) -------------------

#: The stacks a model version goes live through, in deploy order: the model stack reads the
#: promotion, the search and ops stacks what serves.
MODEL_VERSION_STACK_PARTS = ("model", "search", "ops")
#: UpdateStack with the current template needs the capabilities the stacks were deployed with.
STACK_UPDATE_CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
#: CloudFormation's ValidationError message when nothing the stack reads has changed: done.
STACK_UNCHANGED_MESSAGE = "No updates are to be performed"
#: A stack status containing this is still moving: wait.
STACK_BUSY_MARKER = "IN_PROGRESS"
#: The one settled status that means the update went live; any other settled status
#: (UPDATE_ROLLBACK_COMPLETE, UPDATE_ROLLBACK_FAILED, ...) means the old version serves on.
STACK_UPDATED = "UPDATE_COMPLETE"
