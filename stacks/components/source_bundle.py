"""A deterministic source tarball for SageMaker script mode, built at synth time.

SageMaker's training toolkit wants ``sagemaker_submit_directory`` to be a .tar.gz; CDK
directory assets are zips. So we write the tarball ourselves (sorted entries, zeroed
times and owners, so its hash only changes when the code does) and ship it as a file
asset: no Docker, no network, same bytes on every machine.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from semsearch import container_wheels

REPO_ROOT = Path(__file__).resolve().parents[2]
_SKIP = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def build_tarball(folders: dict[str, Path], files: dict[str, Path], out_dir: Path) -> Path:
    """Pack ``folders`` (archive name → folder) and ``files`` (archive name → file)."""
    entries: list[tuple[str, Path]] = list(files.items())
    for prefix, folder in folders.items():
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not _SKIP.intersection(path.relative_to(folder).parts) and path.suffix != ".pyc":
                entries.append((f"{prefix}/{path.relative_to(folder).as_posix()}", path))
    entries.sort()
    # Named by what goes in, so a synth with unchanged inputs reuses the tarball: compressing
    # the wheels takes seconds, hashing them a fraction of one.
    digest = hashlib.sha256()
    for name, path in entries:
        digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    out = out_dir / f"sourcedir-{digest.hexdigest()[:16]}.tar.gz"
    if out.exists():
        return out
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in entries:
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    partial.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    partial.replace(out)
    return out


def build_training_bundle(out_dir: Path, wheels_dir: Path = container_wheels.WHEEL_DIR,
                          training_wheels_dir: Path = container_wheels.TRAINING_WHEEL_DIR) -> Path:
    """The training job's source tarball; see TrainingSourceBundle."""
    training = REPO_ROOT / "training_code"
    files = {p.name: p for p in sorted(training.iterdir()) if p.is_file() and p.suffix != ".pyc"}
    inference_wheels = container_wheels.wheel_files(wheels_dir)
    for wheel in inference_wheels:
        files[f"inference_code/{container_wheels.CODE_SUBDIR}/{wheel.name}"] = wheel
    # A wheel both sets lock travels once: training_code/requirements.txt looks in both folders.
    shared = {wheel.name for wheel in inference_wheels}
    for wheel in container_wheels.wheel_files(training_wheels_dir, container_wheels.TRAINING_LOCK):
        if wheel.name not in shared:
            files[f"{container_wheels.CODE_SUBDIR}/{wheel.name}"] = wheel
    return build_tarball(folders={"inference_code": REPO_ROOT / "inference_code"}, files=files, out_dir=out_dir)


class TrainingSourceBundle(Construct):
    """training_code/ at the archive root (train.py is the entry point) plus the inference
    handler as ./inference_code, which the job copies into the model as code/. The handler's
    wheels go along as ./inference_code/wheels/: the model it writes is served with network
    isolation, so code/requirements.txt installs from them (semsearch/container_wheels.py).
    train.py's own wheels go along as ./wheels/ (less those already in inference_code/wheels/):
    the training container pip-installs requirements.txt from the two folders only, so the job
    starts with network isolation too. Both sets must be in build/ already (`make wheels`):
    synth never downloads."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        tarball = build_training_bundle(REPO_ROOT / "build" / "bundles")
        self.asset = s3_assets.Asset(self, "Asset", path=str(tarball))

    @property
    def s3_uri(self) -> str:
        return self.asset.s3_object_url
