"""`semsearch compare --remote --stage NAME`: the comparison as a SageMaker Processing job.

For sets too big for a laptop. The stage's compare workflow (stacks/components/
compare_workflow.py, in its jobs stack ``semsearch-<stage>-jobs``) runs `semsearch compare`'s
own code on the stage's training instance type (semsearch/compare_job.py). This side:

1. reads the jobs stack's outputs (CloudFormation DescribeStacks): the state machine and
   where a run's inputs go (``s3://<stage bucket>/jobs/compare/``);
2. checks --pairs here (the same reader as the job), then uploads the files it read to
   ``jobs/compare/<run>/pairs/`` and each --model folder to ``jobs/compare/<run>/models/<i>/``
   (an ``s3://`` --model in the stage's bucket is used where it is: training/base-model/,
   jobs/training/<job>/output/model.tar.gz, models/...);
3. starts the workflow (StartExecution, named after the run) and waits for it
   (DescribeExecution every ``POLL_SECONDS``);
4. downloads the job's compare.json and returns it: `semsearch compare` prints the same table,
   ``--json`` object or ``--plot`` as for a comparison on this machine.

Only --model candidates: the job may run with network isolation, where no endpoint or Bedrock
API is reachable (compare those from a laptop). The job's machine prices itself the way a
laptop's does (its throughput scaled to ml.c6i.xlarge's vCPUs; a GPU instance: no estimate).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from semsearch.compare_job import INPUT_URI_OUTPUT, MAX_MODELS, STATE_MACHINE_OUTPUT
from semsearch.errors import UsageError

#: Seconds between DescribeExecution calls while the job runs (tests set 0).
POLL_SECONDS = 15.0
#: Flags of a comparison on this machine that a remote run cannot honour.
LOCAL_ONLY = ("endpoint", "bedrock", "endpoint_url", "bedrock_endpoint_url", "tokenizer", "hnsw_m", "prices",
              "throughput")


def aws_clients(session: Any) -> tuple[Any, Any, Any]:
    """CloudFormation, S3 and Step Functions clients of the session (tests attach Stubbers)."""
    return session.client("cloudformation"), session.client("s3"), session.client("stepfunctions")


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise UsageError(f"{uri!r} is not an s3://bucket/key URI")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def jobs_outputs(cfn: Any, name: str, region: str) -> dict[str, str]:
    """The jobs stack's outputs; UsageError naming the stack when it or the compare outputs are missing."""
    import botocore.exceptions

    try:
        (stack,) = cfn.describe_stacks(StackName=name)["Stacks"]
    except botocore.exceptions.ClientError as e:
        error = e.response.get("Error", {})
        if "does not exist" in error.get("Message", ""):
            raise UsageError(f"stack {name} not found in region {region}: deploy the stage, or pass the "
                             "--region (or --profile) it is deployed in") from None
        raise UsageError(f"describe_stacks {name} in {region}: {error.get('Code')}: {error.get('Message')}") from None
    except botocore.exceptions.NoCredentialsError:
        raise UsageError("no AWS credentials found: configure them, or pass --profile") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = [key for key in (STATE_MACHINE_OUTPUT, INPUT_URI_OUTPUT) if not outputs.get(key)]
    if missing:
        raise UsageError(f"stack {name} in region {region} has no output {', '.join(missing)}: deploy the current "
                         "version of the stage (its jobs stack runs the compare workflow)")
    return outputs


def new_run_id() -> str:
    """A run's name: its start time and a random suffix (an execution name and a key prefix)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def pairs_files(location: str) -> tuple[Path, list[Path], str | None]:
    """(the folder the upload is relative to, the files --pairs reads, the path the job's
    --pairs names inside the uploaded folder, or None for the folder itself)."""
    from semsearch.evaluate import load_data_or_fail
    from training_code.inputs import beir_folder
    from training_code.pairs import PairsError

    data = load_data_or_fail(location, "--pairs")  # checked here, before anything is uploaded
    path = Path(location)
    try:
        beir = beir_folder(path)
    except PairsError as e:
        raise UsageError(str(e)) from None
    if beir is not None:
        folder, split = beir
        return folder, [Path(f) for f in data.files], (f"qrels/{path.name}" if split else None)
    return (path if path.is_dir() else path.parent), [Path(f) for f in data.files], None


def start_input(pairs_s3_uri: str, models: list[dict[str, str]], *, batch_size: int,
                pairs_path: str | None = None) -> dict[str, Any]:
    """The compare workflow's start input (its docstring's contract)."""
    start: dict[str, Any] = {"pairs_s3_uri": pairs_s3_uri, "models": models, "batch_size": batch_size}
    if pairs_path:
        start["pairs_path"] = pairs_path
    return start


class RemoteRun:
    """One run: uploads, the execution and its result, through the three clients."""

    def __init__(self, args: argparse.Namespace, cfn: Any, s3: Any, sfn: Any, region: str) -> None:
        from stacks.names import stack_name

        self.args, self.s3, self.sfn = args, s3, sfn
        self.stack = stack_name(args.stage, "jobs")
        outputs = jobs_outputs(cfn, self.stack, region)
        self.state_machine = outputs[STATE_MACHINE_OUTPUT]
        self.bucket, prefix = split_s3_uri(outputs[INPUT_URI_OUTPUT])
        self.run_id = new_run_id()
        self.prefix = f"{prefix}{self.run_id}/"

    def upload(self, files: list[Path], base: Path, key_prefix: str) -> None:
        for path in files:
            key = key_prefix + path.relative_to(base).as_posix()
            with path.open("rb") as body:
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def model_input(self, index: int, value: str) -> tuple[dict[str, str], Path | None]:
        """One --model's start-input entry, and the folder to upload for it (None: an s3://
        model in the stage's bucket, used where it is). Uploads nothing: every value is
        checked before the first upload."""
        from semsearch.compare import _guess_catalog_id, catalog_spec, parse_spec
        from semsearch.models import DEFAULT_MODEL_ID, packaged_model_dir, resolve_model_dir

        head, options = parse_spec(value, "--model", ("model", "name"))
        folder: Path | None = None
        if head.startswith("s3://"):
            bucket, key = split_s3_uri(head)
            if bucket != self.bucket:
                raise UsageError(f"--model {value!r}: the job reads models from the stage's bucket {self.bucket} "
                                 "only (training/, jobs/training/, models/, jobs/compare/), not from " + bucket)
            parts = [p for p in key.split("/") if p and p not in ("model.tar.gz", "output")]
            entry = {"s3_uri": head, "name": options.get("name") or (parts[-1] if parts else head)}
            catalog_id = options.get("model")
        else:
            packaged = head == DEFAULT_MODEL_ID and not Path(head).exists()
            folder = packaged_model_dir() if packaged else resolve_model_dir(head, "--model")
            entry = {"s3_uri": f"s3://{self.bucket}/{self.prefix}models/{index}/",
                     "name": options.get("name") or (DEFAULT_MODEL_ID if packaged else folder.name)}
            catalog_id = options.get("model") or (DEFAULT_MODEL_ID if packaged else _guess_catalog_id(folder))
        if catalog_id:
            catalog_spec(catalog_id, f"--model {value!r}")  # a clear error for an unknown id, here
            entry["catalog_id"] = catalog_id
        return entry, folder

    def start(self) -> str:
        base, files, pairs_path = pairs_files(self.args.pairs)
        planned = [self.model_input(i, value) for i, value in enumerate(self.args.model)]
        self.upload(files, base, f"{self.prefix}pairs/")
        for i, (_, folder) in enumerate(planned):
            if folder is not None:
                self.upload(sorted(p for p in folder.rglob("*") if p.is_file()), folder, f"{self.prefix}models/{i}/")
        start = start_input(f"s3://{self.bucket}/{self.prefix}pairs/", [entry for entry, _ in planned],
                            batch_size=self.args.batch_size, pairs_path=pairs_path)
        arn = str(self.sfn.start_execution(stateMachineArn=self.state_machine, name=self.run_id,
                                           input=json.dumps(start))["executionArn"])
        print(f"started {arn}; inputs in s3://{self.bucket}/{self.prefix}", file=sys.stderr)
        return arn

    def wait(self, arn: str) -> dict[str, Any]:
        while True:
            execution = self.sfn.describe_execution(executionArn=arn)
            if execution["status"] != "RUNNING":
                break
            time.sleep(POLL_SECONDS)
        if execution["status"] != "SUCCEEDED":
            raise UsageError(f"the compare workflow ended {execution['status']}: {execution.get('error', '')}: "
                             f"{execution.get('cause', 'no cause given')} (execution {arn})")
        return dict(json.loads(execution["output"]))

    def result(self, output: dict[str, Any]) -> dict[str, Any]:
        bucket, key = split_s3_uri(output["compare_json_s3_uri"])
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        result = dict(json.loads(body))
        result["notes"].append(f"Ran as SageMaker Processing job {output['processing_job_name']} of stage "
                               f"{self.args.stage}; its table: {output['compare_json_s3_uri']}")
        return result


def run_remote(args: argparse.Namespace) -> dict[str, Any]:
    """Upload, start, wait, download: the --json object of the comparison the job ran."""
    from semsearch import stage

    if not args.stage or args.stage == stage.LOCAL:
        raise UsageError("--remote runs on a deployed stage: pass --stage NAME")
    given = [f"--{flag.replace('_', '-')}" for flag in LOCAL_ONLY if getattr(args, flag, None)]
    if given:
        raise UsageError(f"--remote compares --model candidates only, with the job's defaults; {', '.join(given)} "
                         "apply to a comparison on this machine (drop --remote)")
    if not args.model:
        raise UsageError("give at least one --model (a folder, or an s3:// URI in the stage's bucket)")
    if len(args.model) > MAX_MODELS:
        raise UsageError(f"{len(args.model)} --model values: a job compares at most {MAX_MODELS}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    session = stage.aws_session(region=args.region, profile=args.profile)
    cfn, s3, sfn = aws_clients(session)
    remote = RemoteRun(args, cfn, s3, sfn, session.region_name)
    arn = remote.start()
    try:
        output = remote.wait(arn)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; the execution goes on: {arn}", file=sys.stderr)
        raise
    return remote.result(output)
