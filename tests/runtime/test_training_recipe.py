"""The training recipe's options: hard negatives mined with the base model, the best epoch
picked on pairs held out of train, and how bad values for them are refused.

The mined negatives are checked against a ranking computed here with the same model: the
nearest documents that are not the query's own and score below (1 - margin) x the positive.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from semsearch.cli import main as cli
from training_code import train as train_mod
from training_code.pairs import Pair
from training_code.train import Config, InputError, mine_negatives


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def model(model_dir):
    from sentence_transformers import SentenceTransformer

    m = SentenceTransformer(str(model_dir), device="cpu")
    m.max_seq_length = 64
    return m


@pytest.fixture(scope="module")
def pairs(dev_pairs) -> list[Pair]:
    """40 Debian pairs, plus a near-copy of the first document paired with another query:
    for the first query it is the nearest text after its own, and it is not a wrong answer."""
    base = [Pair(p["query"], p["text"]) for p in dev_pairs[:40]]
    # One word changed, within the 64 tokens the model reads.
    assert "enabled system." in base[0].text
    near_copy = Pair(base[0].query + " (setup)", base[0].text.replace("enabled system.", "enabled setup."))
    return [*base, near_copy]


def reference_negatives(model, pairs: list[Pair], n: int, range_min: int,
                        margin: float | None) -> dict[str, list[str]]:
    """Per query: its n negatives as the option promises them, ranked here with the same model
    (margin None: every document that is not the query's own is a candidate)."""
    documents = list(dict.fromkeys(p.text for p in pairs))
    own: dict[str, set[str]] = {}
    for p in pairs:
        own.setdefault(p.query, set()).add(p.text)
    queries = list(own)
    q = model.encode(queries, normalize_embeddings=True)
    d = model.encode(documents, normalize_embeddings=True)
    scores = q @ d.T
    out = {}
    for i, query in enumerate(queries):
        positive = min(scores[i, documents.index(t)] for t in own[query])
        ranked = [j for j in np.argsort(-scores[i], kind="stable")
                  if documents[j] not in own[query]
                  and (margin is None or scores[i, j] <= positive - abs(positive) * margin)]
        out[query] = [documents[j] for j in ranked[range_min:range_min + n]]
    return out


def config(**changes) -> Config:
    return Config(train="-", model_dir="-", base_model="-", output_data_dir="-", seed=7, **changes)


def test_the_near_copy_would_be_the_hardest_negative_without_the_margin(model, pairs):
    # What makes the next test meaningful: by score alone the near-copy is the first
    # candidate for the first query, and within 5% of its positive.
    q, pos, near = model.encode([pairs[0].query, pairs[0].text, pairs[-1].text], normalize_embeddings=True)
    others = model.encode([p.text for p in pairs[1:-1]], normalize_embeddings=True)
    assert q @ near > (others @ q).max()
    assert q @ near > 0.95 * (q @ pos)


@pytest.mark.parametrize("n, range_min", [(2, 0), (3, 2)])
def test_mined_negatives_are_the_nearest_non_answers(model, pairs, n, range_min):
    columns, info = mine_negatives(model, pairs, config(hard_negatives=n, hard_negative_range_min=range_min,
                                                        hard_negative_margin=0.05))
    assert list(columns) == [f"negative_{i}" for i in range(1, n + 1)]
    assert all(len(column) == len(pairs) for column in columns.values())
    rows = [[columns[f"negative_{i}"][r] for i in range(1, n + 1)] for r in range(len(pairs))]
    expected = reference_negatives(model, pairs, n, range_min, 0.05)
    for pair, negatives in zip(pairs, rows, strict=True):
        assert pair.text not in negatives
        assert len(set(negatives)) == n
        assert negatives == expected[pair.query], pair.query
    assert pairs[-1].text not in rows[0]  # the near-copy of the first query's answer
    assert info == {"per_pair": n, "candidates": len(pairs), "range_min": range_min, "range_max": 100,
                    "relative_margin": 0.05, "pairs_filled_randomly": 0, "model": "base"}


def test_the_window_bounds_where_negatives_are_mined(model, pairs):
    # The first query's two nearest documents are its own and the near-copy, which the margin
    # drops: a window of 2 leaves it nothing to mine, so it is filled at random; a window over
    # every document finds exactly the reference's negative for each pair.
    narrow, narrow_info = mine_negatives(model, pairs, config(hard_negatives=1, hard_negative_range_max=2))
    wide, wide_info = mine_negatives(model, pairs, config(hard_negatives=1, hard_negative_range_max=len(pairs)))
    expected = reference_negatives(model, pairs, 1, 0, 0.05)
    assert [wide["negative_1"][r] for r in range(len(pairs))] == [expected[p.query][0] for p in pairs]
    assert (wide_info["range_max"], wide_info["pairs_filled_randomly"]) == (len(pairs), 0)
    assert narrow_info["pairs_filled_randomly"] >= 1
    assert narrow["negative_1"][0] not in (pairs[0].text, pairs[-1].text)


def test_without_a_margin_the_nearest_non_answer_is_the_negative(model, pairs):
    # --hard-negative-margin none: the near-copy, which the base model ranks right after the
    # first query's own document, becomes that query's negative.
    columns, info = mine_negatives(model, pairs, config(hard_negatives=1, hard_negative_margin=None))
    expected = reference_negatives(model, pairs, 1, 0, None)
    assert [columns["negative_1"][r] for r in range(len(pairs))] == [expected[p.query][0] for p in pairs]
    assert columns["negative_1"][0] == pairs[-1].text
    assert (info["relative_margin"], info["pairs_filled_randomly"]) == (None, 0)


def test_a_count_that_is_not_a_number_is_named(capsys):
    with pytest.raises(SystemExit):
        train_mod.build_parser({}).parse_args(["--chunk-rows", "many"])
    assert "argument --chunk-rows: invalid int value: 'many'" in capsys.readouterr().err
    assert train_mod.build_parser({}).parse_args(["--chunk-rows", "none"]).chunk_rows is None


@pytest.mark.parametrize("value, expected", [("none", None), ("None", None), ("", None), ("0", 0.0), ("0.1", 0.1)])
def test_the_margin_reads_none_as_no_margin(value, expected):
    # SageMaker passes hyperparameters as strings: "none" has to reach the miner as None.
    assert train_mod.build_parser({}).parse_args(["--hard-negative-margin", value]).hard_negative_margin == expected


def test_a_pair_short_of_candidates_is_filled_with_other_documents(model, pairs):
    # With a margin of 0.9 almost nothing is far enough below the positive: the pairs the
    # miner gives up on get other training documents, never their own.
    few = pairs[:6]
    columns, info = mine_negatives(model, few, config(hard_negatives=4, hard_negative_margin=0.9))
    assert info["pairs_filled_randomly"] > 0
    for r, pair in enumerate(few):
        negatives = [columns[f"negative_{i}"][r] for i in range(1, 5)]
        assert pair.text not in negatives and len(set(negatives)) == 4
        assert set(negatives) <= {p.text for p in few}


def test_more_negatives_than_documents_is_refused(model, pairs):
    with pytest.raises(InputError, match="--hard-negatives 9: the training set has only 5 distinct documents"):
        mine_negatives(model, pairs[:5], config(hard_negatives=9))


@pytest.mark.parametrize("flag, value, message", [
    ("--hard-negatives", "-1", "--hard-negatives must be 0 (off) or a positive count, got -1"),
    ("--hard-negative-range-min", "-2", "--hard-negative-range-min must be 0 or more, got -2"),
    ("--hard-negative-range-max", "-1", "--hard-negative-range-max must be 0 (the miner's own window) or at least "
                                       "--hard-negative-range-min + --hard-negatives (1), got -1"),
    ("--hard-negative-margin", "1.5", "--hard-negative-margin must be in [0, 1) (a share of the positive's score) "
                                      "or 'none' (keep every candidate), got 1.5"),
    ("--validation-pairs", "-5", "--validation-pairs must be 0 (off) or a positive count, got -5"),
    ("--early-stopping-patience", "0", "--early-stopping-patience must be 1 or more, got 0"),
    ("--loss", "triplet", "--loss must be one of mnrl, symmetric, gist, got 'triplet'"),
    ("--chunk-rows", "-1", "--chunk-rows must be 0 (off) or a positive count, got -1"),
    ("--attention-dropout", "1", "--attention-dropout must be in [0, 1) or 'none' (the base model's own), got 1.0"),
])
def test_bad_recipe_values_are_refused_before_training(tmp_path, capsys, model_dir, dev_pairs, flag, value, message):
    data = write_jsonl(tmp_path / "pairs.jsonl", dev_pairs[:8])
    out = tmp_path / "job"
    assert train_mod.main(["--train", str(data), "--base-model", str(model_dir), "--model-dir", str(out),
                           "--inference-code", "", flag, value]) == 2
    assert f"train.py: error: {message}" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    # semsearch train runs the same check and says the same.
    assert cli(["train", "--train", str(data), "--out", str(tmp_path / "cli"), "--no-code", "--quiet",
                flag, value]) == 2
    assert message in capsys.readouterr().err


def test_recipe_options_run_and_land_in_metrics_json(tmp_path, dev_pairs):
    train = write_jsonl(tmp_path / "train.jsonl", dev_pairs[:56])
    dev = write_jsonl(tmp_path / "dev.jsonl", dev_pairs[100:132])
    out = tmp_path / "out"
    assert cli(["train", "--train", str(train), "--eval", str(dev), "--out", str(out), "--no-code", "--quiet",
                "--epochs", "2", "--batch-size", "16", "--max-seq-length", "32", "--hard-negatives", "2",
                "--hard-negative-range-min", "1", "--hard-negative-margin", "0.1", "--validation-pairs", "8",
                "--early-stopping-patience", "2", "--attention-dropout", "0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    hp = m["hyperparameters"]
    assert (hp["hard_negatives"], hp["hard_negative_range_min"], hp["hard_negative_margin"]) == (2, 1, 0.1)
    assert (hp["validation_pairs"], hp["early_stopping_patience"], hp["attention_dropout"]) == (8, 2, 0.0)
    # A training setting: the saved model keeps the base model's attention dropout.
    assert json.loads((out / "config.json").read_text())["attention_probs_dropout_prob"] == 0.1
    t = m["train"]
    # The 8 validation queries were carved from the 56 training pairs (no sample left any out).
    assert (t["pairs"], t["validation_queries"]) == (48, 8)
    assert t["hard_negatives"] == {"per_pair": 2, "candidates": 48, "range_min": 1, "range_max": 100,
                                   "relative_margin": 0.1, "model": "base",
                                   "pairs_filled_randomly": t["hard_negatives"]["pairs_filled_randomly"]}
    assert t["chunk_rows"] == train_mod.CPU_CHUNK_ROWS  # on CPU, by default
    selection = t["epoch_selection"]
    assert [s["epoch"] for s in selection["scores"]] == [1.0, 2.0]  # patience 2: both epochs run
    assert selection["best_epoch"] == max(selection["scores"], key=lambda s: s["ndcg@10"])["epoch"]
    assert selection["queries"] == 8 and t["epochs_run"] == 2.0


def test_a_hard_negative_model_does_the_mining(tmp_path, dev_pairs, model_dir, monkeypatch):
    # A miner that ranks differently from the base model: the same weights read through the
    # [CLS] token instead of the mean of all tokens.
    from sentence_transformers import SentenceTransformer, models

    base = SentenceTransformer(str(model_dir), device="cpu")
    cls = models.Pooling(base.get_embedding_dimension(), pooling_mode="cls")
    miner_dir = tmp_path / "miner"
    SentenceTransformer(modules=[base[0], cls, models.Normalize()], device="cpu").save(str(miner_dir))
    used = []
    real = train_mod.mine_negatives

    def recording(model, pairs, cfg):  # the real miner; only notes which model it was given
        used.append(model)
        return real(model, pairs, cfg)

    monkeypatch.setattr(train_mod, "mine_negatives", recording)
    train = write_jsonl(tmp_path / "train.jsonl", dev_pairs[:32])
    dev = write_jsonl(tmp_path / "dev.jsonl", dev_pairs[100:116])
    out = tmp_path / "out"
    assert cli(["train", "--train", str(train), "--eval", str(dev), "--out", str(out), "--no-code", "--quiet",
                "--batch-size", "16", "--max-seq-length", "32", "--hard-negative-model", str(miner_dir)]) == 0
    text = dev_pairs[0]["text"]
    miner_vector = SentenceTransformer(str(miner_dir), device="cpu").encode(text, normalize_embeddings=True)
    [model] = used
    assert model.max_seq_length == 32  # reads what the trained model reads
    model.max_seq_length = 256
    assert np.allclose(model.encode(text, normalize_embeddings=True), miner_vector, atol=1e-5)
    assert not np.allclose(base.encode(text, normalize_embeddings=True), miner_vector, atol=1e-2)
    m = json.loads((out / "metrics.json").read_text())
    assert m["train"]["hard_negatives"]["model"] == m["hyperparameters"]["hard_negative_model"] == str(miner_dir)


def test_a_missing_hard_negative_model_is_refused_before_training(tmp_path, capsys, model_dir, dev_pairs):
    data = write_jsonl(tmp_path / "pairs.jsonl", dev_pairs[:8])
    missing = str(tmp_path / "no-such-model")
    assert train_mod.main(["--train", str(data), "--base-model", str(model_dir), "--model-dir", str(tmp_path / "job"),
                           "--inference-code", "", "--hard-negative-model", missing]) == 2
    assert f"hard negative model folder {missing!r} does not exist" in capsys.readouterr().err
    assert cli(["train", "--train", str(data), "--out", str(tmp_path / "cli"), "--no-code", "--quiet",
                "--hard-negative-model", missing]) == 2
    assert f"--hard-negative-model {missing!r} is not a directory" in capsys.readouterr().err
    # A miner with nothing to mine is a mistake, not a no-op.
    assert cli(["train", "--train", str(data), "--out", str(tmp_path / "cli"), "--no-code", "--quiet",
                "--hard-negative-model", str(model_dir), "--hard-negatives", "0"]) == 2
    assert (f"--hard-negative-model {str(model_dir)!r} mines hard negatives: it needs --hard-negatives 1 or more, "
            "got 0") in capsys.readouterr().err
    assert not (tmp_path / "cli").exists() or not any((tmp_path / "cli").iterdir())


@pytest.mark.parametrize("loss, cached", [("symmetric", False), ("gist", True)])
def test_each_loss_trains_and_lands_in_metrics_json(tmp_path, dev_pairs, loss, cached):
    train = write_jsonl(tmp_path / "train.jsonl", dev_pairs[:48])
    dev = write_jsonl(tmp_path / "dev.jsonl", dev_pairs[100:132])
    out = tmp_path / "out"
    assert cli(["train", "--train", str(train), "--eval", str(dev), "--out", str(out), "--no-code", "--quiet",
                "--batch-size", "16", "--max-seq-length", "32", "--loss", loss,
                *(["--cached-loss", "--mini-batch-size", "8"] if cached else [])]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (m["hyperparameters"]["loss"], m["hyperparameters"]["cached_loss"]) == (loss, cached)
    assert m["train"]["probe_loss_after"] < m["train"]["probe_loss_before"]


def test_attention_dropout_reaches_every_attention_layer_and_only_those(model_dir):
    from sentence_transformers import SentenceTransformer

    kwargs, base = train_mod.attention_dropout_override(str(model_dir), 0.0)
    assert (kwargs, base) == ({"attention_probs_dropout_prob": 0.0}, {"attention_probs_dropout_prob": 0.1})
    bert = SentenceTransformer(str(model_dir), device="cpu", config_kwargs=kwargs)[0].auto_model
    layers = bert.encoder.layer
    assert len(layers) == 6
    assert all(layer.attention.self.dropout.p == 0.0 for layer in layers)
    assert all(layer.attention.output.dropout.p == 0.1 for layer in layers)  # hidden dropout stays
    assert train_mod.attention_dropout_override(str(model_dir), None) == ({}, {})


def test_attention_dropout_on_a_model_without_that_setting_is_refused(tmp_path):
    # GPT-2's config calls it attn_pdrop: the option would silently do nothing, so it is refused.
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(InputError, match=r"--attention-dropout: the base model's config \(GPT2Config\) has none of "
                                         r"attention_probs_dropout_prob, attention_dropout"):
        train_mod.attention_dropout_override(str(tmp_path), 0.0)
