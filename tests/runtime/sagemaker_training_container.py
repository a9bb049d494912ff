"""Run a training job the way the SageMaker PyTorch training container does, with no network.

What runs for real: CPython 3.12, torch 2.6.0 and the SageMaker training toolkit from PyPI
(tests/runtime/sagemaker_pytorch_training_container.txt). The container's ``train`` command
is ``sagemaker_training.trainer.train()``, which imports SAGEMAKER_TRAINING_MODULE
(``sagemaker_pytorch_container.training:main``, as the PyTorch training images set it); that
unpacks ``sagemaker_submit_directory`` into code/, pip-installs code/requirements.txt and runs
``sagemaker_program`` with the hyperparameters as arguments and the SM_* environment. All of it
inside ``unshare -n``: a network namespace with no interface but a downed loopback.

What stands in, and for what:

- The container's site-packages is a venv cached under build/ and kept read-only (a thin venv
  over it per run, as in sagemaker_container.py): what the requirements install adds lands in
  the thin venv, as it would land on top of the container's packages.
- /opt/ml is a temporary folder named by ``SAGEMAKER_BASE_DIR``, the toolkit's own setting for
  it; SageMaker's part (input/config/*.json, the channels under input/data/<channel>) is
  written here as the CreateTrainingJob request describes them.
- SageMaker puts the job's host names (algo-1) in /etc/hosts; this namespace cannot, so
  ``SM_STUDIO_LOCAL_MODE=true`` skips the toolkit's wait for them to resolve (its only effect).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from sagemaker_container import TRAINING_CONTAINER_REQUIREMENTS as CONTAINER_REQUIREMENTS
from sagemaker_container import _clean_env, _netns_prefix, cached_venv, layered_env, site_packages_chain

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV = REPO_ROOT / "build" / "sagemaker-pytorch-training-py312"
#: What the PyTorch training images set: the framework module the toolkit's trainer runs.
TRAINING_MODULE = "sagemaker_pytorch_container.training:main"
#: The container's `train` command (sagemaker_training.cli.train).
_TRAIN = "from sagemaker_training import trainer; trainer.train()"


def container_venv() -> Path:
    """The cached stand-in for the training container's Python."""
    return cached_venv(VENV, CONTAINER_REQUIREMENTS)


def container_packages() -> set[str]:
    """Canonical names (underscores) of what the stand-in container has installed."""
    names = set()
    for site in site_packages_chain(container_venv()):
        for meta in site.glob("*.dist-info"):
            names.add(meta.name.split("-")[0].lower().replace(".", "_"))
    return names


def write_job(opt_ml: Path, *, source_bundle: Path, channels: dict[str, Path], hyperparameters: dict[str, str],
              program: str = "train.py") -> None:
    """SageMaker's side of a job under ``opt_ml``: the channels' files copied to
    input/data/<channel>/, and input/config/{hyperparameters,inputdataconfig,resourceconfig}.json.
    The source bundle arrives as a channel of its own (``source``), as the workflow sends it with
    network isolation, and sagemaker_submit_directory names the file there."""
    config = opt_ml / "input" / "config"
    config.mkdir(parents=True)
    data = opt_ml / "input" / "data"
    all_channels = {**channels, "source": source_bundle}
    for name, src in all_channels.items():
        dest = data / name
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            dest.mkdir(parents=True)
            shutil.copy2(src, dest / src.name)
    hps = {"sagemaker_program": program,
           "sagemaker_submit_directory": str(data / "source" / source_bundle.name),
           "sagemaker_region": "us-east-1", **hyperparameters}
    # SageMaker hands every hyperparameter over as a JSON-encoded string (the SDK's convention).
    (config / "hyperparameters.json").write_text(json.dumps({k: json.dumps(v) for k, v in hps.items()}))
    (config / "inputdataconfig.json").write_text(json.dumps(
        {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
         for name in all_channels}))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0",
         "current_instance_type": "ml.g5.xlarge", "current_group_name": "homogeneousCluster",
         "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "ml.g5.xlarge",
                              "hosts": ["algo-1"]}]}))
    for folder in ("model", "output/data", "code"):
        (opt_ml / folder).mkdir(parents=True, exist_ok=True)


def run_offline(opt_ml: Path, work: Path, *, timeout: float = 900,
                extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The container's `train` command on the job under ``opt_ml``, with no network."""
    python = layered_env(container_venv(), work / "container-env")
    tmp = work / "tmp"
    tmp.mkdir(exist_ok=True)
    env = _clean_env(SAGEMAKER_BASE_DIR=str(opt_ml), SAGEMAKER_TRAINING_MODULE=TRAINING_MODULE,
                     SM_STUDIO_LOCAL_MODE="true", TMPDIR=str(tmp), HOME=str(tmp), **(extra_env or {}))
    return subprocess.run([*_netns_prefix(), str(python), "-c", _TRAIN], capture_output=True, text=True,
                          timeout=timeout, cwd="/", env=env)


if __name__ == "__main__":  # build the cached venv ahead of the test
    print(container_venv())
    sys.exit(0)
