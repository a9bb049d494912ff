"""Asymmetric models in the glue, without a node: which ml-commons models a model version
gets, what each connector sends, and the search pipeline that binds an index to its query model.

The real ml-commons running these bodies (the painless pre_process included) is
tests/e2e/test_query_passage_models.py.
"""

from __future__ import annotations

import json

from search_glue import steps
from search_glue.properties import parse

TEI = {
    "OpenSearchUrl": "https://search-demo-abc.us-east-1.es.amazonaws.com",
    "Region": "us-east-1",
    "Name": "semsearch-dev",
    "Flavor": "tei",
    "EndpointName": "semsearch-dev-e5",
    "Dimension": "768",
    "ConnectorRoleArn": "arn:aws:iam::123456789012:role/semsearch-connector",
    "IndexName": "documents",
    "SpaceType": "innerproduct",
}
E5 = {"QueryPrefix": "query: ", "PassagePrefix": "passage: "}
BGE = {"QueryPrefix": "Represent this sentence for searching relevant passages: "}


def action(props: dict, kind: str) -> dict:
    return steps.connector_body(parse(props), "c", kind)["actions"][0]


def test_symmetric_models_get_one_model_asymmetric_ones_a_query_model_too():
    assert steps.text_kinds(parse(TEI)) == ("passage",)
    assert steps.text_kinds(parse({**TEI, **E5})) == ("passage", "query")
    assert steps.text_kinds(parse({**TEI, **BGE})) == ("passage", "query")  # a query instruction only
    # The same prompt on both sides is still one way of embedding.
    assert steps.text_kinds(parse({**TEI, "QueryPrefix": "x: ", "PassagePrefix": "x: "})) == ("passage",)


def test_query_objects_are_named_apart_from_the_passage_ones():
    names = steps.Names("semsearch-dev-0123456789", "documents")
    assert names.model_for("passage") == names.model == "semsearch-dev-0123456789"
    assert names.model_for("query") == names.query_model == "semsearch-dev-0123456789-query"
    assert names.connector_for("query") == "semsearch-dev-0123456789-query" != names.connector_for("passage")
    assert names.search_pipeline == "semsearch-dev-0123456789-search-pipeline"


def test_custom_connectors_name_the_kind_for_the_handler():
    custom = {**TEI, "Flavor": "custom", **E5}
    for kind in ("passage", "query"):
        a = action(custom, kind)
        assert a["request_body"] == '{"inputs": ${parameters.input}, "prompt_name": "' + kind + '"}'
        assert a["pre_process_function"] == steps.PRE_PROCESS
        # What ml-commons sends once it fills the parameter in: the handler's own contract.
        sent = json.loads(a["request_body"].replace("${parameters.input}", json.dumps(["a text"])))
        assert sent == {"inputs": ["a text"], "prompt_name": kind}


def test_tei_connectors_prepend_the_catalog_prefix_in_a_pre_process_script():
    passage, query = action({**TEI, **E5}, "passage"), action({**TEI, **E5}, "query")
    assert passage["request_body"] == query["request_body"] == '{"inputs": ${parameters.input}, "truncate": true}'
    assert passage["pre_process_function"] == steps.prefix_script("passage: ")
    assert query["pre_process_function"] == steps.prefix_script("query: ")
    assert "'passage: '" in passage["pre_process_function"] and "'query: '" in query["pre_process_function"]
    # No prefix: ml-commons' own default function, as before.
    assert action(TEI, "passage")["pre_process_function"] == steps.PRE_PROCESS
    bge_passage, bge_query = action({**TEI, **BGE}, "passage"), action({**TEI, **BGE}, "query")
    assert bge_passage["pre_process_function"] == steps.PRE_PROCESS
    assert bge_query["pre_process_function"] == steps.prefix_script(BGE["QueryPrefix"])


def test_prefix_script_escapes_quotes_and_backslashes_for_json_inside_painless():
    script = steps.prefix_script("it's \"q\" \\ é: ")
    # JSON escapes first (\" \\ \u00e9), then each backslash and the quote doubled for painless.
    assert "'it\\'s \\\\\"q\\\\\" \\\\\\\\ \\\\u00e9: '" in script


def test_the_search_pipeline_names_the_query_model_and_adds_hybrid_when_asked():
    plain = steps.search_pipeline_body(parse(TEI), "qm")
    assert plain["request_processors"] == [{"neural_query_enricher": {"default_model_id": "qm"}}]
    assert "phase_results_processors" not in plain
    hybrid = steps.search_pipeline_body(parse({**TEI, "HybridSearch": "true"}), "qm")
    assert hybrid["request_processors"] == plain["request_processors"]
    (normalization,) = hybrid["phase_results_processors"]
    assert normalization["normalization-processor"]["combination"]["parameters"]["weights"] == steps.HYBRID_WEIGHTS


def test_the_index_searches_through_its_pipeline_by_default():
    props = parse({**TEI, **E5})
    names = steps.Names(props.physical_id, props.index_name)
    settings = steps.index_body(props, names)["settings"]["index"]
    assert settings["search"] == {"default_pipeline": names.search_pipeline}
    assert settings["default_pipeline"] == names.ingest_pipeline


def test_teardown_removes_query_objects_too():
    assert {"query_model", "query_connector", "search_pipeline"} <= set(steps.KINDS)
    # A search pipeline an index names as its default goes after the index.
    assert steps.KINDS.index("index") < steps.KINDS.index("search_pipeline")
