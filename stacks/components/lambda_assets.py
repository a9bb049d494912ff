"""The Lambda functions' code: packages of lambda/ as plain-source assets, and their runtime.

No bundling: every import of this code is either in lambda/ or ships with the Python
runtime (boto3, botocore, urllib3), so synth copies files (no Docker, no network) and an
asset's hash changes only when its files do.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import aws_lambda as lambda_

LAMBDA_ROOT = Path(__file__).resolve().parents[2] / "lambda"
RUNTIME = lambda_.Runtime.PYTHON_3_12
#: Packages of lambda/ that every function's asset carries next to its own (endpoint_request:
#: the endpoint's request body, for the glue's connector and the batch-embed request lines).
SHARED_PACKAGES = ("opensearch_http", "json_logging", "endpoint_request")


def lambda_code(package: str) -> lambda_.Code:
    """``package`` of lambda/ plus the shared packages, as one asset rooted at lambda/."""
    keep = {package, *SHARED_PACKAGES}
    others = sorted(p.name for p in LAMBDA_ROOT.iterdir() if p.is_dir() and p.name not in keep)
    return lambda_.Code.from_asset(str(LAMBDA_ROOT), exclude=[*others, "**/__pycache__", "**/*.pyc"])
