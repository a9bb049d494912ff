"""A scale-to-zero endpoint hosts its model as an inference component: the connector must
name it on every call, and only such endpoints get a different physical id."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lambda"))

from search_glue import steps  # noqa: E402
from search_glue.properties import parse  # noqa: E402

from tests.runtime.test_glue_properties import AWS  # noqa: E402


def test_connector_sends_the_inference_component_header():
    props = parse({**AWS, "InferenceComponentName": "semsearch-dev-cpu-model"})
    headers = steps.connector_body(props, "c")["actions"][0]["headers"]
    assert headers["X-Amzn-SageMaker-Inference-Component"] == "semsearch-dev-cpu-model"


def test_no_header_and_unchanged_physical_id_without_a_component():
    plain = parse(AWS)
    assert "X-Amzn-SageMaker-Inference-Component" not in steps.connector_body(plain, "c")["actions"][0]["headers"]
    with_component = parse({**AWS, "InferenceComponentName": "semsearch-dev-cpu-model"})
    assert plain.identity() == {k: v for k, v in with_component.identity().items() if k != "inference_component"}


def test_bad_component_name_is_named():
    import pytest
    from search_glue.properties import PropertyError

    with pytest.raises(PropertyError, match="InferenceComponentName: bad value 'has spaces'"):
        parse({**AWS, "InferenceComponentName": "has spaces"})
