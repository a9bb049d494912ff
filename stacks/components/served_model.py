"""Which model version an endpoint serves, as CloudFormation resolves it at deploy time.

One model version, one endpoint: the endpoint's name carries the version
(``stacks.names.versioned_endpoint_name``), so a change of what defines the vectors (model,
pooling, weights) deploys a new endpoint beside the old one. CloudFormation keeps the old
endpoint when it replaces it (UpdateReplacePolicy: Retain): it serves the old index's
queries until the glue has re-embedded the documents with the new one and moved the alias,
and the glue then deletes it (lambda/search_glue/serving.py).

A fine-tune the workflow promoted is part of the version too, but it is known only at deploy
time: the workflow writes its tag into an SSM parameter (``stacks.names.promotion_parameter``)
and updates the stacks; every deploy reads the parameter again (an SSM parameter type, which
CloudFormation resolves on each create and update), so the next ``cdk deploy`` keeps the
promoted model and CloudFormation and the live endpoint never disagree.

The model stack writes what it serves into two SSM parameters (``serving_parameter``); the
search and ops stacks read those at deploy time (``read_serving``) instead of importing a
value that changes with every model version (CloudFormation refuses to change an export
another stack imports).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from stacks.names import NOT_PROMOTED, promoted_model_key, promotion_parameter, serving_parameter


class PromotedFineTune(Construct):
    """The promotion parameter of one endpoint's model version, read at deploy time.

    ``condition`` holds when a fine-tune was promoted; ``pick(promoted, otherwise)`` is the
    value CloudFormation takes in each case; ``model_data_url`` is the promoted model.
    """

    def __init__(self, scope: Construct, construct_id: str, *, stage: str, endpoint: str, version: str,
                 bucket_name: str) -> None:
        super().__init__(scope, construct_id)
        self.parameter_name = promotion_parameter(stage, endpoint, version)
        self.tag = ssm.StringParameter.value_for_string_parameter(self, self.parameter_name)
        self.condition = cdk.CfnCondition(self, "Promoted", expression=cdk.Fn.condition_not(
            cdk.Fn.condition_equals(self.tag, NOT_PROMOTED)))
        self.model_data_url = f"s3://{bucket_name}/{promoted_model_key(stage, self.tag)}"

    def pick(self, promoted: object, otherwise: object) -> cdk.IResolvable:
        return cdk.Fn.condition_if(self.condition.logical_id, promoted, otherwise)

    def pick_string(self, promoted: str, otherwise: str) -> str:
        return cdk.Token.as_string(self.pick(promoted, otherwise))

    def suffix(self) -> str:
        """``-<tag>`` when promoted, else nothing: what the promotion adds to the endpoint name."""
        return self.pick_string(f"-{self.tag}", "")


def write_serving(scope: Construct, *, stage: str, endpoint: str, endpoint_name: str, model_name: str) -> None:
    """The model stack's record of what serves ``endpoint`` now (read by ``read_serving``)."""
    for what, value in (("endpoint", endpoint_name), ("model", model_name)):
        ssm.StringParameter(scope, f"Serving{what.capitalize()}", parameter_name=serving_parameter(stage, endpoint, what),
                            string_value=value,
                            description=f"semsearch {stage}: the SageMaker {what} serving endpoint {endpoint!r} now")


def read_serving(scope: Construct, *, stage: str, endpoint: str, what: str) -> str:
    """What serves ``endpoint`` (``what``: endpoint or model name), resolved when ``scope``'s
    stack deploys; that stack must deploy after the model stack."""
    return ssm.StringParameter.value_for_string_parameter(scope, serving_parameter(stage, endpoint, what))
