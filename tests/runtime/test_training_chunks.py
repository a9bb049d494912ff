"""--chunk-rows: a batch run as length-sorted chunks gives the embeddings and gradients of
one padded forward, with the real model and real Debian texts of uneven length."""

from __future__ import annotations

import pytest
import torch

from training_code.chunks import chunk_forward


@pytest.fixture(scope="module")
def texts(dev_pairs) -> list[str]:
    return [p["text"] for p in dev_pairs[:36]] + [p["query"] for p in dev_pairs[:4]]


def load(model_dir, rows: int | None):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = 128
    calls = []
    forward = model[0].forward

    def counted(features, **kwargs):
        calls.append(tuple(features["input_ids"].shape))
        return forward(features, **kwargs)

    model[0].forward = counted
    if rows:
        chunk_forward(model[0], rows)
    return model, calls


def embed_and_grad(model, texts):
    model.zero_grad()
    features = model.tokenize(texts)
    embeddings = model(dict(features))["sentence_embedding"]
    (embeddings @ torch.linspace(-1, 1, embeddings.shape[1])).square().sum().backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return embeddings.detach(), grads


def test_chunks_give_the_embeddings_and_gradients_of_one_padded_forward(model_dir, texts):
    plain, plain_calls = load(model_dir, None)
    chunked, chunk_calls = load(model_dir, 8)
    for model in (plain, chunked):
        model.eval()  # no dropout: the two runs must see the same network
    a, grads_a = embed_and_grad(plain, texts)
    b, grads_b = embed_and_grad(chunked, texts)

    width = plain_calls[0][1]
    assert plain_calls == [(40, width)]
    assert [rows for rows, _ in chunk_calls] == [8] * 5
    widths = [w for _, w in chunk_calls]
    assert widths[0] == width and widths == sorted(widths, reverse=True) and widths[-1] < width / 2
    assert sum(w * 8 for w in widths) < 0.7 * 40 * width  # the point: less padding

    assert torch.allclose(a, b, atol=1e-5)
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99999
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 100
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=1e-3, atol=1e-5), name


def test_small_and_left_padded_batches_run_as_they_came(model_dir, texts):
    model, calls = load(model_dir, 8)
    model.eval()
    with torch.no_grad():
        model(dict(model.tokenize(texts[:8])))  # not more than one chunk
        features = model.tokenize(texts[:12])
        mask = features["attention_mask"]
        # The same batch padded on the left: trimming columns would cut real tokens.
        flipped = {k: v.flip(1) if torch.is_tensor(v) and v.shape == mask.shape else v for k, v in features.items()}
        model(flipped)
    assert [rows for rows, _ in calls] == [8, 12] and calls[1] == tuple(mask.shape)
