"""Print who deploys on a push to main, for CI: ``python -m stacks.deploy_path`` → ``deploy=github``.

The value is cdk.json's ``deploy`` context ("pipeline" or "github"), validated with the rest of
the config. The line is in GITHUB_OUTPUT's key=value form: .github/workflows/deploy.yml's first
job appends it there and deploys only when it says github. Pure Python (stacks.config needs no
CDK), so the job runs it on a bare runner before installing anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from stacks.config import ConfigError, load_config


def deploy_path(app_dir: Path) -> str:
    context = json.loads((app_dir / "cdk.json").read_text()).get("context", {})
    return load_config(context).deploy


def main() -> int:
    try:
        path = deploy_path(Path.cwd())
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"deploy={path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
