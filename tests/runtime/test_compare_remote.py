"""`semsearch compare --remote --stage dev` (semsearch/compare_remote.py) against botocore's
CloudFormation, S3 and Step Functions models: the real clients behind Stubbers, which check every
request's parameters and every canned answer against the service models. No AWS account: what
the job itself computes is tested in test_compare_job.py; its answer here is a compare.json of
the documented shape."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from semsearch import compare_remote
from semsearch.cli import main
from semsearch.compare_job import INPUT_URI_OUTPUT, STATE_MACHINE_OUTPUT
from training_code.contract import METRIC_KEYS

REGION = "eu-west-1"
STACK = "semsearch-dev-jobs"
BUCKET = f"semsearch-dev-artifacts-123456789012-{REGION}"
MACHINE = f"arn:aws:states:{REGION}:123456789012:stateMachine:semsearch-dev-compare"
JOB = "semsearch-dev-cmp-mivq2c1s"
RESULT_URI = f"s3://{BUCKET}/jobs/compare/{JOB}/compare.json"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setattr(compare_remote, "POLL_SECONDS", 0)
    monkeypatch.setattr(compare_remote, "new_run_id", lambda: "20260105T130000Z-0a1b2c")


def _result(names: list[str]) -> dict[str, Any]:
    """A compare.json as the job writes it (semsearch.compare's --json schema)."""
    candidates = [{
        "name": name, "kind": "model", "source": f"/tmp/compare-models-x/{i}", "catalog_id": None,
        "query_prefix": "", "passage_prefix": "", "dimension": 384, "knn_memory_gib_per_million_docs": 1.65,
        "metrics": {key: 0.5 + 0.1 * i for key in METRIC_KEYS},
        "throughput": {"where": "this machine, cuda", "texts": 240, "tokens": 9000, "seconds": 1.5,
                       "texts_per_s": 160.0, "tokens_per_s": 6000.0, "batch_size": 64, "requests": 8,
                       "latency_ms": {"p50": 180.0, "p95": 200.0, "max": 210.0}},
        "usd_per_million_tokens": []} for i, name in enumerate(names)]
    return {"schema_version": 1, "data": {"format": "pairs", "split": None, "files": ["/opt/ml/processing/input/pairs"
                                                                                      "/dev.jsonl"],
                                          "pairs": 120, "queries": 120, "documents": 120},
            "metric_keys": list(METRIC_KEYS), "primary_metric": "ndcg@10", "prices": {}, "knn_memory_formula": "f",
            "hnsw_m": 16, "machine": {"cpu": "x", "cores": 4, "device": "cuda"}, "candidates": candidates,
            "notes": ["Prices: estimates."]}


class Aws:
    """The three clients of a remote run, stubbed; ``uploads`` holds {key: bytes} of each PutObject."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cfn = self.s3 = self.sfn = None
        self.stubbers: dict[str, Stubber] = {}
        self.uploads: dict[str, bytes] = {}
        monkeypatch.setattr(compare_remote, "aws_clients", self._clients)
        self.plan: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = []

    def _clients(self, session: Any) -> tuple[Any, Any, Any]:
        clients = {name: session.client(name) for name in ("cloudformation", "s3", "stepfunctions")}
        clients["s3"].meta.events.register("before-parameter-build.s3.PutObject", self._record)
        for name, client in clients.items():
            self.stubbers[name] = Stubber(client)
        for service, operation, response, expected in self.plan:
            self.stubbers[service].add_response(operation, response, expected)
        for stubber in self.stubbers.values():
            stubber.activate()
        return clients["cloudformation"], clients["s3"], clients["stepfunctions"]

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.uploads[params["Key"]] = params["Body"].read()
        params["Body"].seek(0)

    def stack(self, outputs: dict[str, str] | None = None) -> None:
        outputs = {STATE_MACHINE_OUTPUT: MACHINE, INPUT_URI_OUTPUT: f"s3://{BUCKET}/jobs/compare/"} \
            if outputs is None else outputs
        self.plan.append(("cloudformation", "describe_stacks", {"Stacks": [{
            "StackName": STACK, "StackId": f"arn:aws:cloudformation:{REGION}:123456789012:stack/{STACK}/1",
            "CreationTime": "2026-01-05T13:00:00Z", "StackStatus": "UPDATE_COMPLETE",
            "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]}]}, {"StackName": STACK}))

    def puts(self, keys: list[str]) -> None:
        for key in keys:
            self.plan.append(("s3", "put_object", {"ETag": '"0"'}, {"Bucket": BUCKET, "Key": key, "Body": ANY}))

    def execution(self, statuses: list[str], *, output: dict[str, Any] | None = None, error: str = "",
                  cause: str = "") -> str:
        arn = f"arn:aws:states:{REGION}:123456789012:execution:semsearch-dev-compare:20260105T130000Z-0a1b2c"
        self.plan.append(("stepfunctions", "start_execution", {"executionArn": arn, "startDate": "2026-01-05T13:00:00Z"},
                          {"stateMachineArn": MACHINE, "name": "20260105T130000Z-0a1b2c", "input": ANY}))
        for status in statuses:
            answer: dict[str, Any] = {"executionArn": arn, "stateMachineArn": MACHINE, "status": status,
                                      "startDate": "2026-01-05T13:00:00Z"}
            if status == "SUCCEEDED":
                answer.update(output=json.dumps(output), stopDate="2026-01-05T13:20:00Z")
            elif status != "RUNNING":
                answer.update(error=error, cause=cause, stopDate="2026-01-05T13:20:00Z")
            self.plan.append(("stepfunctions", "describe_execution", answer, {"executionArn": arn}))
        return arn

    def download(self, result: dict[str, Any]) -> None:
        body = json.dumps(result).encode()
        self.plan.append(("s3", "get_object", {"Body": StreamingBody(io.BytesIO(body), len(body))},
                          {"Bucket": BUCKET, "Key": f"jobs/compare/{JOB}/compare.json"}))

    def all_called(self) -> None:
        for stubber in self.stubbers.values():
            stubber.assert_no_pending_responses()


@pytest.fixture
def aws(monkeypatch) -> Aws:
    return Aws(monkeypatch)


@pytest.fixture
def pairs(tmp_path, dev_pairs) -> Path:
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in dev_pairs[:40]))
    return path


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_uploads_starts_waits_and_prints_the_jobs_table(aws, pairs, model_dir, monkeypatch):
    prefix = "jobs/compare/20260105T130000Z-0a1b2c/"
    model_files = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    aws.stack()
    aws.puts([f"{prefix}pairs/dev.jsonl"] + [f"{prefix}models/0/{name}" for name in model_files])
    tuned = f"s3://{BUCKET}/jobs/training/semsearch-dev-ft-mivq2c1s/output/model.tar.gz"
    aws.execution(["RUNNING", "RUNNING", "SUCCEEDED"],
                  output={"processing_job_name": JOB, "compare_json_s3_uri": RESULT_URI})
    result = _result(["all-MiniLM-L6-v2", "tuned"])
    aws.download(result)
    started: list[str] = []
    original = compare_remote.RemoteRun.start

    def spy(self):  # the input as it goes to StartExecution
        self.sfn.meta.events.register("before-parameter-build.stepfunctions.StartExecution",
                                      lambda params, **_: started.append(params["input"]))
        return original(self)

    monkeypatch.setattr(compare_remote.RemoteRun, "start", spy)
    code, out, err = _run(["compare", "--remote", "--stage", "dev", "--pairs", str(pairs),
                           "--model", "all-MiniLM-L6-v2", "--model", f"{tuned},name=tuned", "--json"])
    assert code == 0, err
    aws.all_called()
    printed = json.loads(out)
    assert printed["candidates"] == result["candidates"]
    assert printed["notes"][-1] == f"Ran as SageMaker Processing job {JOB} of stage dev; its table: {RESULT_URI}"
    # What went up: the pairs file and the packaged model's files, byte for byte.
    assert aws.uploads[f"{prefix}pairs/dev.jsonl"] == pairs.read_bytes()
    for name in model_files:
        assert aws.uploads[f"{prefix}models/0/{name}"] == (model_dir / name).read_bytes()
    (start,) = [json.loads(s) for s in started]
    assert start == {"pairs_s3_uri": f"s3://{BUCKET}/{prefix}pairs/", "batch_size": 32, "models": [
        {"s3_uri": f"s3://{BUCKET}/{prefix}models/0/", "name": "all-MiniLM-L6-v2", "catalog_id": "all-MiniLM-L6-v2"},
        {"s3_uri": tuned, "name": "tuned"}]}
    assert "started arn:aws:states:" in err


def test_the_table_and_plot_of_a_remote_run(aws, pairs, tmp_path):
    aws.stack()
    aws.puts(["jobs/compare/20260105T130000Z-0a1b2c/pairs/dev.jsonl"])
    aws.execution(["SUCCEEDED"], output={"processing_job_name": JOB, "compare_json_s3_uri": RESULT_URI})
    aws.download(_result(["base", "tuned"]))
    plot = tmp_path / "compare.png"
    code, out, err = _run(["compare", "--remote", "--stage", "dev", "--pairs", str(pairs), "--model",
                           f"s3://{BUCKET}/training/base-model/,name=base", "--plot", str(plot)])
    assert code == 0, err
    aws.all_called()
    assert "base" in out and "tuned" in out and "0.6000" in out  # the second candidate's metrics
    assert plot.stat().st_size > 0 and f"plot: {plot}" in out


def test_a_beir_qrels_file_goes_up_with_its_folder_and_names_its_split(tmp_path, dev_pairs):
    from tests.runtime.test_beir_inputs import beir_from_pairs

    folder = beir_from_pairs(tmp_path / "beir", dev_pairs[:30], split="dev")
    base, files, pairs_path = compare_remote.pairs_files(str(folder / "qrels" / "dev.tsv"))
    assert base == folder and pairs_path == "qrels/dev.tsv"
    assert sorted(f.relative_to(folder).as_posix() for f in files) == ["corpus.jsonl", "qrels/dev.tsv",
                                                                       "queries.jsonl"]


def test_a_failed_workflow_is_reported_with_its_cause(aws, pairs):
    aws.stack()
    aws.puts(["jobs/compare/20260105T130000Z-0a1b2c/pairs/dev.jsonl"])
    arn = aws.execution(["RUNNING", "FAILED"], error="CompareFailed", cause="AlgorithmError: holds no model")
    code, _, err = _run(["compare", "--remote", "--stage", "dev", "--pairs", str(pairs), "--model",
                         f"s3://{BUCKET}/training/base-model/"])
    assert code == 2
    aws.all_called()
    assert f"the compare workflow ended FAILED: CompareFailed: AlgorithmError: holds no model (execution {arn})" in err


def test_a_model_in_another_bucket_is_refused_before_anything_is_uploaded(aws, pairs, model_dir):
    aws.stack()
    code, _, err = _run(["compare", "--remote", "--stage", "dev", "--pairs", str(pairs), "--model", str(model_dir),
                         "--model", "s3://someone-elses-bucket/model/"])
    assert code == 2
    aws.all_called()  # no PutObject or StartExecution was planned: none was made
    assert aws.uploads == {}
    assert f"the stage's bucket {BUCKET} only" in err and "someone-elses-bucket" in err


def test_a_stage_without_the_compare_workflow_says_to_deploy_it(aws, pairs):
    aws.stack({"FineTuneStateMachine": "arn:aws:states:x"})
    code, _, err = _run(["compare", "--remote", "--stage", "dev", "--pairs", str(pairs), "--model", "x"])
    assert code == 2
    assert f"stack {STACK} in region {REGION} has no output {STATE_MACHINE_OUTPUT}, {INPUT_URI_OUTPUT}" in err


@pytest.mark.parametrize(("extra", "message"), [
    (["--endpoint", "semsearch-dev-cpu"], "--endpoint apply to a comparison on this machine"),
    (["--bedrock", "amazon.titan-embed-text-v2:0"], "--bedrock apply to a comparison on this machine"),
    (["--stage", "local"], "--remote runs on a deployed stage"),
])
def test_what_a_remote_run_cannot_do_is_refused_before_any_call(aws, pairs, extra, message):
    argv = ["compare", "--remote", "--pairs", str(pairs), "--model", "all-MiniLM-L6-v2"]
    code, _, err = _run(argv + (extra if "--stage" in extra else ["--stage", "dev", *extra]))
    assert code == 2 and message in err
    assert not aws.stubbers  # no client was made


def test_bad_pairs_are_refused_before_anything_is_uploaded(aws, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q"}\n')
    aws.stack()
    code, _, err = _run(["compare", "--remote", "--stage", "dev", "--pairs", str(bad), "--model", "all-MiniLM-L6-v2"])
    assert code == 2 and "bad.jsonl" in err
    assert aws.uploads == {}
