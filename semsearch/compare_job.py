"""`semsearch compare` as a SageMaker Processing job: what the container runs.

The compare workflow (stacks/components/compare_workflow.py) starts a processing job in the
SageMaker PyTorch training image, which has torch and numpy but no semsearch. Its inputs:

- ``code``: the compare bundle (``build_compare_bundle``): semsearch's top-level modules,
  stacks/catalog.py and stacks/config/, lambda/endpoint_request/, training_code/ and the
  wheels of training_code/wheels.lock (the packages train.py installs: sentence-transformers
  and its closure), one .tar.gz;
- ``pairs``: our pairs files or a BEIR folder;
- ``model-N``: one candidate each, a sentence-transformers folder or one model.tar.gz (what a
  training job writes, or the base model under training/base-model/).

``BOOTSTRAP`` (the job's ContainerEntrypoint) unpacks the bundle, installs its wheels with no
index (the job may run with network isolation) and runs ``python3 -m semsearch.compare_job``
with the job's ContainerArguments::

    --pairs /opt/ml/processing/input/pairs --out /opt/ml/processing/output
    --model /opt/ml/processing/input/models/0[,name=LABEL] ... [--batch-size N]

which scores the models with `semsearch compare`'s own code (``semsearch.compare.compare``:
same metrics, throughput, k-NN memory and prices) and writes its ``--json`` object to
``OUT/compare.json`` (the table goes to the job's log). `semsearch compare --remote` reads it
back and prints the same table (and the plot: matplotlib stays on the user's machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path

from semsearch.errors import UsageError

RESULT_FILE = "compare.json"
#: Where SageMaker puts the job's inputs and collects its output (the workflow's LocalPaths).
PROCESSING_ROOT = "/opt/ml/processing"
CODE_DIR = f"{PROCESSING_ROOT}/input/code"
PAIRS_DIR = f"{PROCESSING_ROOT}/input/pairs"
MODELS_DIR = f"{PROCESSING_ROOT}/input/models"
OUTPUT_DIR = f"{PROCESSING_ROOT}/output"
#: Most candidates one job scores: ProcessingInputs holds at most 10 (code and pairs take two).
MAX_MODELS = 8
#: The jobs stack's outputs `semsearch compare --remote` reads (stacks/jobs_stack.py).
STATE_MACHINE_OUTPUT = "CompareStateMachine"
INPUT_URI_OUTPUT = "CompareInputUri"
#: Where the CLI uploads a run's pairs and model folders, and where jobs write: under jobs/,
#: which the bucket expires (storage stack), and which the job's role may read and write.
S3_PREFIX = "jobs/compare/"
#: The ContainerEntrypoint's script: ``bash -c BOOTSTRAP compare-job CODE_DIR ARGS...``. It
#: must fit one ContainerEntrypoint item (256 characters). pip's --find-links are the
#: bundle's wheels; training_code/requirements.txt says --no-index and pins the packages.
BOOTSTRAP = ('set -eu; d=$(mktemp -d); tar -xzf "$1"/*.tar.gz -C "$d"; shift; cd "$d"; '
             "python3 -m pip install -q --no-index --find-links wheels -r training_code/requirements.txt; "
             'exec python3 -m semsearch.compare_job "$@"')


def entrypoint(code_dir: str = CODE_DIR) -> list[str]:
    """The processing job's ContainerEntrypoint; its ContainerArguments follow."""
    return ["bash", "-c", BOOTSTRAP, "compare-job", code_dir]


def model_folder(given: Path, work: Path) -> Path:
    """A model input as a sentence-transformers folder: the folder itself, or the one
    model.tar.gz in it unpacked under ``work`` (a training job's output, or a packaged model)."""
    from training_code.archives import extract_tar

    if not given.is_dir():
        raise UsageError(f"--model {str(given)!r}: no such folder (the job's input for this model is missing)")
    if (given / "config.json").is_file() or (given / "modules.json").is_file():
        return given
    archives = sorted(given.glob("*.tar.gz"))
    if len(archives) != 1:
        found = ", ".join(sorted(p.name for p in given.iterdir())[:10]) or "nothing"
        raise UsageError(f"--model {str(given)!r} holds no model: expected a sentence-transformers folder "
                         f"(config.json, modules.json) or one model.tar.gz; found {found}")
    out = Path(tempfile.mkdtemp(prefix=f"{given.name}-", dir=work))
    with tarfile.open(archives[0]) as tar:
        extract_tar(tar, out)
    if not (out / "config.json").is_file() and not (out / "modules.json").is_file():
        raise UsageError(f"{archives[0]} holds no model at its root (no config.json or modules.json)")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m semsearch.compare_job", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", required=True, help="pairs file or folder, or a BEIR folder or qrels file")
    p.add_argument("--model", action="append", required=True, metavar="DIR[,name=LABEL]",
                   help="a model folder, or a folder holding one model.tar.gz; repeatable")
    p.add_argument("--out", required=True, help=f"folder for {RESULT_FILE}")
    p.add_argument("--batch-size", type=int, default=32)
    return p.parse_args(argv)


def compare_args(pairs: str, models: list[str], batch_size: int) -> argparse.Namespace:
    """`semsearch compare`'s own arguments (its parser's defaults) for local models only."""
    from semsearch import compare

    parser = argparse.ArgumentParser()
    compare.register(parser.add_subparsers())
    argv = ["compare", "--pairs", pairs, "--json", "--batch-size", str(batch_size)]
    for model in models:
        argv += ["--model", model]
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> dict:
    """Score the models; write OUT/compare.json; return its object."""
    from semsearch import compare

    args = parse_args(argv)
    if len(args.model) > MAX_MODELS:
        raise UsageError(f"{len(args.model)} models: a job compares at most {MAX_MODELS}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="compare-models-"))
    models = []
    for value in args.model:
        folder, sep, options = value.partition(",")
        models.append(str(model_folder(Path(folder), work)) + sep + options)
    result = compare.compare(compare_args(args.pairs, models, args.batch_size), progress=False)
    compare.print_table(result)
    # Written whole, then renamed: a failed job leaves no compare.json that looks finished.
    partial = out / f".{RESULT_FILE}.partial"
    partial.write_text(json.dumps(result, indent=2), encoding="utf-8")
    os.replace(partial, out / RESULT_FILE)
    return result


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except UsageError as e:
        # The job's FailureReason is its exit; the log says why.
        print(f"compare job: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
