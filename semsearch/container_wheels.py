"""The wheels our code installs in SageMaker's PyTorch containers, offline.

Two sets, each a closed lock of wheels for the containers' CPython 3.12 on manylinux x86_64:

- the custom flavor's handler in the PyTorch inference container (inference_code/wheels.lock,
  build/inference-wheels/), described below;
- train.py in the PyTorch training container (training_code/wheels.lock, build/training-wheels/):
  with ``jobs.network_isolation`` the job cannot reach PyPI, so the source bundle carries them
  and training_code/requirements.txt installs from them only.

The container pip-installs ``code/requirements.txt`` when it starts, but our models run
with network isolation: the wheels pinned in ``inference_code/wheels.lock`` travel inside
model.tar.gz as ``code/wheels/`` (``semsearch package``, and the training job's output
through the source bundle). They are downloaded from PyPI once, into ``build/inference-wheels/``,
for the container's CPython 3.12 on manylinux x86_64; once there, nothing needs a network.

    python -m semsearch.container_wheels [DIR]     what `make wheels` runs (DIR: the
                                                   inference set's folder; both sets)

Kept free of heavy imports: the CDK app imports it at synth.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK = REPO_ROOT / "inference_code" / "wheels.lock"
WHEEL_DIR = REPO_ROOT / "build" / "inference-wheels"
#: The name the model's code/ folder gives the wheels; inference_code/requirements.txt says
#: ``--find-links wheels``.
CODE_SUBDIR = "wheels"
TRAINING_LOCK = REPO_ROOT / "training_code" / "wheels.lock"
TRAINING_WHEEL_DIR = REPO_ROOT / "build" / "training-wheels"
MAKE_TARGET = "make wheels"
#: The container: CPython 3.12 on Ubuntu 22.04 (glibc 2.35), x86_64.
PIP_PLATFORM_ARGS = ("--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--platform",
                     "manylinux2014_x86_64", "--python-version", "3.12", "--implementation", "cp")


class WheelsMissing(RuntimeError):
    """The wheel folder lacks some of the locked wheels."""


def canonical(name: str) -> str:
    """PEP 503 name, with the underscores wheel file names use."""
    return re.sub(r"[-_.]+", "_", name).lower()


def requirements(path: Path, *, pinned: bool = False) -> dict[str, str | None]:
    """{canonical name: pinned version, or None when unpinned} of a requirements file's
    requirement lines; pip's options (``--no-index``...) and comments are left out.
    ``pinned``: every line must be ``name==version`` (a lock)."""
    pins: dict[str, str | None] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:==([A-Za-z0-9.+!_-]+))?", line)
        if not match or (pinned and match[2] is None):
            expected = "name==version" if pinned else "name or name==version"
            raise ValueError(f"{path}, line {number}: expected {expected}, got {line!r}")
        pins[canonical(match[1])] = match[2]
    return pins


def locked(lock: Path = LOCK) -> dict[str, str]:
    """{canonical name: version} from the lock's ``name==version`` lines."""
    return {name: version for name, version in requirements(lock, pinned=True).items() if version}


def _wheels_by_pin(folder: Path) -> dict[tuple[str, str], Path]:
    found = {}
    for path in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
        name, version = path.name.split("-")[:2]
        found[(canonical(name), version)] = path
    return found


def missing(folder: Path = WHEEL_DIR, lock: Path = LOCK) -> list[str]:
    """``name==version`` of every locked wheel that ``folder`` lacks."""
    found = _wheels_by_pin(folder)
    return [f"{name}=={version}" for name, version in locked(lock).items() if (name, version) not in found]


def wheel_files(folder: Path = WHEEL_DIR, lock: Path = LOCK) -> list[Path]:
    """Exactly the locked wheels in ``folder`` (other files there, stale versions say, are left
    out), sorted by name; raises WheelsMissing naming what is not there and how to get it."""
    absent = missing(folder, lock)
    if absent:
        raise WheelsMissing(
            f"{folder} lacks {len(absent)} of the {len(locked(lock))} wheels in {lock.relative_to(REPO_ROOT)} "
            f"({', '.join(absent[:5])}{', ...' if len(absent) > 5 else ''}): run `{MAKE_TARGET}` "
            "(downloads them from PyPI once)")
    found = _wheels_by_pin(folder)
    return sorted(found[pin] for pin in locked(lock).items())


def download(folder: Path = WHEEL_DIR, lock: Path = LOCK) -> list[Path]:
    """Download the locked wheels into ``folder`` unless they are all there already (then no
    network is used), and return them. The lock is complete, so pip resolves nothing."""
    if missing(folder, lock):
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "download", "--quiet",
                        "--no-deps", *PIP_PLATFORM_ARGS, "--dest", str(folder), "-r", str(lock)], check=True)
    return wheel_files(folder, lock)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0]) if args else WHEEL_DIR
    for where, lock in ((folder, LOCK), (TRAINING_WHEEL_DIR, TRAINING_LOCK)):
        wheels = download(where, lock)
        size = sum(p.stat().st_size for p in wheels)
        print(f"{len(wheels)} wheels, {size / 1e6:.1f} MB in {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
