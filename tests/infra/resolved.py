"""Synthesized stages as CloudFormation resolves them (tests/infra/specs/intrinsics.py), before
and after the fine-tune workflow promoted a model.

A promotion is simulated the way it happens: the workflow writes a tag into the promotion
parameter of each endpoint's model version, and every stack that reads an SSM parameter type
resolves it again on its next update.
"""

from __future__ import annotations

from typing import Any

from tests.infra.specs.intrinsics import Templates

#: What the fine-tune workflow writes: ``ft-`` and the training job's start in base-36
#: milliseconds (8 digits until 2059).
PROMOTION_TAG = "ft-mivq2c1s"


def stage_templates(app: Any, *stages: str, promotion_tag: str | None = None) -> Templates:
    """Every stack of ``stages`` (default: dev and prod) resolved; with ``promotion_tag``, as
    deployed after a promotion of every endpoint's current model version."""
    by_stack = {stack.stack_name: stack.template for stage in (stages or ("dev", "prod"))
                for stack in app.node.find_child(stage).synth().stacks}
    templates = Templates(by_stack)
    if promotion_tag is None:
        return templates
    promotions = [name for name in (templates.resolve(stack, resource["Properties"]["Name"])
                                    for stack, _, resource in templates.all_resources("AWS::SSM::Parameter"))
                  if "/promoted/" in name]
    assert promotions, "no promotion parameter in the templates"
    return Templates(by_stack, ssm_values=dict.fromkeys(promotions, promotion_tag))


def only(templates: Templates, stack: str, type_name: str) -> dict[str, Any]:
    """The properties of the one resource of ``type_name`` in ``stack``, resolved."""
    (resource,) = templates.resources(stack, type_name).values()
    return dict(templates.resolve(stack, resource.get("Properties", {})))


def role_statements(templates: Templates, stack: str, role_prefix: str) -> list[dict[str, Any]]:
    """Resolved statements of the policies attached to the one role whose logical id starts
    with ``role_prefix``."""
    (role_id,) = [k for k in templates.resources(stack, "AWS::IAM::Role") if k.startswith(role_prefix)]
    return [statement for policy in templates.resources(stack, "AWS::IAM::Policy").values()
            if {"Ref": role_id} in policy["Properties"]["Roles"]
            for statement in templates.resolve(stack, policy["Properties"]["PolicyDocument"])["Statement"]]


def state_machine(templates: Templates, name: str) -> dict[str, Any]:
    """The definition of the one state machine named ``name`` (e.g. semsearch-dev-compare), resolved."""
    from tests.infra.specs import states

    (definition,) = [states.definition_of(templates, stack, resource)
                     for stack, logical_id, resource in templates.all_resources("AWS::StepFunctions::StateMachine")
                     if templates.get_att(stack, logical_id, "Name") == name]
    return definition
