"""inference_code.embedder and model_info on the real all-MiniLM-L6-v2, against sentence-transformers."""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
from pathlib import Path

import numpy as np
import pytest

from inference_code.embedder import load_embedder, plan_runs
from inference_code.model_info import ModelConfigError, read_model_info

LONG_TEXT = "packaging " * 600  # ~600 tokens: far over the model's 256


@pytest.fixture(scope="module")
def st_model(model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def exact(model_dir):
    return load_embedder(model_dir, mode="exact")


@pytest.fixture(scope="module")
def fast(model_dir):
    # ONNX Runtime int8: what fast mode runs on a CPU without AMX (on one with AMX it runs
    # OpenVINO bf16, tested with the exact mode's paths in test_inference_precision.py).
    return load_embedder(model_dir, mode="fast", cpu_flags=frozenset())


@pytest.fixture(scope="module")
def texts(dev_pairs):
    # Real descriptions of very different lengths, a query-like short one, and an over-long one.
    return [p["text"] for p in dev_pairs[:40]] + ["ssh client", LONG_TEXT]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def linked_copy(src: Path, dst: Path) -> Path:
    """The model folder with every file symlinked, so tests can add or change config files."""
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, target)
    return dst


def test_model_info_comes_from_the_models_own_files(model_dir):
    info = read_model_info(model_dir)
    assert (info.dimension, info.max_tokens, info.pooling, info.normalize) == (384, 256, "mean", True)
    assert (info.query_prefix, info.passage_prefix) == ("", "")


def test_exact_mode_matches_sentence_transformers(exact, st_model, texts):
    reference = st_model.encode(texts, batch_size=32)
    got = exact.embed(texts, "passage")
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    assert cosines(got, reference).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # normalized, as the model says


def test_fast_mode_stays_close_to_fp32(fast, st_model, texts):
    reference = st_model.encode(texts, batch_size=32)
    assert fast.backend.name == "onnx" and "int8" in fast.backend.path.name
    assert cosines(fast.embed(texts), reference).mean() >= 0.99


def test_torch_backend_matches_sentence_transformers(model_dir, st_model, texts):
    embedder = load_embedder(model_dir, mode="exact", backend="torch")
    assert cosines(embedder.embed(texts), st_model.encode(texts)).min() >= 0.9999


def test_overlong_texts_are_truncated_at_max_tokens_not_rejected(exact, st_model):
    longer = LONG_TEXT + " and a tail that lies past the limit"
    assert len(exact.token_ids([longer])[0]) == exact.max_tokens == 256
    a, b = exact.embed([LONG_TEXT, longer])
    assert float(a @ b) > 0.99999  # only the first 256 tokens count
    assert cosines(exact.embed([longer]), st_model.encode([longer])).min() >= 0.9999


def test_request_order_is_kept_whatever_the_lengths(exact, texts):
    shuffled = texts[::-1]
    np.testing.assert_allclose(exact.embed(shuffled), exact.embed(texts)[::-1], atol=1e-6)
    # One at a time (no padding at all) gives the same vectors as a bucketed batch: to fp32's
    # rounding in fp32; in bf16 the kernels' blocking depends on the shape, within the promise.
    one_by_one = np.concatenate([exact.embed([t]) for t in texts[:8]])
    if exact.backend.precision == "fp32":
        np.testing.assert_allclose(one_by_one, exact.embed(texts[:8]), atol=1e-5)
    else:
        assert cosines(one_by_one, exact.embed(texts[:8])).min() >= 0.9999


def test_empty_input_gives_an_empty_array(exact):
    assert exact.embed([]).shape == (0, 384)


def test_unknown_kind_and_mode_are_refused(exact, model_dir):
    with pytest.raises(ValueError, match="kind"):
        exact.embed(["x"], "document")
    with pytest.raises(ValueError, match="mode"):
        load_embedder(model_dir, mode="turbo")


def test_concurrent_callers_get_their_own_results(exact, texts):
    expected = exact.embed(texts)
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = exact.embed(texts[i::4])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        if exact.backend.precision == "fp32":
            np.testing.assert_allclose(results[i], expected[i::4], atol=1e-5)
        else:  # bf16 kernels round by the call's shape (which texts share it): within the promise
            assert cosines(results[i], expected[i::4]).min() >= 0.9999


def test_prompts_of_a_model_saved_by_current_sentence_transformers(st_model, tmp_path, dev_pairs):
    """New layout (pooling_mode key, max length in tokenizer_config) plus query/document prompts."""
    from sentence_transformers import SentenceTransformer

    saved = tmp_path / "saved"
    st_model.save(str(saved))
    config_path = saved / "config_sentence_transformers.json"
    config = json.loads(config_path.read_text())
    config["prompts"] = {"query": "query: ", "document": "passage: "}
    config_path.write_text(json.dumps(config))
    info = read_model_info(saved)
    assert (info.pooling, info.normalize, info.max_tokens) == ("mean", True, 256)
    assert (info.query_prefix, info.passage_prefix) == ("query: ", "passage: ")

    reloaded = SentenceTransformer(str(saved), device="cpu")
    embedder = load_embedder(saved, backend="torch")
    queries = [p["query"] for p in dev_pairs[:5]]
    docs = [p["text"] for p in dev_pairs[:5]]
    assert cosines(embedder.embed(queries, "query"), reloaded.encode(queries, prompt_name="query")).min() >= 0.9999
    assert cosines(embedder.embed(docs, "passage"), reloaded.encode(docs, prompt_name="document")).min() >= 0.9999
    # The prefix really is used: a query embeds differently from the same text as a passage.
    assert cosines(embedder.embed(queries, "query"), embedder.embed(queries, "passage")).max() < 0.999


def test_manifest_fills_in_prefixes_the_model_files_lack(model_dir, tmp_path):
    folder = linked_copy(model_dir, tmp_path / "model")
    (folder / "semsearch.json").write_text(json.dumps({"model_id": "e5-like", "query_prefix": "query: ",
                                                       "passage_prefix": "passage: ", "pooling": "cls"}))
    info = read_model_info(folder)
    assert (info.query_prefix, info.passage_prefix, info.model_id) == ("query: ", "passage: ", "e5-like")
    assert info.pooling == "mean"  # the model's own 1_Pooling config wins over the manifest


def test_unsupported_or_missing_configuration_is_named(model_dir, tmp_path):
    folder = linked_copy(model_dir, tmp_path / "model")
    (folder / "modules.json").unlink()
    with pytest.raises(ModelConfigError, match="no pooling configured"):
        read_model_info(folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(ModelConfigError, match="Dense.*not supported"):
        read_model_info(folder)
    with pytest.raises(ModelConfigError, match="does not exist"):
        read_model_info(tmp_path / "nowhere")


def _brute_force_cost(lengths: list[int], call_cost: int) -> int:
    best = None
    for cuts in itertools.product([False, True], repeat=len(lengths) - 1):
        cost, start = 0, 0
        for i, cut in enumerate([*cuts, True], start=1):
            if cut:
                cost += call_cost + (i - start) * lengths[start]
                start = i
        best = cost if best is None else min(best, cost)
    return best


def test_plan_runs_is_optimal_and_covers_every_text():
    rng = random.Random(7)
    for _ in range(40):
        lengths = sorted((rng.randint(3, 256) for _ in range(rng.randint(1, 9))), reverse=True)
        runs = plan_runs(lengths, call_cost=32, max_run_tokens=10**9)
        assert [s for s, _ in runs] == [0] + [e for _, e in runs[:-1]] and runs[-1][1] == len(lengths)
        cost = sum(32 + (e - s) * lengths[s] for s, e in runs)
        assert cost == _brute_force_cost(lengths, 32)


def test_plan_runs_bounds_the_padded_size_of_a_call():
    lengths = [256] * 100 + [10] * 50
    runs = plan_runs(lengths, max_run_tokens=8192)
    assert all((e - s) * lengths[s] <= 8192 for s, e in runs)
    assert plan_runs([5000], max_run_tokens=100) == [(0, 1)]  # a single text always fits
