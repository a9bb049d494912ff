"""The batch-embed transform job's record handling, on this machine: the stand-in for
SageMaker's CreateTransformJob that the e2e tests and the bench run against the local
endpoint (`semsearch serve`, which speaks what the SageMaker endpoint speaks).

It follows the settings the workflow gives the job (stacks.batch_transform): each line of
each input object is one record (SplitType Line, BatchStrategy SingleRecord), of which only
the InputFilter's part goes to the endpoint, as ``application/json``; the answer is joined to
the whole line under ``SageMakerOutput`` (JoinSource Input), the OutputFilter's keys are
kept, and input object ``<name>`` becomes ``<name>.out``. Records go one at a time, as a
transform instance calls its container with MaxConcurrentTransforms 1. A failed record fails
the run, as it fails a transform job.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from semsearch.errors import UsageError
from stacks.batch_transform import CONTENT_TYPE, DATA_PROCESSING, OUTPUT_SUFFIX


def _input_key() -> str:
    match = re.fullmatch(r"\$\.(\w+)", DATA_PROCESSING["InputFilter"])
    assert match, DATA_PROCESSING["InputFilter"]
    return match.group(1)


def _output_keys() -> list[str]:
    match = re.fullmatch(r"\$\[((?:'\w+',?)+)\]", DATA_PROCESSING["OutputFilter"])
    assert match, DATA_PROCESSING["OutputFilter"]
    return re.findall(r"'(\w+)'", match.group(1))


@dataclass
class TransformReport:
    records: int
    objects: list[str]
    seconds: float


class Endpoint:
    """One kept-alive HTTP connection to an invocations URL."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise UsageError(f"expected the local endpoint's http:// invocations URL, got {url!r}")
        self.path = parts.path
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout_s)

    def invoke(self, body: bytes) -> Any:
        self.conn.request("POST", self.path, body, {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE})
        answer = self.conn.getresponse()
        payload = answer.read()
        if answer.status != 200:
            raise UsageError(f"the endpoint answered HTTP {answer.status}: {payload[:500]!r}")
        return json.loads(payload)

    def close(self) -> None:
        self.conn.close()


def run(requests_dir: Path, output_dir: Path, invocations_url: str, *, timeout_s: float = 120) -> TransformReport:
    """Every ``*.jsonl`` object of ``requests_dir`` through the endpoint into ``output_dir``."""
    inputs = sorted(requests_dir.glob("*.jsonl"))
    if not inputs:
        raise UsageError(f"no request lines (*.jsonl) in {requests_dir}")
    output_dir.mkdir(parents=True, exist_ok=True)
    request_key, keep = _input_key(), _output_keys()
    endpoint = Endpoint(invocations_url, timeout_s)
    started, records, written = time.perf_counter(), 0, []
    try:
        for source in inputs:
            target = output_dir / (source.name + OUTPUT_SUFFIX)
            with source.open("rb") as lines, target.open("w") as out:
                for line in lines:
                    if not line.strip():
                        continue
                    record = json.loads(line)
                    joined = {**record, "SageMakerOutput": endpoint.invoke(json.dumps(record[request_key]).encode())}
                    out.write(json.dumps({k: joined[k] for k in keep if k in joined}) + "\n")
                    records += 1
            written.append(str(target))
    finally:
        endpoint.close()
    return TransformReport(records, written, time.perf_counter() - started)
