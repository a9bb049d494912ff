"""The retrieval metrics the training gate and `semsearch evaluate` share.

Formula checks use rankings worked out by hand from the definitions; the end-to-end checks
run the real packaged model on real Debian pairs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from semsearch.cli import main
from training_code.contract import METRIC_KEYS
from training_code.pairs import Pair
from training_code.retrieval import build_qrels, score_rankings, top_k


def test_one_relevant_document_at_known_ranks():
    # Query 0 finds its document first, query 1 third, query 2 not in the top 10.
    ranked = np.array([[5, 1, 2, 3, 4, 6, 7, 8, 9, 10],
                       [0, 1, 7, 3, 4, 5, 6, 8, 9, 10],
                       [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]])
    m = score_rankings(ranked, [frozenset({5}), frozenset({7}), frozenset({42})])
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["recall@3"] == pytest.approx(2 / 3)
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert list(m) == list(METRIC_KEYS)


def test_several_relevant_documents():
    # Relevant {3, 9}: 3 at rank 2, 9 at rank 5.
    m = score_rankings(np.array([[0, 3, 1, 2, 9, 4, 5, 6, 7, 8]]), [frozenset({3, 9})])
    assert m["recall@1"] == 0 and m["recall@3"] == pytest.approx(0.5) and m["recall@10"] == 1
    assert m["mrr@10"] == pytest.approx(0.5)
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    assert m["ndcg@10"] == pytest.approx(dcg / (1 + 1 / math.log2(3)))


def test_qrels_group_repeated_queries_and_documents():
    q = build_qrels([Pair("a", "x"), Pair("b", "y"), Pair("a", "z"), Pair("c", "x")])
    assert q.queries == ["a", "b", "c"] and q.documents == ["x", "y", "z"]
    assert q.relevant == [frozenset({0, 2}), frozenset({1}), frozenset({0})]


def test_top_k_matches_a_full_sort_across_chunks():
    rng = np.random.default_rng(0)
    queries, docs = rng.normal(size=(37, 8)), rng.normal(size=(50, 8))
    expected = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    assert np.array_equal(top_k(queries, docs, 10, chunk=16), expected)
    assert top_k(queries, docs[:4], 10).shape == (37, 4)  # fewer documents than k


@pytest.fixture(scope="module")
def eval_file(dev_pairs, tmp_path_factory):
    path = tmp_path_factory.mktemp("evaluate") / "dev.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in dev_pairs[:100]))
    return path


def test_evaluate_command_on_the_packaged_model(eval_file, model_dir, capsys):
    assert main(["evaluate", "--model", str(model_dir), "--data", str(eval_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["pairs"], report["queries"], report["documents"]) == (100, 100, 100)
    m = report["metrics"]
    assert set(m) == set(METRIC_KEYS)
    assert 0 < m["recall@1"] <= m["recall@3"] <= m["recall@10"] <= 1
    assert m["recall@1"] <= m["mrr@10"] <= m["recall@10"]
    # all-MiniLM-L6-v2 finds most Debian descriptions from their summaries among 100.
    assert m["ndcg@10"] > 0.5


@pytest.mark.model  # the default --model: the packaged model, loaded with no fixture
def test_evaluate_command_prints_a_table_for_the_packaged_model(tmp_path, dev_pairs, capsys):
    small = tmp_path / "small.csv"  # CSV works the same as JSONL
    small.write_text("query,text\n" + "".join(f'"{p["query"]}","{p["text"].replace(chr(34), "")}"\n'
                                              for p in dev_pairs[:20]))
    assert main(["evaluate", "--data", str(small)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].endswith("20 queries over 20 documents")
    assert table[1].split() == ["metric", "model"]
    assert [row.split()[0] for row in table[2:]] == list(METRIC_KEYS)
    assert all(0 < float(row.split()[1]) <= 1 for row in table[2:])


def test_evaluate_command_input_errors(tmp_path, model_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "text": "t"}\n{"text": "t"}\n')
    assert main(["evaluate", "--model", str(model_dir), "--data", str(bad)]) == 2
    assert f"{bad} line 2: missing column 'query'" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(bad)]) == 2
    assert "holds no model" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
