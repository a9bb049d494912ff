"""`semsearch package`: the artifact the custom flavor deploys, built by the real CLI and then
served by the real SageMaker inference toolkit (sagemaker-inference's Transformer) from the
unpacked folder, with code/ as the only import path for the handler.

The toolkit's request context comes from its model server (MMS/TorchServe), which does not
run here; ToolkitContext below stands in for it with the four members the toolkit uses.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from inference_code.embedder import load_embedder
from training_code.archives import extract_tar

N_DOCS = 60


def cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "semsearch.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, dev_pairs):
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in dev_pairs[:N_DOCS]))
    return path


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory, model_dir, corpus_file):
    out = tmp_path_factory.mktemp("artifact") / "model.tar.gz"
    result = cli("package", "--model-dir", str(model_dir), "--out", str(out), "--corpus", str(corpus_file))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["corpus_documents"] == N_DOCS and summary["dimension"] == 384
    target = tmp_path_factory.mktemp("opt-ml-model")
    with tarfile.open(out) as tar:
        names = tar.getnames()
        extract_tar(tar, target)
    assert not any(name.startswith(("/", "..")) or "__pycache__" in name for name in names)
    return target


def test_layout_is_what_sagemaker_unpacks(unpacked):
    for name in ("model.safetensors", "config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json",
                 "code/inference.py", "code/contracts.py", "code/embedder.py", "code/requirements.txt",
                 "onnx/model.onnx", "onnx/model_int8.onnx", "corpus/embeddings.npy", "corpus/ids.json"):
        assert (unpacked / name).is_file(), name
    manifest = json.loads((unpacked / "semsearch.json").read_text())
    assert manifest == {"model_id": "all-MiniLM-L6-v2", "hf_id": "sentence-transformers/all-MiniLM-L6-v2",
                        "dimension": 384, "max_tokens": 256, "pooling": "mean", "normalize": True,
                        "query_prefix": "", "passage_prefix": ""}
    # code/requirements.txt installs from code/wheels only: the endpoint has no network
    # (tests/runtime/test_container_offline.py starts it that way).
    assert "--no-index" in (unpacked / "code/requirements.txt").read_text()
    from semsearch import container_wheels

    assert sorted(p.name for p in (unpacked / "code/wheels").iterdir()) == \
        sorted(p.name for p in container_wheels.wheel_files())
    assert np.load(unpacked / "corpus/embeddings.npy").shape == (N_DOCS, 384)


def test_packaged_corpus_embeddings_are_the_exact_passage_embeddings(unpacked, model_dir, dev_pairs):
    expected = load_embedder(model_dir).embed([p["text"] for p in dev_pairs[:N_DOCS]], "passage")
    np.testing.assert_allclose(np.load(unpacked / "corpus/embeddings.npy"), expected, atol=1e-5)
    assert json.loads((unpacked / "corpus/ids.json").read_text()) == [p["id"] for p in dev_pairs[:N_DOCS]]


TOOLKIT_SCRIPT = textwrap.dedent('''
    import json, sys
    model_dir, cases = sys.argv[1], json.loads(sys.argv[2])
    sys.path.insert(0, model_dir + "/code")  # what SageMaker does with code/
    from sagemaker_inference.transformer import Transformer

    sys.path.insert(0, sys.argv[3])
    from torchserve_context import Context  # stands in for TorchServe's (tests/runtime)

    transformer = Transformer()
    results = []
    for body, content_type, accept in cases:
        context = Context(model_dir, {"Content-Type": content_type, "Accept": accept})
        out = transformer.transform([{"body": body.encode()}], context)[0]
        results.append([context.status, out if isinstance(out, str) else out.decode()])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("semsearch", "stacks", "inference_code"))
    print(json.dumps({"results": results, "leaked": leaked}))
''')


def run_toolkit(unpacked, cases, env=None):
    import os

    result = subprocess.run([sys.executable, "-c", TOOLKIT_SCRIPT, str(unpacked), json.dumps(cases),
                             str(Path(__file__).parent)],
                            capture_output=True, text=True, timeout=600, cwd=unpacked,
                            env={**os.environ, "PYTHONSAFEPATH": "1", **(env or {})})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["leaked"] == []  # code/ is self-contained: nothing of the repository was imported
    return out["results"]


def test_the_sagemaker_toolkit_serves_the_unpacked_artifact(unpacked, model_dir, dev_pairs):
    queries = [p["query"] for p in dev_pairs[:10]]
    cases = [
        (json.dumps(["ssh client", "png library"]), "application/json", "application/json"),
        (json.dumps({"queries": queries, "top_k": 3, "mode": "nn_train_data"}), "application/json", None),
        ('{"id": "a", "text_inputs": "ssh client"}\n{"id": "b", "text_inputs": "png library"}\n',
         "application/jsonlines", "application/jsonlines"),
        ("[]", "application/json", "application/json"),
        ("a,b", "text/csv", "application/json"),
        (json.dumps({"queries": ["x"], "mode": "nn_corpus"}), "application/json", "application/json"),
    ]
    (s1, bare), (s2, nn), (s3, lines), (s4, empty), (s5, csv), (s6, no_corpus) = run_toolkit(unpacked, cases)

    assert s1 == 200
    np.testing.assert_allclose(np.array(json.loads(bare), dtype=np.float32),
                               load_embedder(model_dir).embed(["ssh client", "png library"]), atol=1e-5)
    assert s2 == 200
    hits = json.loads(nn)
    assert len(hits) == 10 and all(len(h) == 3 and set(h[0]) == {"id", "score"} for h in hits)
    assert sum(dev_pairs[i]["id"] in [h["id"] for h in hits[i]] for i in range(10)) >= 7
    assert s3 == 200 and [json.loads(line)["id"] for line in lines.splitlines()] == ["a", "b"]
    # Our 4xx statuses reach the client through the toolkit's own error type.
    assert s4 == 400 and "the array is empty" in empty
    assert s5 == 415 and "unsupported content type" in csv
    assert s6 == 400 and "needs 'corpus'" in no_corpus


def test_the_toolkit_runs_the_fast_mode_and_the_batch_limit_from_the_environment(unpacked):
    cases = [(json.dumps(["a"] * 3), "application/json", "application/json"),
             (json.dumps(["a", "b"]), "application/json", "application/json")]
    (s1, over), (s2, ok) = run_toolkit(unpacked, cases, env={"SEMSEARCH_MODE": "fast", "SEMSEARCH_MAX_BATCH": "2"})
    assert s1 == 413 and "batch limit of 2" in over
    assert s2 == 200 and len(json.loads(ok)) == 2


def test_a_model_that_contradicts_its_catalog_entry_is_refused(model_dir, tmp_path):
    result = cli("package", "--model-dir", str(model_dir), "--out", str(tmp_path / "m.tar.gz"),
                 "--model-id", "bge-small-en-v1.5")
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert "does not match the catalog: pooling: the model's files say 'mean'" in message
    assert "catalog entry bge-small-en-v1.5 says 'cls'" in message
    assert not (tmp_path / "m.tar.gz").exists()


def test_unknown_model_ids_and_bad_corpus_lines_are_named(model_dir, tmp_path):
    result = cli("package", "--out", str(tmp_path / "m.tar.gz"), "--model-id", "no-such-model")
    assert result.returncode == 2 and "'no-such-model' is not in the catalog" in result.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "text": "fine"}\n{"id": 2}\n')
    result = cli("package", "--out", str(tmp_path / "m.tar.gz"), "--corpus", str(bad))
    assert result.returncode == 2 and "line 2: expected an object with 'id' and a string 'text'" in result.stderr
