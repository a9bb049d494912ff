"""The BEIR layout (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) as evaluate, train and
compare read it (training_code/inputs.py): graded qrels, splits, and errors that name the
file, the line and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training_code import inputs
from training_code.pairs import Pair, PairsError
from training_code.retrieval import score_rankings


def write_beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: dict[str, list[tuple]],
               header: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (folder / "qrels").mkdir(exist_ok=True)
    for split, rows in qrels.items():
        lines = (["query-id\tcorpus-id\tscore"] if header else []) + ["\t".join(map(str, r)) for r in rows]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def beir_from_pairs(folder: Path, rows: list[dict], split: str = "test") -> Path:
    """Debian pairs in the BEIR layout: the package name is the document id, q<i> the query's."""
    corpus = [{"_id": r["id"], "title": "", "text": r["text"]} for r in rows]
    queries = [{"_id": f"q{i}", "text": r["query"]} for i, r in enumerate(rows)]
    return write_beir(folder, corpus, queries, {split: [(f"q{i}", r["id"], 1) for i, r in enumerate(rows)]})


CORPUS = [{"_id": "d1", "title": "Apt", "text": "package manager"}, {"_id": "d2", "text": "editor"},
          {"_id": 3, "title": "", "text": "compiler"}, {"_id": "d4", "text": "not judged"}]
QUERIES = [{"_id": "q1", "text": "install packages"}, {"_id": "q2", "text": "edit text"},
           {"_id": "q3", "text": "only judged irrelevant"}, {"_id": "q9", "text": "another split's query"}]


@pytest.fixture
def beir(tmp_path) -> Path:
    return write_beir(tmp_path / "set", CORPUS, QUERIES, {
        "test": [("q1", "d1", 2), ("q1", "3", 1), ("q2", "d2", 1), ("q2", "d1", 0), ("q3", "d4", 0)],
        "train": [("q9", "d2", 1)]})


def test_a_beir_split_searches_the_whole_corpus_with_graded_relevance(beir):
    data = inputs.load(beir)  # the default split to evaluate: test
    q = data.qrels
    assert (data.format, data.split) == ("beir", "test")
    assert q.documents == ["Apt package manager", "editor", "compiler", "not judged"]  # title + text, all of it
    assert q.queries == ["install packages", "edit text"]  # q3 has no relevant document: left out, counted
    assert data.dropped_queries == 1
    assert q.relevant == [frozenset({0, 2}), frozenset({1})]
    assert q.grades == [{0: 2.0, 2: 1.0}, {1: 1.0}]
    assert data.pairs == [Pair("install packages", "Apt package manager"), Pair("install packages", "compiler"),
                          Pair("edit text", "editor")]
    assert data.describe()["files"][-1].endswith("qrels/test.tsv")


def test_a_qrels_file_names_the_split_and_train_defaults_to_train(beir):
    assert inputs.load(beir / "qrels" / "train.tsv").qrels.queries == ["another split's query"]
    assert inputs.load(beir, default_split="train").split == "train"


def test_graded_ndcg_uses_the_scores_as_gains():
    grades = [{0: 2.0, 2: 1.0}]
    # The grade-1 document first, the grade-2 one second: below the ideal order.
    ranked = np.array([[2, 0, 1, 3, 4, 5, 6, 7, 8, 9]])
    m = score_rankings(ranked, [frozenset(grades[0])], grades)
    dcg, ideal = 1 + 2 / np.log2(3), 2 + 1 / np.log2(3)
    assert m["ndcg@10"] == pytest.approx(dcg / ideal)
    assert m["recall@1"] == 0.5 and m["mrr@10"] == 1.0  # both count as relevant
    # Binary relevance is what pairs give: the same ranking is ideal then.
    assert score_rankings(ranked, [frozenset(grades[0])])["ndcg@10"] == pytest.approx(1.0)


@pytest.mark.parametrize("qrels, message", [
    ([("q1", "d7", 1)], "qrels/test.tsv line 2: corpus-id 'd7' is not in"),
    ([("q1", "d1", 1), ("q5", "d1", 1)], "qrels/test.tsv line 3: query-id 'q5' is not in"),
    ([("q1", "d1", "high")], "qrels/test.tsv line 2: score 'high' is not an integer"),
    ([("q1", "d1")], "qrels/test.tsv line 2: expected 3 tab-separated columns"),
    ([("q1", "d1", 0)], "no judgment scores a document above 0"),
])
def test_qrels_errors_name_file_line_and_problem(tmp_path, qrels, message):
    folder = write_beir(tmp_path / "set", CORPUS, QUERIES, {"test": qrels})
    with pytest.raises(PairsError, match=message.replace("(", r"\(")):
        inputs.load(folder)


@pytest.mark.parametrize("corpus, message", [
    ([{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}], r"corpus.jsonl line 2: duplicate '_id' 'd1' \(first on line 1\)"),
    ([{"text": "a"}], "corpus.jsonl line 1: missing '_id'"),
    ([{"_id": "d1", "text": 5}], "corpus.jsonl line 1: 'text' must be a string, got int"),
    ([{"_id": "d1", "title": "", "text": "  "}], "corpus.jsonl line 1: '_id' 'd1' has no text"),
])
def test_corpus_errors_name_file_and_line(tmp_path, corpus, message):
    folder = write_beir(tmp_path / "set", corpus, QUERIES, {"test": [("q1", "d1", 1)]})
    with pytest.raises(PairsError, match=message):
        inputs.load(folder)


def test_bad_json_and_missing_split(beir):
    with pytest.raises(PairsError, match=r"no qrels/dev.tsv for split 'dev' \(it has test, train"):
        inputs.read_beir(beir, "dev")
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n{"_id": "q2", "text": \n')
    with pytest.raises(PairsError, match="queries.jsonl line 2: not valid JSON"):
        inputs.load(beir)


def test_pairs_files_still_read_as_pairs(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"query": "a", "text": "x"}\n{"query": "a", "text": "y"}\n')
    data = inputs.load(path)
    assert data.format == "pairs" and data.qrels.relevant == [frozenset({0, 1})] and data.qrels.grades is None


def test_the_training_job_reads_beir_for_train_and_eval(beir):
    from training_code.train import Config, prepare_pairs

    config = Config(train=str(beir), eval=str(beir), model_dir="unused", base_model="unused",
                    output_data_dir="unused")
    train_pairs, eval_set, train_info, eval_info = prepare_pairs(config)
    assert train_pairs == [Pair("another split's query", "editor")]  # qrels/train.tsv
    assert eval_set.grades == [{0: 2.0, 2: 1.0}, {1: 1.0}]  # qrels/test.tsv, whole corpus
    assert eval_info == {"source": "eval channel", "files": [str(beir / f) for f in (
        "corpus.jsonl", "queries.jsonl", "qrels/test.tsv")], "pairs": 3, "queries": 2, "documents": 4}
    assert train_info["pairs"] == 1


def test_evaluate_command_scores_a_beir_folder_like_the_same_pairs(tmp_path, dev_pairs, model_dir, capsys):
    from semsearch.cli import main

    rows = dev_pairs[:40]
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    folder = beir_from_pairs(tmp_path / "beir", rows)
    results = []
    for data in (pairs_file, folder / "qrels" / "test.tsv"):
        assert main(["evaluate", "--data", str(data), "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[1]["metrics"] == pytest.approx(results[0]["metrics"], abs=1e-6)
    assert (results[1]["queries"], results[1]["documents"]) == (results[0]["queries"], results[0]["documents"])
    assert main(["evaluate", "--data", str(folder / "qrels" / "dev.tsv")]) == 2  # no such file
    (folder / "qrels" / "test.tsv").write_text("q0\tnot-a-package\t1\n")
    assert main(["evaluate", "--data", str(folder)]) == 2
    assert "qrels/test.tsv line 1: corpus-id 'not-a-package' is not in" in capsys.readouterr().err
