"""The compare workflow's processing job (semsearch/compare_job.py) on 120 Debian pairs with the
real all-MiniLM-L6-v2, laid out as SageMaker lays out the job's inputs: the pairs folder, one
model as a folder and one as a model.tar.gz. It scores them with `semsearch compare`'s own
code, so its compare.json holds the figures `semsearch compare` prints on a laptop.

Then the job the container's way: the compare bundle synth builds, unpacked and installed by
the job's own ContainerEntrypoint (compare_job.BOOTSTRAP) in the stand-in for the SageMaker
PyTorch training image (CPython 3.12, torch 2.6, no semsearch; tests/runtime/
sagemaker_training_container.py), inside ``unshare -n``: with no network its packages can come
from the bundle's wheels only, as in a job with network isolation.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from sagemaker_container import pack

from semsearch import compare_job
from semsearch.cli import main as cli
from training_code.contract import METRIC_KEYS

PAIRS = 120


@pytest.fixture(scope="module")
def job_inputs(module_tmp, dev_pairs, model_dir) -> dict[str, Path]:
    """/opt/ml/processing/input as the workflow's inputs fill it: pairs/, models/0 (a model
    folder, as training/base-model/ holds it), models/1 (one model.tar.gz, as a training job
    writes it)."""
    root = module_tmp.mktemp("processing")
    pairs = root / "input" / "pairs"
    pairs.mkdir(parents=True)
    (pairs / "dev.jsonl").write_text("".join(json.dumps(p) + "\n" for p in dev_pairs[:PAIRS]))
    models = root / "input" / "models"
    models.mkdir()
    (models / "0").symlink_to(model_dir, target_is_directory=True)
    (models / "1").mkdir()
    pack(model_dir, models / "1" / "model.tar.gz")
    return {"root": root, "pairs": pairs, "models": models}


def _arguments(inputs: dict[str, Path], out: Path) -> list[str]:
    """The job's ContainerArguments, as the workflow writes them, with these paths."""
    return ["--pairs", str(inputs["pairs"]), "--out", str(out), "--batch-size", "32",
            f"--model={inputs['models'] / '0'},name=base-folder",
            f"--model={inputs['models'] / '1'},name=base-archive,model=all-MiniLM-L6-v2"]


@pytest.fixture(scope="module")
def laptop(job_inputs) -> dict:
    """`semsearch compare --json` on the same pairs with the packaged model."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(["compare", "--pairs", str(job_inputs["pairs"] / "dev.jsonl"), "--model", "all-MiniLM-L6-v2",
                    "--json"]) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def job_result(job_inputs) -> dict:
    out = job_inputs["root"] / "output"
    assert compare_job.main(_arguments(job_inputs, out)) == 0
    return {"out": out, "result": json.loads((out / compare_job.RESULT_FILE).read_text())}


def test_the_job_writes_compare_json_with_every_model(job_result):
    result = job_result["result"]
    assert result["schema_version"] == 1
    assert [c["name"] for c in result["candidates"]] == ["base-folder", "base-archive"]
    assert result["data"]["format"] == "pairs" and result["data"]["pairs"] == PAIRS
    assert [p.name for p in job_result["out"].iterdir()] == [compare_job.RESULT_FILE]  # no partial file left
    for candidate in result["candidates"]:
        assert candidate["kind"] == "model" and candidate["dimension"] == 384
        assert set(candidate["metrics"]) == set(METRIC_KEYS)


def test_the_folder_and_the_archive_are_the_same_model(job_result):
    folder, archive = job_result["result"]["candidates"]
    assert folder["metrics"] == archive["metrics"]
    assert archive["catalog_id"] == "all-MiniLM-L6-v2"


def test_the_job_scores_as_semsearch_compare_does_on_a_laptop(job_result, laptop):
    (reference,) = laptop["candidates"]
    for candidate in job_result["result"]["candidates"]:
        assert candidate["metrics"] == reference["metrics"]
        assert candidate["knn_memory_gib_per_million_docs"] == reference["knn_memory_gib_per_million_docs"]
    assert job_result["result"]["data"]["queries"] == laptop["data"]["queries"]


def test_a_model_input_without_a_model_fails_naming_it(job_inputs, tmp_path, capsys):
    empty = tmp_path / "models" / "0"
    empty.mkdir(parents=True)
    (empty / "notes.txt").write_text("not a model")
    assert compare_job.main(["--pairs", str(job_inputs["pairs"]), "--out", str(tmp_path / "out"),
                             f"--model={empty}"]) == 2
    err = capsys.readouterr().err
    assert f"--model '{empty}' holds no model" in err and "notes.txt" in err
    assert not (tmp_path / "out" / compare_job.RESULT_FILE).exists()


def test_more_models_than_the_job_has_inputs_for_are_refused(job_inputs, tmp_path, capsys):
    models = [f"--model={job_inputs['models'] / '0'}"] * (compare_job.MAX_MODELS + 1)
    assert compare_job.main(["--pairs", str(job_inputs["pairs"]), "--out", str(tmp_path), *models]) == 2
    assert f"at most {compare_job.MAX_MODELS}" in capsys.readouterr().err


def test_the_entrypoint_fits_the_api():
    # ContainerEntrypoint items are at most 256 characters (botocore's sagemaker model).
    assert all(len(item) <= 256 for item in compare_job.entrypoint())


# -- the container's way, with no network -------------------------------------------------------

@pytest.fixture(scope="module")
def container_job(job_inputs, module_tmp) -> dict:
    from sagemaker_container import _clean_env, _netns_prefix, layered_env
    from sagemaker_training_container import container_venv

    from stacks.components.compare_workflow import build_compare_bundle

    work = module_tmp.mktemp("container-job")
    code = work / "input" / "code"
    code.mkdir(parents=True)
    bundle = build_compare_bundle(work / "bundles")
    os.link(bundle, code / bundle.name)
    python = layered_env(container_venv(), work / "container-env")
    tmp = work / "tmp"
    tmp.mkdir()
    out = work / "output"
    env = _clean_env(PATH=f"{python.parent}:/usr/bin:/bin", TMPDIR=str(tmp), HOME=str(tmp), HF_HUB_OFFLINE="1",
                     TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    result = subprocess.run([*_netns_prefix(), *compare_job.entrypoint(str(code)), *_arguments(job_inputs, out)],
                            capture_output=True, text=True, timeout=1200, cwd="/", env=env)
    return {"result": result, "out": out, "env": work / "container-env", "bundle": bundle}


def test_the_bundle_runs_the_job_offline_in_the_container(container_job, job_result):
    result = container_job["result"]
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    compared = json.loads((container_job["out"] / compare_job.RESULT_FILE).read_text())
    assert [c["name"] for c in compared["candidates"]] == ["base-folder", "base-archive"]
    # torch 2.6 in the container, this machine's torch here: the same ranking metrics.
    for ours, theirs in zip(job_result["result"]["candidates"], compared["candidates"], strict=True):
        assert theirs["metrics"] == pytest.approx(ours["metrics"], abs=1e-3)
    assert "base-archive" in result.stdout  # the table, in the job's log


def test_the_container_installed_the_bundles_wheels_and_has_no_semsearch(container_job):
    from sagemaker_container import _site_packages

    from semsearch import container_wheels

    installed = {}
    for info in _site_packages(container_job["env"]).glob("*.dist-info"):
        name, version = info.name.removesuffix(".dist-info").split("-")[:2]
        installed[container_wheels.canonical(name)] = version
    locked = container_wheels.locked(container_wheels.TRAINING_LOCK)
    assert installed["sentence_transformers"] == locked["sentence_transformers"]
    assert installed["rich"] == locked["rich"]
    assert "semsearch" not in installed  # the code came from the bundle, unpacked in the job
    with tarfile.open(container_job["bundle"]) as tar:
        names = set(tar.getnames())
    assert {"semsearch/compare_job.py", "semsearch/compare.py", "semsearch/prices.json", "stacks/catalog.py",
            "training_code/retrieval.py", "training_code/requirements.txt",
            "lambda/endpoint_request/bedrock.py"} <= names
    assert not any(n.startswith(("semsearch/local/", "stacks/components/", "inference_code/")) for n in names)
