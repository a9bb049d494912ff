"""Fine-tune → gate → promotion through the stacks, as one Step Functions state machine.

Native integrations only (no polling Lambdas): the training job runs with the ``.sync``
pattern; the gate reads the metrics the job reported (DescribeTrainingJob's
FinalMetricDataList, scraped from the very lines that write metrics.json); a promotion
records the tuned model in SSM and updates the stacks that read it (FineTuneWorkflow), with
a Wait/DescribeStacks loop per stack.

Start input (all optional): {"train_s3_uri": "s3://…/", "eval_s3_uri": "s3://…/",
"base_model_s3_uri": "s3://…/", "hard_negative_model_s3_uri": "s3://…/"}; the defaults are the
artifact bucket's training/train/, (no eval channel) a slice carved from train, (with
``jobs.network_isolation`` only: the job cannot reach the Hugging Face Hub then)
training/base-model/, which holds the base model's folder or one model.tar.gz, and (no miner
channel) hard negatives mined with the base model. hard_negative_model_s3_uri is a model folder
or one model.tar.gz under training/ or jobs/ (what the job's role reads), such as an earlier
job's jobs/training/<job>/output/model.tar.gz: train.py mines with it (SM_CHANNEL_MINER).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks import images
from stacks.catalog import INSTANCES
from stacks.components.source_bundle import TrainingSourceBundle
from stacks.config import EndpointConfig, JobsConfig
from stacks.containers import model_version
from stacks.nag import acknowledge
from stacks.names import (
    PROMOTED_MODELS_PREFIX,
    STACK_BUSY_MARKER,
    STACK_UNCHANGED_MESSAGE,
    STACK_UPDATE_CAPABILITIES,
    STACK_UPDATED,
    promotion_parameter,
)
from stacks.storage_stack import artifacts_nag_arn
from training_code import contract

TRAINING_PREFIX = "training/"
#: The input channel that carries the source bundle into a job with network isolation.
SOURCE_CHANNEL = "source"
JOBS_PREFIX = "jobs/"
GAIN_METRIC = f"eval:gain:{contract.PRIMARY_METRIC}"

def jsonata(expression: str) -> str:
    return "{% " + expression + " %}"


def fail_on_error(scope: Construct, step: sfn.State, name: str, what: str) -> sfn.Fail:
    """Catch every error of ``step`` into a Fail state named ``name`` that reports its cause.

    ``$states.errorOutput`` exists only inside a Catch's Output and Assign
    (https://docs.aws.amazon.com/step-functions/latest/dg/workflow-variables.html), so the
    Catch passes Error and Cause on as the Fail state's input, and the Fail state reads them there.
    """
    fail = sfn.Fail(scope, name, error=name,
                    cause=jsonata(f"$exists($states.input.Cause) ? $states.input.Cause : '{what} failed'"))
    step.add_catch(fail, errors=["States.ALL"],  # type: ignore[attr-defined]
                   outputs={"Error": jsonata("$states.errorOutput.Error"),
                            "Cause": jsonata("$states.errorOutput.Cause")})
    return fail


def workflow_state_machine(scope: Construct, *, name: str, start: sfn.IChainable,
                           timeout: cdk.Duration) -> sfn.StateMachine:
    """A JSONata state machine with X-Ray tracing and full execution logs for a month."""
    machine = sfn.StateMachine(
        scope, "StateMachine", state_machine_name=name, query_language=sfn.QueryLanguage.JSONATA,
        definition_body=sfn.DefinitionBody.from_chainable(start), timeout=timeout, tracing_enabled=True,
        logs=sfn.LogOptions(destination=logs.LogGroup(scope, "Logs", retention=logs.RetentionDays.ONE_MONTH,
                                                      removal_policy=cdk.RemovalPolicy.DESTROY),
                            level=sfn.LogLevel.ALL))
    acknowledge(machine.role, "AwsSolutions-IAM5[Resource::*]",
                "X-Ray tracing (PutTraceSegments, PutTelemetryRecords) has no resource-level permissions")
    return machine


def acknowledge_per_run_names(role: iam.IRole, name_prefix: str, *kinds: str) -> None:
    """Acknowledge the ``<kind>/<name_prefix>-*`` SageMaker ARNs of a workflow's role: each run
    creates its resources under new names."""
    for kind in kinds:
        acknowledge(role, f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:"
                          f"<AWS::AccountId>:{kind}/{name_prefix}-*]",
                    f"each run creates a new {kind} named per run under this stage's prefix")


def grant_sync_job(role: iam.IRole, name_prefix: str, job: str) -> None:
    """What a ``create<job>Job.sync`` task needs, as AWS documents it for Step Functions
    (https://docs.aws.amazon.com/step-functions/latest/dg/sagemaker-iam.html, and aws-cdk-lib's
    aws-stepfunctions-tasks/lib/sagemaker/create-training-job.ts and create-transform-job.ts):
    the job, AddTags (Step Functions tags the job it starts, aws/aws-cdk#26012), ListTags on
    "*", and the managed EventBridge rule that reports the job's end.

    job: "Training" or "Transform".
    """
    stack = cdk.Stack.of(role)
    kind = f"{job.lower()}-job"
    role.add_to_principal_policy(iam.PolicyStatement(
        actions=[f"sagemaker:Create{job}Job", f"sagemaker:Describe{job}Job", f"sagemaker:Stop{job}Job",
                 "sagemaker:AddTags"],
        resources=[stack.format_arn(service="sagemaker", resource=kind, resource_name=f"{name_prefix}-*")]))
    acknowledge_per_run_names(role, name_prefix, kind)
    role.add_to_principal_policy(iam.PolicyStatement(actions=["sagemaker:ListTags"], resources=["*"]))
    acknowledge(role, "AwsSolutions-IAM5[Resource::*]",
                "the .sync SageMaker integration needs sagemaker:ListTags on '*', as AWS documents it")
    role.add_to_principal_policy(iam.PolicyStatement(
        actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
        resources=[stack.format_arn(service="events", resource="rule",
                                    resource_name=f"StepFunctionsGetEventsForSageMaker{job}JobsRule")]))


class FineTuneWorkflow(Construct):
    """Train on pairs in S3; promote the tuned model only if it beats the base model.

    A promotion goes through the same path as a model change in ``cdk.json``: the model is
    copied out of jobs/ (which expires) to its own key, its tag is written to the promotion
    parameter of the endpoint's model version, and the workflow updates the model, search
    and ops stacks with their current templates. CloudFormation then reads the parameter
    again (served_model): the model stack deploys the tuned model (same flavor: TEI serves it
    from S3 too) on a new endpoint beside the serving one; the search stack's glue registers
    it, re-embeds every document into a new index, checks the counts, moves the alias and
    retires the old index and endpoint. The next ``cdk deploy`` reads the same parameter, so
    it keeps the promoted model.

    Keyword-only properties:
      name_prefix: prefix of every job name (semsearch-<stage>).
      stage / endpoint / endpoint_config: the endpoint whose model is tuned and replaced.
      jobs: hyperparameters, instance type, spot, the promotion gain.
      execution_role: the SageMaker role for the training job.
      artifacts / kms_key: where data, checkpoints and outputs live, and their key.
      stacks_to_update: names of the stacks that read the promotion, in deploy order.
      cloudformation_role_arn: the role CloudFormation deploys them with (the CDK bootstrap's
        execution role): the workflow passes it, and needs no permission on what they hold.
    """

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str, stage: str, endpoint: str,
                 endpoint_config: EndpointConfig, jobs: JobsConfig, execution_role: iam.IRole,
                 artifacts: s3.IBucket, kms_key: kms.IKey, stacks_to_update: list[str],
                 cloudformation_role_arn: str) -> None:
        super().__init__(scope, construct_id)
        self.name_prefix = name_prefix
        #: The SSM parameter a promotion writes (stacks.names.promotion_parameter).
        self.promotion_parameter = promotion_parameter(stage, endpoint, model_version(endpoint_config))
        source = TrainingSourceBundle(self, "Source")
        execution_role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[source.asset.bucket.arn_for_objects(source.asset.s3_object_key)]))
        if jobs.network_isolation:
            # SageMaker lists an S3Prefix channel before it downloads it: the bundle's own key only.
            execution_role.add_to_principal_policy(iam.PolicyStatement(
                actions=["s3:ListBucket"], resources=[source.asset.bucket.bucket_arn],
                conditions={"StringEquals": {"s3:prefix": source.asset.s3_object_key}}))
        train = self._train(jobs, endpoint_config, source, execution_role, artifacts, kms_key)
        fail_on_error(self, train, "TrainingFailed", "the training job")

        gate = sfn.Choice(self, "TunedBeatsBase", comment=f"promote only if {GAIN_METRIC} >= {jobs.min_ndcg_gain}")
        metrics_missing = sfn.Fail(self, "MetricsMissing", error="MetricsMissing",
                                   cause=f"the training job reported no {GAIN_METRIC} metric")
        not_promoted = sfn.Fail(self, "NotPromoted", error="GateRejected",
                                cause=jsonata(f"'tuned model gained ' & $string($gain) & ' {contract.PRIMARY_METRIC}"
                                              f" over the base model; promotion needs {jobs.min_ndcg_gain}'"))

        keep = self._keep_model(stage, artifacts)
        record = tasks.CallAwsService(
            self, "RecordPromotion", service="ssm", action="putParameter",
            iam_resources=[cdk.Stack.of(self).format_arn(service="ssm", resource="parameter",
                                                         resource_name=self.promotion_parameter.lstrip("/"))],
            parameters={"Name": self.promotion_parameter, "Value": jsonata("$tag"), "Overwrite": True},
        )
        for step in (keep, record):
            fail_on_error(self, step, f"{step.node.id}Failed", step.node.id)
        chain: sfn.INextable = keep.next(record)
        for stack_name in stacks_to_update:
            deploy = self._update_stack(stack_name, cloudformation_role_arn)
            chain.next(deploy.start)  # type: ignore[attr-defined]
            chain = deploy.end
        chain.next(sfn.Succeed(self, "Promoted"))  # type: ignore[attr-defined]

        gate.when(sfn.Condition.jsonata("{% $gain = null %}"), metrics_missing)
        gate.when(sfn.Condition.jsonata(f"{{% $gain >= {jobs.min_ndcg_gain} %}}"), keep)
        gate.otherwise(not_promoted)

        self.state_machine = workflow_state_machine(
            self, name=f"{name_prefix}-fine-tune", start=train.next(gate),
            # Training, then up to a day of stack updates (the re-embed of a large index).
            timeout=cdk.Duration.hours(jobs.training_max_runtime_hours * 2 + 24))
        self._grant_state_machine(execution_role, kms_key, artifacts, stacks_to_update, cloudformation_role_arn)

    def _keep_model(self, stage: str, artifacts: s3.IBucket) -> tasks.CallAwsService:
        """Copy the tuned model out of jobs/ (expires after 30 days) to the key the model reads;
        assigns the promotion's tag (``ft-<base-36 millis>``, from the training job's name)."""
        tag = jsonata(f"$substringAfter($trainingJob, '{self.name_prefix}-')")
        return tasks.CallAwsService(
            self, "KeepModel", service="s3", action="copyObject",
            # The read of the source; _grant_state_machine grants the write of the copy.
            iam_resources=[artifacts.arn_for_objects(f"{JOBS_PREFIX}training/*")], iam_action="s3:GetObject",
            parameters={"Bucket": artifacts.bucket_name,
                        "CopySource": jsonata("$substringAfter($modelData, 's3://')"),
                        "Key": jsonata(f"'{PROMOTED_MODELS_PREFIX}{self.name_prefix}-' & "
                                       f"$substringAfter($trainingJob, '{self.name_prefix}-') & '/model.tar.gz'")},
            assign={"tag": tag},
        )

    def _update_stack(self, stack_name: str, cloudformation_role_arn: str) -> StackUpdate:
        """UpdateStack with the stack's current template (its SSM parameters are read again),
        then DescribeStacks every minute until it settles. "No updates are to be performed"
        (nothing in it reads the promotion) counts as done."""
        key = "".join(part.capitalize() for part in stack_name.split("-"))
        update = tasks.CallAwsService(
            self, f"Update{key}", service="cloudformation", action="updateStack",
            iam_resources=[self._stack_arn(stack_name)],
            parameters={"StackName": stack_name, "UsePreviousTemplate": True, "RoleARN": cloudformation_role_arn,
                        "Capabilities": STACK_UPDATE_CAPABILITIES},
        )
        wait = sfn.Wait(self, f"WaitFor{key}", time=sfn.WaitTime.duration(cdk.Duration.minutes(1)))
        describe = tasks.CallAwsService(
            self, f"Describe{key}", service="cloudformation", action="describeStacks",
            iam_resources=[self._stack_arn(stack_name)], parameters={"StackName": stack_name},
            assign={"stackStatus": jsonata("$states.result.Stacks[0].StackStatus"),
                    "stackReason": jsonata("$exists($states.result.Stacks[0].StackStatusReason) ? "
                                           "$states.result.Stacks[0].StackStatusReason : ''")},
        )
        unchanged = sfn.Choice(self, f"{key}Unchanged")
        failed = sfn.Fail(self, f"{key}UpdateFailed", error="StackUpdateFailed",
                          cause=jsonata(f"'{stack_name}: ' & $states.input.Cause"))
        update.add_catch(unchanged, errors=["States.ALL"], outputs={"Cause": jsonata("$states.errorOutput.Cause")})
        done = sfn.Pass(self, f"{key}Updated")
        unchanged.when(sfn.Condition.jsonata(f"{{% $contains($states.input.Cause, '{STACK_UNCHANGED_MESSAGE}') %}}"),
                       done)
        unchanged.otherwise(failed)
        fail_on_error(self, describe, f"Describe{key}Failed", f"DescribeStacks of {stack_name}")
        settled = sfn.Choice(self, f"{key}Settled")
        settled.when(sfn.Condition.jsonata(f"{{% $stackStatus = '{STACK_UPDATED}' %}}"), done)
        settled.when(sfn.Condition.jsonata(f"{{% $contains($stackStatus, '{STACK_BUSY_MARKER}') %}}"), wait)
        # UPDATE_ROLLBACK_COMPLETE, UPDATE_ROLLBACK_FAILED, UPDATE_FAILED: the old model serves on.
        settled.otherwise(sfn.Fail(self, f"{key}RolledBack", error="StackUpdateFailed", cause=jsonata(
            f"'{stack_name} ended in ' & $stackStatus & ': ' & $stackReason & '. The promotion stays recorded in "
            f"{self.promotion_parameter}: the next deploy of the stage tries it again'")))
        update.next(wait).next(describe).next(settled)
        return StackUpdate(start=update, end=done)

    def _stack_arn(self, stack_name: str) -> str:
        return cdk.Stack.of(self).format_arn(service="cloudformation", resource="stack",
                                             resource_name=f"{stack_name}/*")

    def _train(self, jobs: JobsConfig, endpoint: EndpointConfig, source: TrainingSourceBundle,
               execution_role: iam.IRole, artifacts: s3.IBucket, kms_key: kms.IKey) -> sfn.CustomState:
        """CreateTrainingJob (.sync); assigns the job name, the model data and the gain the job reported."""
        name_prefix = self.name_prefix
        model = endpoint.model
        training_instance = INSTANCES[jobs.training_instance_type]
        training_image = images.image_uri(self, "pytorch-training", images.PYTORCH_TRAINING_VERSION,
                                          accelerated=training_instance.accelerated)
        bucket_uri = f"s3://{artifacts.bucket_name}"
        isolated = jobs.network_isolation
        hyperparameters = {
            "sagemaker_program": "train.py",
            # With network isolation the toolkit cannot download the bundle from S3: it arrives as
            # the "source" channel and the toolkit unpacks it from there (its local-path case).
            # Not "code": train.py reads that channel as the inference handler.
            "sagemaker_submit_directory": (f"/opt/ml/input/data/{SOURCE_CHANNEL}/"
                                           f"{PurePosixPath(source.asset.s3_object_key).name}" if isolated
                                           else source.s3_uri),
            # Isolated, the job reads the base model from the "model" channel (SM_CHANNEL_MODEL).
            **({} if isolated else {"base-model": model.hf_id}),
            "epochs": str(jobs.epochs),
            "batch-size": str(jobs.batch_size),
            "learning-rate": repr(jobs.learning_rate),
            "max-seq-length": str(model.max_tokens),
            "query-prefix": model.query_prefix,
            "passage-prefix": model.passage_prefix,
        }

        def s3_channel(name: str, uri: str) -> str:
            """A JSONata object literal for one S3-prefix input channel."""
            return (f"{{'ChannelName': '{name}', 'DataSource': {{'S3DataSource': {{'S3DataType': 'S3Prefix', "
                    f"'S3DataDistributionType': 'FullyReplicated', 'S3Uri': {uri}}}}}}}")

        default_train = f"'{bucket_uri}/{TRAINING_PREFIX}train/'"
        default_base_model = f"'{bucket_uri}/{TRAINING_PREFIX}base-model/'"
        isolated_channels = (
            s3_channel(SOURCE_CHANNEL, f"'{source.s3_uri}'") + ", "
            + s3_channel("model", f"$exists($states.input.base_model_s3_uri) ? $states.input.base_model_s3_uri"
                                  f" : {default_base_model}") + ", ") if isolated else ""
        channels = ("[" + isolated_channels + s3_channel("train", "$exists($states.input.train_s3_uri) ? "
                                                          f"$states.input.train_s3_uri : {default_train}") + "]")
        # The optional channels, each only when the start input names it ($append takes two arrays).
        for channel, field in (("eval", "eval_s3_uri"), (contract.MINER_CHANNEL, "hard_negative_model_s3_uri")):
            channels = (f"$append({channels}, $exists($states.input.{field}) ? "
                        f"[{s3_channel(channel, '$states.input.' + field)}] : [])")
        resource_config: dict[str, object] = {"InstanceType": jobs.training_instance_type, "InstanceCount": 1,
                                              "VolumeSizeInGB": 50}
        if not training_instance.local_nvme:
            resource_config["VolumeKmsKeyId"] = kms_key.key_arn
        training_arguments: dict[str, object] = {
            # ft-<millis in base 36>: short, because the promotion's tag goes into endpoint names.
            "TrainingJobName": jsonata(f"'{name_prefix}-ft-' & $formatBase($millis(), 36)"),
            "RoleArn": execution_role.role_arn,
            "AlgorithmSpecification": {"TrainingImage": training_image, "TrainingInputMode": "File",
                                       "MetricDefinitions": list(contract.METRIC_DEFINITIONS)},
            "HyperParameters": hyperparameters,
            # Without an eval channel the job carves a held-out slice from train.
            "InputDataConfig": jsonata(channels),
            "OutputDataConfig": {"S3OutputPath": f"{bucket_uri}/{JOBS_PREFIX}training/", "KmsKeyId": kms_key.key_arn},
            "ResourceConfig": resource_config,
            "StoppingCondition": {"MaxRuntimeInSeconds": jobs.training_max_runtime_hours * 3600,
                                  **({"MaxWaitTimeInSeconds": jobs.training_max_runtime_hours * 3600 * 2}
                                     if jobs.training_use_spot else {})},
            "EnableManagedSpotTraining": jobs.training_use_spot,
            "EnableNetworkIsolation": isolated,
            # Checkpoints survive spot interruptions: the job resumes from the last one.
            "CheckpointConfig": {"S3Uri": f"{bucket_uri}/{JOBS_PREFIX}checkpoints/{name_prefix}/",
                                 "LocalPath": "/opt/ml/checkpoints"},
        }
        return sfn.CustomState(self, "Train", state_json={
            "Type": "Task",
            "Resource": f"arn:{cdk.Aws.PARTITION}:states:::sagemaker:createTrainingJob.sync",
            "Arguments": training_arguments,
            "Assign": {
                "trainingJob": jsonata("$states.result.TrainingJobName"),
                "modelData": jsonata("$states.result.ModelArtifacts.S3ModelArtifacts"),
                "gain": jsonata(f"($g := $states.result.FinalMetricDataList[MetricName='{GAIN_METRIC}'].Value; "
                                "$exists($g) ? $g : null)"),
                "metrics": jsonata("$states.result.FinalMetricDataList"),
            },
        })

    def _grant_state_machine(self, execution_role: iam.IRole, kms_key: kms.IKey, artifacts: s3.IBucket,
                             stacks_to_update: list[str], cloudformation_role_arn: str) -> None:
        role = self.state_machine.role
        grant_sync_job(role, self.name_prefix, "Training")
        # The training job runs with the execution role: PassRole, to SageMaker only.
        grant_pass_to_sagemaker(execution_role, role)
        # CopyObject: write the copy (the KeepModel step grants the read), under the stage key.
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:PutObject"], resources=[artifacts.arn_for_objects(f"{PROMOTED_MODELS_PREFIX}*")]))
        kms_key.grant_encrypt_decrypt(role)
        for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
            acknowledge(role, f"AwsSolutions-IAM5[Action::{action}]",
                        "CopyObject decrypts the training output and encrypts the copy with the one stage key")
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{artifacts_nag_arn(self._stage(), JOBS_PREFIX + 'training/*')}]",
                    "reads the output of the training job this run started (per-run key)")
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{artifacts_nag_arn(self._stage(), PROMOTED_MODELS_PREFIX + '*')}]",
                    "writes the promoted model under a per-promotion key")
        for stack_name in stacks_to_update:
            acknowledge(role, f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:cloudformation:<AWS::Region>:"
                              f"<AWS::AccountId>:stack/{stack_name}/*]",
                        "a stack ARN ends in its stack id, unknown until the stack exists: the name is exact")
        # CloudFormation deploys with the CDK bootstrap's execution role, as `cdk deploy` does.
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["iam:PassRole"], resources=[cloudformation_role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}}))

    def _stage(self) -> str:
        return self.name_prefix.removeprefix("semsearch-")

    def _sagemaker_arn(self, resource: str, name: str) -> str:
        return cdk.Stack.of(self).format_arn(service="sagemaker", resource=resource, resource_name=name)


@dataclass(frozen=True)
class StackUpdate:
    """The first and last states of one stack's update."""

    start: sfn.IChainable
    end: sfn.INextable


def grant_pass_to_sagemaker(execution_role: iam.IRole, grantee: iam.IGrantable) -> iam.Grant:
    """iam:PassRole of the SageMaker execution role, to SageMaker only."""
    return iam.Grant.add_to_principal(
        grantee=grantee, actions=["iam:PassRole"], resource_arns=[execution_role.role_arn],
        conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}})
