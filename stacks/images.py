"""Container image URIs, resolved offline by the SageMaker SDK at synth time.

The SDK knows the ECR registry of every region it supports. We render that knowledge into
a CfnMapping (region → image URI) so one template deploys in any of those regions without
re-synthesis: the stack looks its image up with ``Fn::FindInMap`` on ``AWS::Region``.
"""

from __future__ import annotations

import functools
import logging
import re

import aws_cdk as cdk
from constructs import Construct

# A region the SDK knows for every image family we use; only the registry host differs
# between regions, so the tag is read from here.
_REFERENCE_REGION = "us-east-1"
_PYTHON_VERSION = "py312"


#: The SageMaker PyTorch training image that runs training_code/train.py (the framework version
#: the training code is written and tested for). The serving images' versions are endpoint
#: config fields (EndpointConfig.tei_version, EndpointConfig.pytorch_version).
PYTORCH_TRAINING_VERSION = "2.6.0"

# Our names for the PyTorch containers → (SDK framework, image scope).
_PYTORCH = {"pytorch-inference": "inference", "pytorch-training": "training"}


@functools.cache
def _regions(framework: str, version: str) -> tuple[str, ...]:
    from sagemaker.core import image_uris

    scope = _PYTORCH.get(framework, "inference")
    config = image_uris.config_for_framework("pytorch" if framework in _PYTORCH else framework)
    versions = config[scope]["versions"] if scope in config else config["versions"]
    return tuple(sorted(versions[version]["registries"]))


@functools.cache
def _uri(framework: str, version: str, region: str) -> str:
    from sagemaker.core import image_uris

    # The SDK logs at INFO for every defaulted argument; keep synth output readable.
    logging.getLogger("sagemaker").setLevel(logging.WARNING)
    return str(image_uris.retrieve(framework, region=region, version=version))


@functools.cache
def _pytorch_uri(framework: str, version: str, region: str, accelerated: bool) -> str:
    from sagemaker.core import image_uris

    logging.getLogger("sagemaker").setLevel(logging.WARNING)
    return str(image_uris.retrieve(
        "pytorch", region=region, version=version, py_version=_PYTHON_VERSION,
        instance_type="ml.g5.xlarge" if accelerated else "ml.c6i.xlarge", image_scope=_PYTORCH[framework]))


def image_mapping_values(framework: str, version: str, *, accelerated: bool = False) -> dict[str, dict[str, str]]:
    """{region: {"uri": image}} for every region the SDK knows for this image."""
    values = {}
    for region in _regions(framework, version):
        if framework in _PYTORCH:
            uri = _pytorch_uri(framework, version, region, accelerated)
        else:
            uri = _uri(framework, version, region)
        # The registry account lets the pull policy name the exact repository ARN.
        values[region] = {"uri": uri, "registry": uri.split(".", 1)[0]}
    return values


def image_uri(scope: Construct, framework: str, version: str, *, accelerated: bool = False) -> str:
    """A token for the image URI in the deploying region (one mapping per image per stack)."""
    stack = cdk.Stack.of(scope)
    mapping_id = _mapping_id(framework, version, accelerated)
    mapping = stack.node.try_find_child(mapping_id)
    if mapping is None:
        mapping = cdk.CfnMapping(stack, mapping_id,
                                 mapping=image_mapping_values(framework, version, accelerated=accelerated),
                                 lazy=True)
    assert isinstance(mapping, cdk.CfnMapping)
    return mapping.find_in_map(cdk.Aws.REGION, "uri")


def _mapping_id(framework: str, version: str, accelerated: bool) -> str:
    # Only the PyTorch container has separate CPU and GPU images under one framework name.
    accelerated = accelerated and framework in _PYTORCH
    return "Image" + re.sub(r"[^A-Za-z0-9]", "", f"{framework}{version}{'gpu' if accelerated else ''}".title())


def ecr_repository_arn(scope: Construct, framework: str, version: str, *, accelerated: bool = False) -> str:
    """ARN of the ECR repository behind the image in the deploying region (least-privilege pull)."""
    image_uri(scope, framework, version, accelerated=accelerated)  # make sure the mapping exists
    mapping = cdk.Stack.of(scope).node.find_child(_mapping_id(framework, version, accelerated))
    assert isinstance(mapping, cdk.CfnMapping)
    uri = next(iter(image_mapping_values(framework, version, accelerated=accelerated).values()))["uri"]
    repository = uri.split("/", 1)[1].split(":", 1)[0]
    registry = mapping.find_in_map(cdk.Aws.REGION, "registry")
    return f"arn:{cdk.Aws.PARTITION}:ecr:{cdk.Aws.REGION}:{registry}:repository/{repository}"
