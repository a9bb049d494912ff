"""`semsearch compare` on sets too big for a laptop: one SageMaker Processing job per run.

Start → (input checked) → Compare (createProcessingJob.sync) → Succeed, with the job's name and
where its compare.json is as the execution's output. The job runs semsearch/compare_job.py
(see there) in the SageMaker PyTorch training image, the fine-tune job's, on the fine-tune
job's instance type, with network isolation where the training job has it
(``jobs.network_isolation``): the code and its wheels come in the compare bundle, the pairs and
the models from the stage's artifact bucket. Candidates are model folders or model.tar.gz
files in S3; endpoints and Bedrock models are not compared here (an isolated job reaches no
API), `semsearch compare` on a laptop does those.

Start input (`semsearch compare --remote` writes it)::

    {"pairs_s3_uri": "s3://<bucket>/jobs/compare/<run>/pairs/",   our pairs, or a BEIR folder
     "pairs_path": "qrels/dev.tsv",                                optional: a file in that folder
     "models": [{"s3_uri": "s3://<bucket>/…/", "name": "tuned",    1 to 8: a model folder or
                 "catalog_id": "e5-base-v2"}],                     one model.tar.gz; name and
     "batch_size": 64}                                             catalog_id optional

The job's role reads jobs/compare/, training/ (the base model the fine-tune job starts from),
jobs/training/ (the models it wrote) and models/ (promoted models) of the stage's bucket, and
writes jobs/compare/ only.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from semsearch import compare_job, container_wheels
from stacks import images
from stacks.catalog import INSTANCES, InstanceSpec
from stacks.components.fine_tune_workflow import (
    JOBS_PREFIX,
    TRAINING_PREFIX,
    fail_on_error,
    grant_pass_to_sagemaker,
    grant_sync_job,
    jsonata,
    workflow_state_machine,
)
from stacks.components.sagemaker_execution_role import SageMakerExecutionRole
from stacks.components.source_bundle import REPO_ROOT, build_tarball
from stacks.config import JobsConfig
from stacks.nag import acknowledge
from stacks.names import PROMOTED_MODELS_PREFIX
from stacks.storage_stack import artifacts_bucket_name, artifacts_nag_arn

COMPARE_PREFIX = compare_job.S3_PREFIX
#: What the job may read: the run's inputs, the fine-tune job's base model (training/) and the
#: models it wrote (jobs/training/), promoted models (models/).
READ_PREFIXES = (COMPARE_PREFIX, TRAINING_PREFIX, f"{JOBS_PREFIX}training/", PROMOTED_MODELS_PREFIX)
VOLUME_GB = 50


def build_compare_bundle(out_dir: Path, training_wheels_dir: Path = container_wheels.TRAINING_WHEEL_DIR) -> Path:
    """The job's code: what ``semsearch.compare`` imports for local models (semsearch's top-level
    modules and tables, the catalog and config schema, endpoint_request for the catalog's
    Bedrock entries, training_code) and train.py's locked wheels as ./wheels/ (sentence-
    transformers and its closure; torch and numpy are the image's). Deterministic, as the
    training bundle (build_tarball). The wheels must be in build/ already (`make wheels`)."""
    semsearch_dir = REPO_ROOT / "semsearch"
    files = {f"semsearch/{p.name}": p for p in sorted(semsearch_dir.iterdir())
             if p.is_file() and p.suffix in (".py", ".json")}
    for name in ("__init__.py", "catalog.py"):
        files[f"stacks/{name}"] = REPO_ROOT / "stacks" / name
    for wheel in container_wheels.wheel_files(training_wheels_dir, container_wheels.TRAINING_LOCK):
        files[f"{container_wheels.CODE_SUBDIR}/{wheel.name}"] = wheel
    folders = {"training_code": REPO_ROOT / "training_code", "stacks/config": REPO_ROOT / "stacks" / "config",
               "lambda/endpoint_request": REPO_ROOT / "lambda" / "endpoint_request"}
    return build_tarball(folders=folders, files=files, out_dir=out_dir)


class CompareWorkflow(Construct):
    """The compare state machine and the role its processing jobs run as.

    Keyword-only properties:
      name_prefix: prefix of job names (semsearch-<stage>).
      stage: the stage name (its bucket's deterministic name).
      jobs: the instance type, runtime limit and network isolation (the training job's).
      artifacts / kms_key: the stage bucket and key (inputs, output, volume).

    ``job_role`` is the processing job's role; ``input_uri`` where a run's inputs go.
    """

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str, stage: str, jobs: JobsConfig,
                 artifacts: s3.IBucket, kms_key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.name_prefix = name_prefix
        self.stage = stage
        bucket_uri = f"s3://{artifacts.bucket_name}"
        self.input_uri = f"{bucket_uri}/{COMPARE_PREFIX}"
        instance = INSTANCES[jobs.training_instance_type]
        bundle = s3_assets.Asset(self, "Code", path=str(build_compare_bundle(REPO_ROOT / "build" / "bundles")))

        self.job_role = SageMakerExecutionRole(self, "JobRole", description=f"{name_prefix}: compare processing jobs")
        self._grant_job(bundle, kms_key)
        self.job_role.allow_containers(
            images=[("pytorch-training", images.PYTORCH_TRAINING_VERSION, instance.accelerated)],
            log_groups=["ProcessingJobs"], metric_namespaces=["/aws/sagemaker/ProcessingJobs"])

        start = sfn.Pass(self, "Start", assign={
            # cmp-<millis in base 36>: a new job name per run, under the stage's prefix.
            "jobName": jsonata(f"'{name_prefix}-cmp-' & $formatBase($millis(), 36)")})
        given = sfn.Choice(self, "InputGiven")
        bad_input = sfn.Fail(
            self, "BadInput", error="BadInput",
            cause=f"start with pairs_s3_uri and models, a list of 1 to {compare_job.MAX_MODELS} "
                  "{s3_uri[, name][, catalog_id]} (see `semsearch compare --remote`)")
        run = self._processing_job(jobs, instance, bundle, kms_key, bucket_uri)
        fail_on_error(self, run, "CompareFailed", "the compare processing job")
        given.when(sfn.Condition.jsonata(
            "{% $type($states.input.pairs_s3_uri) = 'string' and $type($states.input.models) = 'array' and "
            f"$count($states.input.models) >= 1 and $count($states.input.models) <= {compare_job.MAX_MODELS} and "
            "$count($states.input.models[$type(s3_uri) = 'string']) = $count($states.input.models) %}"),
            run.next(sfn.Succeed(self, "Compared")))
        given.otherwise(bad_input)

        self.state_machine = workflow_state_machine(
            self, name=f"{name_prefix}-compare", start=start.next(given),
            timeout=cdk.Duration.hours(jobs.training_max_runtime_hours + 1))
        grant_sync_job(self.state_machine.role, name_prefix, "Processing")
        grant_pass_to_sagemaker(self.job_role, self.state_machine.role)

    def _processing_job(self, jobs: JobsConfig, instance: InstanceSpec, bundle: s3_assets.Asset, kms_key: kms.IKey,
                        bucket_uri: str) -> sfn.CustomState:
        """CreateProcessingJob (.sync): code and pairs inputs, one input per model, compare.json out."""
        image = images.image_uri(self, "pytorch-training", images.PYTORCH_TRAINING_VERSION,
                                 accelerated=instance.accelerated)

        def s3_input(name: str, uri: str, local_path: str) -> str:
            """A JSONata object literal for one ProcessingInput (uri and local_path: expressions)."""
            return (f"{{'InputName': {name}, 'S3Input': {{'S3Uri': {uri}, 'LocalPath': {local_path}, "
                    "'S3DataType': 'S3Prefix', 'S3InputMode': 'File', 'S3DataDistributionType': 'FullyReplicated'}}")

        models = "$states.input.models"
        inputs = ("$append([" + s3_input("'code'", f"'{bundle.s3_object_url}'", f"'{compare_job.CODE_DIR}'") + ", "
                  + s3_input("'pairs'", "$states.input.pairs_s3_uri", f"'{compare_job.PAIRS_DIR}'") + "], "
                  f"$map({models}, function($m, $i) {{ "
                  + s3_input("'model-' & $string($i)", "$m.s3_uri", f"'{compare_job.MODELS_DIR}/' & $string($i)")
                  + " }))")
        model_argument = (f"'--model={compare_job.MODELS_DIR}/' & $string($i) & "
                          "($exists($m.name) ? ',name=' & $m.name : '') & "
                          "($exists($m.catalog_id) ? ',model=' & $m.catalog_id : '')")
        arguments = (f"$append(['--pairs', '{compare_job.PAIRS_DIR}' & ($exists($states.input.pairs_path) ? "
                     f"'/' & $states.input.pairs_path : ''), '--out', '{compare_job.OUTPUT_DIR}', '--batch-size', "
                     "$exists($states.input.batch_size) ? $string($states.input.batch_size) : '64'], "
                     f"$map({models}, function($m, $i) {{ {model_argument} }}))")
        output_uri = f"'{bucket_uri}/{COMPARE_PREFIX}' & $jobName & '/'"
        cluster: dict[str, object] = {"InstanceType": jobs.training_instance_type, "InstanceCount": 1,
                                      "VolumeSizeInGB": VOLUME_GB}
        if not instance.local_nvme:
            cluster["VolumeKmsKeyId"] = kms_key.key_arn
        return sfn.CustomState(self, "Compare", state_json={
            "Type": "Task",
            "Resource": f"arn:{cdk.Aws.PARTITION}:states:::sagemaker:createProcessingJob.sync",
            "Arguments": {
                "ProcessingJobName": jsonata("$jobName"),
                "RoleArn": self.job_role.role_arn,
                "AppSpecification": {"ImageUri": image, "ContainerEntrypoint": compare_job.entrypoint(),
                                     "ContainerArguments": jsonata(arguments)},
                "ProcessingInputs": jsonata(inputs),
                "ProcessingOutputConfig": {
                    "Outputs": [{"OutputName": "result", "S3Output": {
                        "S3Uri": jsonata(output_uri), "LocalPath": compare_job.OUTPUT_DIR,
                        "S3UploadMode": "EndOfJob"}}],
                    "KmsKeyId": kms_key.key_arn},
                "ProcessingResources": {"ClusterConfig": cluster},
                "StoppingCondition": {"MaxRuntimeInSeconds": jobs.training_max_runtime_hours * 3600},
                # The model comes as an input: nothing may reach for the Hugging Face Hub.
                "Environment": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
                "NetworkConfig": {"EnableNetworkIsolation": jobs.network_isolation},
            },
            "Output": {"processing_job_name": jsonata("$states.result.ProcessingJobName"),
                       "compare_json_s3_uri": jsonata(f"{output_uri} & '{compare_job.RESULT_FILE}'")},
        })

    def _grant_job(self, bundle: s3_assets.Asset, kms_key: kms.IKey) -> None:
        """The job's inputs and output in the stage bucket (SSE-KMS with the stage key, a volume
        encrypted with it), and its code: the bundle's own key, listed first as an S3Prefix input."""
        role = self.job_role
        bucket_arn = f"arn:{cdk.Aws.PARTITION}:s3:::{artifacts_bucket_name(self.stage)}"
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"],
                                               resources=[f"{bucket_arn}/{p}*" for p in READ_PREFIXES]))
        role.add_to_policy(iam.PolicyStatement(
            actions=["s3:ListBucket"], resources=[bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in READ_PREFIXES]}}))
        role.add_to_policy(iam.PolicyStatement(actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                                               resources=[f"{bucket_arn}/{COMPARE_PREFIX}*"]))
        for p in READ_PREFIXES:
            acknowledge(role, f"AwsSolutions-IAM5[Resource::{artifacts_nag_arn(self.stage, p + '*')}]",
                        "a run's inputs, the models it compares and its output have per-run names: "
                        "access is limited to this key prefix")
        role.add_to_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[bundle.bucket.arn_for_objects(bundle.s3_object_key)]))
        role.add_to_policy(iam.PolicyStatement(
            actions=["s3:ListBucket"], resources=[bundle.bucket.bucket_arn],
            conditions={"StringEquals": {"s3:prefix": bundle.s3_object_key}}))
        kms_key.grant(role, "kms:Decrypt", "kms:GenerateDataKey")
        # The volume is encrypted with the stage key: the role creates SageMaker's grant.
        role.add_to_policy(iam.PolicyStatement(actions=["kms:CreateGrant"], resources=[kms_key.key_arn],
                                               conditions={"Bool": {"kms:GrantIsForAWSResource": True}}))
