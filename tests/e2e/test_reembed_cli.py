"""`semsearch reembed` on the local stack (a real node, real endpoints, the real model), and
the progress it reads from a domain while a stage's search stack updates."""

from __future__ import annotations

import json
import shutil

import pytest

from semsearch.local.stack import LocalStack
from semsearch.reembed import reembed_progress
from semsearch.stage import Target
from tests.conftest import free_port
from tests.e2e.conftest import tei_source
from tests.e2e.test_local_cli import cli  # noqa: F401  (the fixture: a stack of its own, always torn down)


@pytest.mark.parametrize("flavor", ["custom", "tei"])
def test_reembed_moves_the_local_stack_to_another_model_with_every_document(cli, dev_pairs, model_dir,  # noqa: F811
                                                                          tmp_path, flavor):
    if flavor == "tei":
        tei_source()  # skipped, with the reason, where no TEI router is found
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in dev_pairs[:40]))
    cli("local", "up", "--flavor", flavor, "--corpus", str(corpus), "--opensearch-port", str(free_port()),
        "--endpoint-port", str(free_port()))
    before = LocalStack().load()

    # Nothing changed: nothing is re-embedded.
    same = json.loads(cli("reembed").stdout)
    assert same["moved"] is False and same["documents"] == 40

    # Another model (here the same weights in another folder: another endpoint, another version).
    other = tmp_path / "tuned"
    shutil.copytree(model_dir, other)
    moved = json.loads(cli("reembed", "--model-dir", str(other)).stdout)
    after = LocalStack().load()
    assert moved["moved"] is True and moved["from"] == before["physical_id"] and moved["to"] == after["physical_id"]
    assert moved["documents"] == 40 and after["model_dir"] == str(other.resolve())
    assert after["flavor"] == flavor
    hits = json.loads(cli("search", "--json", dev_pairs[0]["query"], "-k", "3").stdout)
    assert dev_pairs[0]["id"] in [h["id"] for h in hits["hits"]]

    # A stage's flag on the local stack is a usage error.
    refused = cli("reembed", "--region", "us-east-1", check=False)
    assert refused.returncode == 2 and "--region and --profile apply to a deployed --stage" in refused.stderr


def test_progress_names_the_index_being_filled_and_its_count(opensearch):
    index = "semsearch-e2e-rp-0123456789"
    opensearch.request("PUT", f"/{index}", {"mappings": {"_meta": {"semsearch": {"reembed": {
        "phase": "copy", "source": "semsearch-e2e-rp-aaaaaaaaaa"}}}}})
    try:
        for i in range(3):
            opensearch.request("PUT", f"/{index}/_doc/{i}?refresh=true", {"text": f"doc {i}"})
        target = Target(label="e2e", client=opensearch, alias="documents", model_id="m", text_field="text",
                        embedding_field="embedding")
        assert reembed_progress(target, "semsearch-e2e-rp-*") == (
            f"re-embedding semsearch-e2e-rp-aaaaaaaaaa -> {index}: copy, 3 documents so far")
        assert reembed_progress(target, "semsearch-e2e-none-*") is None
    finally:
        opensearch.request("DELETE", f"/{index}", ok=(404,))
