"""Every command that takes a model folder checks it the same way (semsearch.models.resolve_model_dir)."""

from __future__ import annotations

import pytest

from semsearch.cli import main
from semsearch.errors import UsageError
from semsearch.models import packaged_model_dir, resolve_model_dir


def test_no_folder_means_the_packaged_model():
    assert resolve_model_dir(None, "--model") == packaged_model_dir()


def test_errors_name_the_flag_and_the_folder_as_given(tmp_path):
    with pytest.raises(UsageError) as raised:
        resolve_model_dir(str(tmp_path / "missing"), "--base-model")
    assert str(raised.value) == f"--base-model {str(tmp_path / 'missing')!r} is not a directory"
    with pytest.raises(UsageError) as raised:
        resolve_model_dir(tmp_path)
    assert str(raised.value) == f"--model-dir {str(tmp_path)!r} holds no model (no config.json or modules.json)"


@pytest.mark.parametrize(("argv", "flag"), [(["embed", "--in", "x.jsonl", "--out", "y.jsonl", "--model"], "--model"),
                                            (["train", "--train", "x.jsonl", "--out", "out", "--base-model"], "--base-model"),
                                            (["evaluate", "--data", "x.jsonl", "--model"], "--model")])
def test_commands_name_their_own_flag(tmp_path, capsys, argv, flag):
    assert main([*argv, str(tmp_path)]) == 2
    assert f"{flag} {str(tmp_path)!r} holds no model" in capsys.readouterr().err
