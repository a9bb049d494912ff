"""Fine-tune → gate → blue/green deploy, as one Step Functions state machine.

Native SageMaker integrations only (no polling Lambdas): the training job runs with the
``.sync`` pattern; the gate reads the metrics the job reported (DescribeTrainingJob's
FinalMetricDataList, scraped from the very lines that write metrics.json); the endpoint
update uses SageMaker's blue/green deployment with automatic rollback on the endpoint's
alarms, and a Wait/DescribeEndpoint loop waits for InService.

Start input (all optional): {"train_s3_uri": "s3://…/", "eval_s3_uri": "s3://…/"}; the
defaults are the artifact bucket's training/train/ and (no eval channel) a slice carved
from train.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks import images
from stacks.catalog import INSTANCES
from stacks.components.embedding_endpoint import VARIANT_NAME, EmbeddingEndpoint
from stacks.components.source_bundle import TrainingSourceBundle
from stacks.config import EndpointConfig, JobsConfig
from stacks.containers import custom_container_environment
from stacks.nag import acknowledge
from training_code import contract

TRAINING_PREFIX = "training/"
JOBS_PREFIX = "jobs/"
GAIN_METRIC = f"eval:gain:{contract.PRIMARY_METRIC}"
#: Terminal statuses other than InService of SageMaker's EndpointStatus (OutOfService, Failed,
#: UpdateRollbackFailed) and InferenceComponentStatus (Failed): the deploy wait stops on them.
FAILED_STATUSES = ("OutOfService", "Failed", "UpdateRollbackFailed")


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
    """Train on pairs in S3, promote the tuned model only if it beats the base model.

    Keyword-only properties:
      name_prefix: prefix of every SageMaker job, model and config name (semsearch-<stage>).
      jobs: hyperparameters, instance type, spot, the promotion gain.
      endpoint: the endpoint a promoted model replaces: its name and config, the alarms that
        roll an update back, and how it hosts the model. An endpoint that scales to zero hosts
        it as an inference component: the rollout then swaps that component's model.
      execution_role: the SageMaker role for the job and the new model.
      artifacts / kms_key: where data, checkpoints and outputs live, and their key.
      latest_model: SSM parameter that receives the promoted model's name.
    """

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str, jobs: JobsConfig,
                 endpoint: EmbeddingEndpoint, execution_role: iam.IRole, artifacts: s3.IBucket, kms_key: kms.IKey,
                 latest_model: ssm.IStringParameter) -> None:
        super().__init__(scope, construct_id)
        self.name_prefix = name_prefix
        source = TrainingSourceBundle(self, "Source")
        execution_role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[source.asset.bucket.arn_for_objects(source.asset.s3_object_key)]))
        train = self._train(jobs, endpoint.config, source, execution_role, artifacts, kms_key)
        fail_on_error(self, train, "TrainingFailed", "the training job")

        gate = sfn.Choice(self, "TunedBeatsBase", comment=f"promote only if {GAIN_METRIC} >= {jobs.min_ndcg_gain}")
        metrics_missing = sfn.Fail(self, "MetricsMissing", error="MetricsMissing",
                                   cause=f"the training job reported no {GAIN_METRIC} metric")
        not_promoted = sfn.Fail(self, "NotPromoted", error="GateRejected",
                                cause=jsonata(f"'tuned model gained ' & $string($gain) & ' {contract.PRIMARY_METRIC}"
                                              f" over the base model; promotion needs {jobs.min_ndcg_gain}'"))

        create_model = self._create_model(endpoint.config, execution_role)
        if endpoint.inference_component_name is None:
            rollout = self._blue_green_rollout(endpoint, kms_key)
        else:
            rollout = self._rolling_update_rollout(endpoint, endpoint.inference_component_name)
        record = tasks.CallAwsService(
            self, "RecordPromotedModel", service="ssm", action="putParameter",
            iam_resources=[latest_model.parameter_arn],
            parameters={"Name": latest_model.parameter_name, "Value": jsonata("$modelName"), "Overwrite": True},
        )
        wait = sfn.Wait(self, "WaitForDeployment", time=sfn.WaitTime.duration(cdk.Duration.minutes(1)))
        deployed = self._deployed_choice(record, wait)
        for step in (create_model, *rollout.updates, rollout.describe, record):
            fail_on_error(self, step, f"{step.node.id}Failed", step.node.id)

        gate.when(sfn.Condition.jsonata("{% $gain = null %}"), metrics_missing)
        promote: sfn.INextable = create_model
        for step in rollout.updates:
            promote = promote.next(step)  # type: ignore[assignment]
        gate.when(sfn.Condition.jsonata(f"{{% $gain >= {jobs.min_ndcg_gain} %}}"), create_model)
        promote.next(wait)
        gate.otherwise(not_promoted)
        wait.next(rollout.describe).next(deployed)

        self.state_machine = workflow_state_machine(
            self, name=f"{name_prefix}-fine-tune", start=train.next(gate),
            timeout=cdk.Duration.hours(jobs.training_max_runtime_hours * 2 + 3))
        self._grant_state_machine(execution_role, endpoint, kms_key)

    def _train(self, jobs: JobsConfig, endpoint: EndpointConfig, source: TrainingSourceBundle,
               execution_role: iam.IRole, artifacts: s3.IBucket, kms_key: kms.IKey) -> sfn.CustomState:
        """CreateTrainingJob (.sync); assigns the job name, the model data and the gain the job reported."""
        name_prefix = self.name_prefix
        model = endpoint.model
        training_instance = INSTANCES[jobs.training_instance_type]
        training_image = images.image_uri(self, "pytorch-training", images.PYTORCH_TRAINING_VERSION,
                                          accelerated=training_instance.accelerated)
        bucket_uri = f"s3://{artifacts.bucket_name}"
        hyperparameters = {
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": source.s3_uri,
            "base-model": model.hf_id,
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
        resource_config: dict[str, object] = {"InstanceType": jobs.training_instance_type, "InstanceCount": 1,
                                              "VolumeSizeInGB": 50}
        if not training_instance.local_nvme:
            resource_config["VolumeKmsKeyId"] = kms_key.key_arn
        training_arguments: dict[str, object] = {
            "TrainingJobName": jsonata(f"'{name_prefix}-ft-' & $string($millis())"),
            "RoleArn": execution_role.role_arn,
            "AlgorithmSpecification": {"TrainingImage": training_image, "TrainingInputMode": "File",
                                       "MetricDefinitions": list(contract.METRIC_DEFINITIONS)},
            "HyperParameters": hyperparameters,
            # The eval channel is optional: without it the job carves a held-out slice from train.
            "InputDataConfig": jsonata(
                "$append([" + s3_channel("train", "$exists($states.input.train_s3_uri) ? $states.input.train_s3_uri"
                                                  f" : {default_train}") + "], "
                "$exists($states.input.eval_s3_uri) ? [" + s3_channel("eval", "$states.input.eval_s3_uri") + "] : [])"),
            "OutputDataConfig": {"S3OutputPath": f"{bucket_uri}/{JOBS_PREFIX}training/", "KmsKeyId": kms_key.key_arn},
            "ResourceConfig": resource_config,
            "StoppingCondition": {"MaxRuntimeInSeconds": jobs.training_max_runtime_hours * 3600,
                                  **({"MaxWaitTimeInSeconds": jobs.training_max_runtime_hours * 3600 * 2}
                                     if jobs.training_use_spot else {})},
            "EnableManagedSpotTraining": jobs.training_use_spot,
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

    def _create_model(self, endpoint: EndpointConfig, execution_role: iam.IRole) -> tasks.CallAwsService:
        """CreateModel: the tuned model in the custom container, with the endpoint's own environment."""
        serving_instance = INSTANCES[endpoint.instance_type]
        serving_image = images.image_uri(self, "pytorch-inference", endpoint.pytorch_version,
                                         accelerated=serving_instance.accelerated)
        model_name = jsonata(f"'{self.name_prefix}-' & $substringAfter($trainingJob, '{self.name_prefix}-')")
        return tasks.CallAwsService(
            self, "CreateModel", service="sagemaker", action="createModel",
            iam_resources=[self._sagemaker_arn("model", f"{self.name_prefix}-*")],
            parameters={
                "ModelName": model_name,
                "ExecutionRoleArn": execution_role.role_arn,
                "EnableNetworkIsolation": True,
                "PrimaryContainer": {"Image": serving_image, "ModelDataUrl": jsonata("$modelData"),
                                     "Environment": custom_container_environment(endpoint, serving_instance)},
            },
            assign={"modelName": model_name},
        )

    def _blue_green_rollout(self, endpoint: EmbeddingEndpoint, kms_key: kms.IKey) -> Rollout:
        """A new endpoint config with the model, then a canary blue/green UpdateEndpoint."""
        config = endpoint.config
        configs = self._sagemaker_arn("endpoint-config", f"{self.name_prefix}-*")
        endpoint_arn = self._sagemaker_arn("endpoint", endpoint.endpoint_name)
        variant: dict[str, object] = {"VariantName": VARIANT_NAME, "ModelName": jsonata("$modelName"),
                                      "InstanceType": config.instance_type,
                                      "InitialInstanceCount": config.initial_instance_count}
        create_config = tasks.CallAwsService(
            self, "CreateEndpointConfig", service="sagemaker", action="createEndpointConfig",
            iam_resources=[configs],
            parameters={"EndpointConfigName": jsonata("$modelName"), "ProductionVariants": [variant],
                        **({"KmsKeyId": kms_key.key_arn} if config.volume_kms_supported else {})},
        )
        update = tasks.CallAwsService(
            self, "BlueGreenUpdate", service="sagemaker", action="updateEndpoint",
            iam_resources=[endpoint_arn, configs],
            parameters={
                "EndpointName": endpoint.endpoint_name, "EndpointConfigName": jsonata("$modelName"),
                "DeploymentConfig": {
                    "BlueGreenUpdatePolicy": {
                        "TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 300,
                                                        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20}},
                        "TerminationWaitInSeconds": 300, "MaximumExecutionTimeoutInSeconds": 3600},
                    "AutoRollbackConfiguration": _auto_rollback(endpoint),
                },
            },
        )
        describe = self._describe("DescribeEndpoint", "describeEndpoint", endpoint_arn,
                                  {"EndpointName": endpoint.endpoint_name},
                                  status="EndpointStatus", live_model="EndpointConfigName")
        return Rollout(updates=[create_config, update], describe=describe)

    def _rolling_update_rollout(self, endpoint: EmbeddingEndpoint, component_name: str) -> Rollout:
        """An endpoint that scales to zero hosts the model as an inference component: swap the
        component's model with a rolling update that rolls back on the same alarms."""
        component_arn = self._sagemaker_arn("inference-component", component_name)
        update = tasks.CallAwsService(
            self, "RollingUpdate", service="sagemaker", action="updateInferenceComponent",
            # inference-component is its only resource type (Service Authorization Reference).
            iam_resources=[component_arn],
            parameters={
                "InferenceComponentName": component_name,
                "Specification": {"ModelName": jsonata("$modelName"),
                                  "ComputeResourceRequirements": dict(endpoint.compute_requirements)},
                "DeploymentConfig": {
                    "RollingUpdatePolicy": {"MaximumBatchSize": {"Type": "COPY_COUNT", "Value": 1},
                                            "WaitIntervalInSeconds": 120},
                    "AutoRollbackConfiguration": _auto_rollback(endpoint),
                },
            },
        )
        describe = self._describe("DescribeInferenceComponent", "describeInferenceComponent", component_arn,
                                  {"InferenceComponentName": component_name},
                                  status="InferenceComponentStatus", live_model="Specification.ModelName")
        return Rollout(updates=[update], describe=describe)

    def _describe(self, construct_id: str, action: str, arn: str, parameters: dict[str, object], *,
                  status: str, live_model: str) -> tasks.CallAwsService:
        """Describe what the rollout updates: assigns its status, what it serves now (liveConfig,
        named like the model) and the failure reason."""
        return tasks.CallAwsService(
            self, construct_id, service="sagemaker", action=action, iam_resources=[arn], parameters=parameters,
            assign={"status": jsonata(f"$states.result.{status}"),
                    "liveConfig": jsonata(f"$states.result.{live_model}"),
                    "failure": jsonata("$states.result.FailureReason ? $states.result.FailureReason : ''")},
        )

    def _deployed_choice(self, record: tasks.CallAwsService, wait: sfn.Wait) -> sfn.Choice:
        """InService with the new model → record it; InService with another → rolled back;
        a terminal status → failed; anything else → wait again."""
        deploy_failed = sfn.Fail(self, "DeployFailed", error="DeployFailed",
                                 cause=jsonata("'the update ended in status ' & $status & ': ' & $failure"))
        rolled_back = sfn.Fail(self, "RolledBack", error="RolledBack",
                               cause=jsonata("'the endpoint rolled back to ' & $liveConfig & ' (an alarm fired)'"))
        deployed = sfn.Choice(self, "Deployed")
        deployed.when(sfn.Condition.jsonata("{% $status = 'InService' and $liveConfig = $modelName %}"),
                      record.next(sfn.Succeed(self, "Promoted")))
        deployed.when(sfn.Condition.jsonata("{% $status = 'InService' %}"), rolled_back)
        # Every other status that no longer changes by itself ends the run; only the
        # transitional ones (Creating, Updating, SystemUpdating, RollingBack, Deleting) wait.
        terminal = ", ".join(f"'{s}'" for s in FAILED_STATUSES)
        deployed.when(sfn.Condition.jsonata(f"{{% $status in [{terminal}] %}}"), deploy_failed)
        deployed.otherwise(wait)
        return deployed

    def _grant_state_machine(self, execution_role: iam.IRole, endpoint: EmbeddingEndpoint,
                             kms_key: kms.IKey) -> None:
        role = self.state_machine.role
        grant_sync_job(role, self.name_prefix, "Training")
        # The steps' own grants (CallAwsService iam_resources): per-run models and endpoint configs.
        acknowledge_per_run_names(role, self.name_prefix, "model", "endpoint-config")
        # The training job runs with the execution role: PassRole, to SageMaker only.
        grant_pass_to_sagemaker(execution_role, role)
        # Automatic rollback reads the alarms it watches: "Ensure that your IAM execution role has
        # permission to perform the cloudwatch:DescribeAlarms action on the auto-rollback alarms"
        # (https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html).
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["cloudwatch:DescribeAlarms"], resources=[a.alarm_arn for a in endpoint.rollback_alarms]))
        if endpoint.inference_component_name is None and endpoint.config.volume_kms_supported:
            # UpdateEndpoint onto a config with a KmsKeyId needs kms:CreateGrant
            # (https://docs.aws.amazon.com/sagemaker/latest/dg/api-permissions-reference.html);
            # the grant can only be for an AWS resource (SageMaker's instances), never for us.
            role.add_to_principal_policy(iam.PolicyStatement(
                actions=["kms:CreateGrant"], resources=[kms_key.key_arn],
                conditions={"Bool": {"kms:GrantIsForAWSResource": True}}))

    def _sagemaker_arn(self, resource: str, name: str) -> str:
        return cdk.Stack.of(self).format_arn(service="sagemaker", resource=resource, resource_name=name)


@dataclass(frozen=True)
class Rollout:
    """The steps that put the new model behind the endpoint, and the step that reads how it went."""

    updates: list[tasks.CallAwsService]
    describe: tasks.CallAwsService


def _auto_rollback(endpoint: EmbeddingEndpoint) -> dict[str, object]:
    return {"Alarms": [{"AlarmName": a.alarm_name} for a in endpoint.rollback_alarms]}


def grant_pass_to_sagemaker(execution_role: iam.IRole, grantee: iam.IGrantable) -> iam.Grant:
    """iam:PassRole of the SageMaker execution role, to SageMaker only."""
    return iam.Grant.add_to_principal(
        grantee=grantee, actions=["iam:PassRole"], resource_arns=[execution_role.role_arn],
        conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}})
