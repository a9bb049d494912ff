"""training_code.archives: the same extraction rule with and without tarfile's filters."""

from __future__ import annotations

import io
import tarfile

import pytest

from training_code.archives import UnsafeArchiveError, extract_tar


def _archive(tmp_path, name: str):
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = 2
        tar.addfile(info, io.BytesIO(b"ok"))
    return path


@pytest.mark.parametrize("filters", [True, False], ids=["with-filters", "python-before-3.11.4"])
def test_members_land_inside_and_escapes_are_refused(tmp_path, monkeypatch, filters):
    if not filters:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    with tarfile.open(_archive(tmp_path, "code/inference.py")) as tar:
        extract_tar(tar, tmp_path / "out")
    assert (tmp_path / "out/code/inference.py").read_bytes() == b"ok"
    with tarfile.open(_archive(tmp_path, "../escaped.py")) as tar, pytest.raises((UnsafeArchiveError, tarfile.TarError)):
        extract_tar(tar, tmp_path / "out2")
    assert not (tmp_path / "escaped.py").exists()
