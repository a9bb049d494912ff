"""The local Bedrock stand-in with a fake 384-d embedder, for tests that need its HTTP side
(SigV4, botocore's InvokeModel shape, the models' bodies) but not a model: each text's vector
is a unit vector seeded by the text's hash, the same on every call."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np

from semsearch.local.bedrock import start_stand_in

KEY, SECRET, REGION = "AKSTANDIN", "stand-in-secret", "us-east-1"


def fake_embed(texts):
    rows = []
    for text in texts:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
        v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
        rows.append(v / np.linalg.norm(v))
    return np.stack(rows)


def running_stand_in() -> Iterator:
    """A stand-in for the duration of a fixture (yield from this)."""
    handle = start_stand_in(region=REGION, access_key=KEY, secret_key=SECRET, embed=fake_embed)
    yield handle
    handle.stop()
