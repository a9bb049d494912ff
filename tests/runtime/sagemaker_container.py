"""Start a model the way the SageMaker PyTorch inference container does, with no network.

What runs for real: CPython 3.12, torch 2.6.0 and the SageMaker PyTorch inference toolkit
from PyPI (tests/runtime/sagemaker_pytorch_container.txt), the toolkit's own requirements
install (``sagemaker_inference.model_server._install_requirements``, as its
``torchserve.start_torchserve`` calls it) and its handler service (``HandlerService``), inside
``unshare -n``: a network namespace with no interface but a downed loopback.

What stands in, and for what:

- The container's site-packages is a venv cached under build/ and kept read-only: each start
  gets a thin venv on the same interpreter that sees it through a .pth file, so what the
  requirements install adds or upgrades lands in the thin venv, as it would land on top of
  the container's packages, and the cached venv stays free of the handler's dependencies.
- TorchServe (Java) does not run: the worker process it would start is a Python process
  with the environment the toolkit prepared (PYTHONPATH = code/), calling the handler
  service's ``initialize`` and ``handle`` with ``Context``, which stands in for TorchServe's
  request context with the members the toolkit uses.
- /opt/ml is a temporary folder named by ``SAGEMAKER_BASE_DIR``, the toolkit's own setting
  for it; the model is unpacked into its ``model/``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

from semsearch.container_wheels import requirements as requirement_pins
from training_code.archives import extract_tar

#: This folder: the container's worker imports torchserve_context from here.
HERE = Path(__file__).resolve().parent

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINER_REQUIREMENTS = Path(__file__).with_name("sagemaker_pytorch_container.txt")
#: The training container's (sagemaker_training_container.py): it shares torch with this one.
TRAINING_CONTAINER_REQUIREMENTS = Path(__file__).with_name("sagemaker_pytorch_training_container.txt")
VENV = REPO_ROOT / "build" / "sagemaker-pytorch-py312"
#: Settings of this machine and of the test session that the container does not have.
ENV_SKIP = ("PIP_", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "SAGEMAKER_", "HF_", "TRANSFORMERS_", "SEMSEARCH_")


def _python312() -> str:
    pyenv_root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("pyenv") else ""
    candidates = sorted(glob.glob(f"{pyenv_root}/versions/3.12*/bin/python3.12")) if pyenv_root else []
    found = candidates[-1] if candidates else shutil.which("python3.12")
    if not found:
        raise RuntimeError("no CPython 3.12 (the container's Python): install it with pyenv or as python3.12")
    return found


def _clean_env(**extra: str) -> dict[str, str]:
    """This machine's pip settings (find-links, cert) and offline switches are not the container's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_SKIP)}
    env.update(extra)
    return env


#: The pins both container stand-ins name alike (torch, numpy, ...): installed once, in a venv that
#: each container venv reads through a .pth file, so the disk holds one torch for the two (a torch
#: with its CUDA libraries is about 5 GB; CI's disk is shared and has run out before).
SHARED_VENV = REPO_ROOT / "build" / "sagemaker-py312-shared"
SHARED_PTH = "_container_site.pth"


def shared_venv() -> Path:
    """The venv of what both container stand-ins pin alike."""
    training = requirement_pins(TRAINING_CONTAINER_REQUIREMENTS)
    shared = [f"{name}=={version}" for name, version in requirement_pins(CONTAINER_REQUIREMENTS).items()
              if training.get(name, "") == version]
    return _build_venv(SHARED_VENV, "".join(f"{pin}\n" for pin in shared))


def cached_venv(venv: Path, requirements: Path) -> Path:
    """A CPython 3.12 venv with ``requirements`` installed, cached at ``venv`` (minutes and a few
    GB the first time; pip's cache makes a rebuild offline). Rebuilt when the file changes. It
    sees the shared venv through a .pth file: pip finds those pins satisfied there."""
    return _build_venv(venv, requirements.read_text(), base=shared_venv())


def _build_venv(venv: Path, requirements: str, base: Path | None = None) -> Path:
    stamp = venv / ".installed"
    base_digest = (base / ".installed").read_text() if base else ""
    digest = hashlib.sha256((requirements + base_digest).encode()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([_python312(), "-m", "venv", str(venv)], check=True)
    if base is not None:
        _write_pth(venv, base)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "install", "-q"]
    subprocess.run([*pip, "pip==25.3"], check=True, env=_clean_env())
    listed = venv / "requirements.txt"
    listed.write_text(requirements)
    subprocess.run([*pip, "-r", str(listed)], check=True, env=_clean_env())
    stamp.write_text(digest)
    return venv


def container_venv() -> Path:
    """The cached stand-in for the inference container's Python."""
    return cached_venv(VENV, CONTAINER_REQUIREMENTS)


def _site_packages(venv: Path) -> Path:
    (found,) = (venv / "lib").glob("python3.*/site-packages")
    return found


def site_packages_chain(venv: Path) -> list[Path]:
    """``venv``'s site-packages, then those it reads through its .pth file, in import order."""
    own = _site_packages(venv)
    pth = own / SHARED_PTH
    return [own, *(Path(line) for line in pth.read_text().splitlines() if line)] if pth.is_file() else [own]


def _write_pth(venv: Path, base: Path) -> None:
    # Python reads .pth files only in its own site-packages, so the whole chain is listed.
    (_site_packages(venv) / SHARED_PTH).write_text("".join(f"{p}\n" for p in site_packages_chain(base)))


def layered_env(base: Path, where: Path) -> Path:
    """A thin venv over ``base``: writes land here, ``base`` is read through a .pth file."""
    subprocess.run([str(base / "bin" / "python"), "-m", "venv", "--without-pip", str(where)], check=True)
    _write_pth(where, base)
    return where / "bin" / "python"


def pack(model_dir: Path, model_tar_gz: Path) -> Path:
    """A model folder as one model.tar.gz with its files at the top, as SageMaker expects a model
    artifact (a training job's output, a channel holding an earlier job's model)."""
    with tarfile.open(model_tar_gz, "w:gz", compresslevel=1) as tar:  # weights hardly compress
        for path in sorted(model_dir.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    return model_tar_gz


def unpack(model_tar_gz: Path, opt_ml: Path) -> Path:
    """model.tar.gz into <opt_ml>/model, as SageMaker unpacks it into /opt/ml/model."""
    model = opt_ml / "model"
    model.mkdir(parents=True)
    with tarfile.open(model_tar_gz) as tar:
        extract_tar(tar, model)
    return model


# The container's start up to TorchServe's launch (start_torchserve), then the worker.
_START = textwrap.dedent('''
    import json, os, subprocess, sys
    from sagemaker_inference import model_server
    from sagemaker_pytorch_serving_container import torchserve

    torchserve._set_python_path()  # code/ on PYTHONPATH, for TorchServe's workers
    if os.path.exists(model_server.REQUIREMENTS_PATH):
        try:
            model_server._install_requirements()
        except ValueError as e:
            print(json.dumps({"install_error": str(e)}))
            sys.exit(3)
    worker = subprocess.run([sys.executable, "-c", sys.argv[1], sys.argv[2]], cwd=os.environ["TMPDIR"])
    sys.exit(worker.returncode)
''')

_WORKER = textwrap.dedent('''
    import json, sys
    from sagemaker_inference import environment
    from sagemaker_pytorch_serving_container.handler_service import HandlerService

    from torchserve_context import Context  # stands in for TorchServe's (tests/runtime)

    service = HandlerService()
    service.initialize(Context(environment.model_dir, {}))
    results = []
    for body, content_type, accept in json.loads(sys.argv[1]):
        context = Context(environment.model_dir, {"Content-Type": content_type, "Accept": accept})
        out = service.handle([{"body": body.encode()}], context)[0]
        results.append([context.status, out if isinstance(out, str) else out.decode()])

    # The GPU path (PyTorch + transformers) on this CPU, to prove it imports and agrees.
    import embedder
    texts = ["ssh client", "portable network graphics library"]
    torch_vectors = embedder.load_embedder(environment.model_dir, backend="torch").embed(texts).tolist()
    onnx_vectors = embedder.load_embedder(environment.model_dir, backend="onnx").embed(texts).tolist()
    # The CPU's bf16 path (OpenVINO from the wheels), and what the handler picks on this CPU.
    openvino_vectors = embedder.load_embedder(environment.model_dir, backend="openvino").embed(texts).tolist()
    path = embedder.load_embedder(environment.model_dir).path
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("semsearch", "stacks", "inference_code"))
    print(json.dumps({"results": results, "torch": torch_vectors, "onnx": onnx_vectors,
                      "openvino": openvino_vectors, "path": path, "leaked": leaked}))
''')


def _netns_prefix() -> list[str]:
    # root: a plain network namespace; otherwise inside a user namespace mapped to root.
    return ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-r", "-n"]


def start_offline(model_tar_gz: Path, work: Path, cases: list, *, timeout: float = 900) -> dict:
    """Unpack, install code/requirements.txt and serve ``cases`` [(body, content type, accept)],
    all with no network. Returns {"results", "torch", "onnx", "openvino", "path", "leaked"}, or {"install_error",
    "stdout"} when the toolkit's requirements install failed."""
    opt_ml = work / "opt-ml"
    unpack(model_tar_gz, opt_ml)
    python = layered_env(container_venv(), work / "container-env")
    tmp = work / "tmp"
    tmp.mkdir()
    env = _clean_env(SAGEMAKER_BASE_DIR=str(opt_ml), TMPDIR=str(tmp), HOME=str(tmp),
                     SEMSEARCH_CACHE_DIR=str(tmp / "semsearch-cache"))
    result = subprocess.run([*_netns_prefix(), str(python), "-c", _START,
                             f"import sys; sys.path.insert(0, {str(HERE)!r})\n" + _WORKER, json.dumps(cases)],
                            capture_output=True, text=True, timeout=timeout, cwd="/", env=env)
    lines = result.stdout.strip().splitlines()
    if result.returncode == 3:
        return {"install_error": json.loads(lines[-1])["install_error"], "stdout": result.stdout,
                "stderr": result.stderr}
    if result.returncode != 0:
        raise AssertionError(f"the container exited with {result.returncode}:\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-8000:]}")
    out = json.loads(lines[-1])
    out["stderr"] = result.stderr
    return out


if __name__ == "__main__":  # build the cached venv ahead of the test: python tests/runtime/sagemaker_container.py
    print(container_venv())
    sys.exit(0)
