"""Unpacking a tar archive safely on every Python the code meets.

The training container runs Python 3.12, whose tarfile has extraction filters; the machines
that run the tests and the CLI may have a 3.11 older than 3.11.4, which has none (and fails on
``filter=``). Both get the same rule: no member may land outside the destination.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath


class UnsafeArchiveError(ValueError):
    """A member would be written outside the destination folder."""


def extract_tar(archive: tarfile.TarFile, dest: str | Path) -> None:
    """``archive`` into ``dest``: tarfile's "data" filter where this Python has it; elsewhere
    refuse absolute names, ``..`` parts and links (what that filter refuses outright)."""
    if hasattr(tarfile, "data_filter"):
        archive.extractall(dest, filter="data")
        return
    for member in archive.getmembers():
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts or member.issym() or member.islnk() or member.isdev():
            raise UnsafeArchiveError(f"archive member {member.name!r} would land outside {dest}")
    archive.extractall(dest)  # noqa: S202 - every member checked above
