"""Every request shape and every bad input of the custom handler, on the real model.

Driven through inference.py's model_fn / input_fn / predict_fn / output_fn, as the SageMaker
toolkits call them (the toolkit's own run of them, from a packaged model, is in
test_package.py; over HTTP in test_serve.py).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from sagemaker_inference.errors import GenericInferenceToolkitError

from inference_code import inference
from inference_code.contracts import EmbeddingService, RequestError, embed_jsonlines, parse_request
from inference_code.packaged_corpus import load_corpus, write_corpus

TEXTS = ["ssh client for secure remote logins", "library for reading PNG images", "a daemon for MIDI routing"]


@pytest.fixture(scope="module")
def service(model_dir, monkeypatch_module):
    monkeypatch_module.setenv("SEMSEARCH_MAX_BATCH", "8")
    return inference.model_fn(str(model_dir))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def call(service, body, content_type="application/json", accept="application/json"):
    """The PyTorch toolkit's default transform: input_fn -> predict_fn -> output_fn."""
    if not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    data = inference.input_fn(body, content_type)
    return inference.output_fn(inference.predict_fn(data, service), accept)


def as_json(payload: bytes):
    return json.loads(payload)


@pytest.fixture(scope="module")
def reference(service):
    return service.embedder.embed(TEXTS, "passage")


def test_bare_array_gives_bare_array_of_arrays(service, reference):
    out = as_json(call(service, TEXTS))
    assert isinstance(out, list) and len(out) == 3 and all(len(v) == 384 for v in out)
    np.testing.assert_allclose(np.array(out, dtype=np.float32), reference, atol=1e-6)


def test_all_embedding_shapes_give_the_same_vectors(service, reference):
    tei = as_json(call(service, {"inputs": TEXTS, "truncate": True}))
    jumpstart = as_json(call(service, {"text_inputs": TEXTS}))
    assert set(jumpstart) == {"embedding"}
    for vectors in (tei, jumpstart["embedding"]):
        np.testing.assert_allclose(np.array(vectors, dtype=np.float32), reference, atol=1e-6)


def test_single_string_shapes(service, reference):
    tei = as_json(call(service, {"inputs": TEXTS[0]}))
    jumpstart = as_json(call(service, {"text_inputs": TEXTS[0]}))
    text = as_json(call(service, TEXTS[0].encode(), content_type="application/x-text"))
    assert len(tei) == 1 and len(jumpstart["embedding"]) == 1 and len(text["embedding"]) == 1
    for vectors in (tei, jumpstart["embedding"], text["embedding"]):
        np.testing.assert_allclose(np.array(vectors[0], dtype=np.float32), reference[0], atol=1e-6)


def test_content_type_parameters_are_ignored(service, reference):
    out = as_json(call(service, json.dumps(TEXTS).encode(), content_type="application/json; charset=utf-8"))
    np.testing.assert_allclose(np.array(out, dtype=np.float32), reference, atol=1e-6)


def test_prompt_name_chooses_query_or_passage(service):
    as_query = as_json(call(service, {"inputs": TEXTS, "prompt_name": "query"}))
    # all-MiniLM-L6-v2 has no prefixes: the kinds agree here (prefix use is tested in test_inference_embedder).
    np.testing.assert_allclose(np.array(as_query, dtype=np.float32), service.embedder.embed(TEXTS, "query"),
                               atol=1e-6)


def test_nn_corpus_ranks_the_corpus_best_first(service):
    corpus = ["an image viewer for PNG and JPEG", "OpenSSH remote login client", "sound mixer", "MIDI bridge daemon"]
    out = as_json(call(service, {"queries": ["secure shell client", "routing MIDI between apps"], "corpus": corpus,
                                 "top_k": 3, "mode": "nn_corpus"}))
    assert len(out) == 2 and all(len(hits) == 3 for hits in out)
    assert out[0][0]["corpus_id"] == 1 and out[1][0]["corpus_id"] == 3
    for hits in out:
        assert set(hits[0]) == {"corpus_id", "score"}
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1


def test_nn_corpus_top_k_is_capped_by_the_corpus_and_defaults_to_10(service):
    out = as_json(call(service, {"queries": ["x"], "corpus": ["a", "b"], "top_k": 5, "mode": "nn_corpus"}))
    assert sorted(h["corpus_id"] for h in out[0]) == [0, 1]
    out = as_json(call(service, {"queries": ["x"], "corpus": [f"doc {i}" for i in range(7)], "mode": "nn_corpus"}))
    assert len(out[0]) == 7  # default top_k 10, capped at the corpus size


def test_nn_train_data_searches_the_packaged_corpus(service, dev_pairs, tmp_path):
    docs = dev_pairs[:30]
    service = EmbeddingService(service.embedder)
    vectors = service.embedder.embed([d["text"] for d in docs], "passage")
    write_corpus(tmp_path, [d["id"] for d in docs], vectors)
    service.corpus = load_corpus(tmp_path)
    out = as_json(call(service, {"queries": [d["query"] for d in docs[:5]], "top_k": 3, "mode": "nn_train_data"}))
    assert len(out) == 5 and all(len(hits) == 3 for hits in out)
    assert set(out[0][0]) == {"id", "score"}
    found = sum(docs[i]["id"] in [h["id"] for h in hits] for i, hits in enumerate(out))
    assert found >= 4  # real retrieval: the paired description is in the top 3 for most queries


def test_jsonlines_keeps_order_and_drops_nothing(service, reference):
    lines = [{"id": i, "text_inputs": TEXTS[i % 3]} for i in range(20)] + [{"id": "last", "text_inputs": TEXTS[0]}]
    body = "\n".join(json.dumps(line) for line in lines) + "\n\n"  # blank lines are skipped
    # 21 lines with a batch limit of 8: JSON Lines are embedded in chunks, never refused for their count.
    out = [json.loads(line) for line in call(service, body.encode(), "application/jsonlines").decode().splitlines()]
    assert [o["id"] for o in out] == [line["id"] for line in lines]
    for line, o in zip(lines, out, strict=True):
        assert set(o) == {"id", "embedding"}
        np.testing.assert_allclose(o["embedding"], reference[TEXTS.index(line["text_inputs"])], atol=1e-6)


def test_embed_jsonlines_streams_the_same_contract(service, reference):
    lines = [json.dumps({"id": f"d{i}", "text_inputs": TEXTS[i % 3]}) + "\n" for i in range(7)]
    out = list(embed_jsonlines(service.embedder, iter(lines), batch_size=3))
    assert all(line.endswith("\n") for line in out)
    rows = [json.loads(line) for line in out]
    assert [r["id"] for r in rows] == [f"d{i}" for i in range(7)]
    np.testing.assert_allclose(rows[4]["embedding"], reference[1], atol=1e-6)
    with pytest.raises(RequestError, match="line 2: text_inputs must be a string"):
        list(embed_jsonlines(service.embedder, ['{"id": 1, "text_inputs": "a"}', '{"id": 2, "text_inputs": 3}']))


BAD_REQUESTS = [
    ([], "application/json", 400, "the array is empty"),
    ({"inputs": []}, "application/json", 400, "inputs is empty"),
    (["ok", 3], "application/json", 400, "item 1 of the array is a number, expected a string"),
    (["ok", None], "application/json", 400, "item 1 of the array is null"),
    ([["nested"]], "application/json", 400, "item 0 of the array is an array"),
    ({"inputs": [{"text": "x"}]}, "application/json", 400, r"inputs\[0\] is an object"),
    ({"text_inputs": 5}, "application/json", 400, "text_inputs must be a string or an array of strings"),
    ("not json", "application/json", 400, "body is not valid JSON"),
    (b"\xff\xfe", "application/json", 400, "not UTF-8"),
    ('"just a string"', "application/json", 400, "expected a JSON array of strings or an object"),
    ({"texts": ["a"]}, "application/json", 400, "expected a JSON array of strings or an object with 'inputs'"),
    ({"inputs": ["a"], "normalize": False}, "application/json", 400, "unknown field.*'normalize'"),
    (["a"], "text/csv", 415, "unsupported content type 'text/csv'"),
    ({"queries": ["a"], "mode": "nn_everything"}, "application/json", 400, 'unknown mode "nn_everything"'),
    ({"queries": ["a"], "mode": "nn_corpus"}, "application/json", 400, "nn_corpus needs 'corpus'"),
    ({"queries": ["a"], "corpus": [], "mode": "nn_corpus"}, "application/json", 400, "corpus is empty"),
    ({"queries": ["a"]}, "application/json", 400, "'queries' needs \"mode\""),
    ({"queries": ["a"], "corpus": ["b"], "top_k": 0, "mode": "nn_corpus"}, "application/json", 400, "top_k"),
    ({"queries": ["a"], "corpus": ["b"], "top_k": True, "mode": "nn_corpus"}, "application/json", 400, "top_k"),
    ({"queries": ["a"], "mode": "nn_train_data"}, "application/json", 400, "no corpus|none"),
    ({"inputs": ["a"], "prompt_name": "title"}, "application/json", 400, "prompt_name"),
    (["a"] * 9, "application/json", 413, "9 texts is over this endpoint's batch limit of 8"),
    ({"queries": ["q"] * 4, "corpus": ["c"] * 5, "mode": "nn_corpus"}, "application/json", 413, "batch limit"),
    (b"", "application/x-text", 400, "empty body"),
    ('{"id": 1, "text_inputs": "a"}\nnot json\n', "application/jsonlines", 400, "line 2 is not valid JSON"),
    ('{"text_inputs": "a"}\n', "application/jsonlines", 400, "line 1 has no 'id'"),
    ("\n\n", "application/jsonlines", 400, "no JSON Lines"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "message"), BAD_REQUESTS,
                         ids=[f"{i}-{case[3][:30]}" for i, case in enumerate(BAD_REQUESTS)])
def test_bad_input_is_a_4xx_with_a_one_line_reason(service, body, content_type, status, message):
    # In the SageMaker PyTorch container the toolkit's own error type carries our status to
    # the client (the toolkit answers anything else with a 500).
    with pytest.raises(GenericInferenceToolkitError) as info:
        call(service, body, content_type)
    assert info.value.status_code == status
    assert "\n" not in info.value.message
    assert re.search(message, info.value.message), info.value.message
    # ... and the handler keeps serving.
    assert len(as_json(call(service, ["still here"]))) == 1


def test_the_same_errors_come_from_the_service_the_local_server_runs(service):
    with pytest.raises(RequestError) as info:
        service.invoke(b"[]", "application/json", "application/json")
    assert (info.value.status, info.value.message) == (400, "the array is empty: send at least one text")


def test_unknown_accept_is_406(service):
    with pytest.raises(GenericInferenceToolkitError) as info:
        call(service, ["a"], accept="text/csv")
    assert info.value.status_code == 406


def test_parse_request_defaults_to_json_when_no_content_type_is_given():
    assert parse_request(b'["a"]', None).texts == ["a"]
