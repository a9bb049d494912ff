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

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
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
from stacks.components.embedding_endpoint import MODEL_MOUNT, VARIANT_NAME
from stacks.components.source_bundle import TrainingSourceBundle
from stacks.config import EndpointConfig, JobsConfig
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
    return sfn.StateMachine(
        scope, "StateMachine", state_machine_name=name, query_language=sfn.QueryLanguage.JSONATA,
        definition_body=sfn.DefinitionBody.from_chainable(start), timeout=timeout, tracing_enabled=True,
        logs=sfn.LogOptions(destination=logs.LogGroup(scope, "Logs", retention=logs.RetentionDays.ONE_MONTH,
                                                      removal_policy=cdk.RemovalPolicy.DESTROY),
                            level=sfn.LogLevel.ALL))


class FineTuneWorkflow(Construct):
    """Train on pairs in S3, promote the tuned model only if it beats the base model.

    Keyword-only properties:
      name_prefix: prefix of every SageMaker job, model and config name (semsearch-<stage>).
      jobs: hyperparameters, instance type, spot, the promotion gain.
      endpoint_name / endpoint: the endpoint a promoted model replaces, and its config.
      rollback_alarms: alarms that roll a blue/green update back.
      execution_role: the SageMaker role for the job and the new model.
      artifacts / kms_key: where data, checkpoints and outputs live, and their key.
      latest_model: SSM parameter that receives the promoted model's name.
      inference_component: (name, compute requirements) when the endpoint hosts the model as
        an inference component (it scales to zero); the rollout then swaps that component.
    """

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str, jobs: JobsConfig,
                 endpoint_name: str, endpoint: EndpointConfig, rollback_alarms: Sequence[cloudwatch.IAlarm],
                 execution_role: iam.IRole, artifacts: s3.IBucket, kms_key: kms.IKey,
                 latest_model: ssm.IStringParameter,
                 inference_component: tuple[str, dict[str, int]] | None = None) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        model = endpoint.model
        training_instance = INSTANCES[jobs.training_instance_type]
        serving_instance = INSTANCES[endpoint.instance_type]
        source = TrainingSourceBundle(self, "Source")
        execution_role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[source.asset.bucket.arn_for_objects(source.asset.s3_object_key)]))
        training_image = images.image_uri(self, "pytorch-training", "2.6.0", accelerated=training_instance.accelerated)
        serving_image = images.image_uri(self, "pytorch-inference", endpoint.pytorch_version,
                                         accelerated=serving_instance.accelerated)
        bucket_uri = f"s3://{artifacts.bucket_name}"
        job_name = jsonata(f"'{name_prefix}-ft-' & $string($millis())")

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
            "TrainingJobName": job_name,
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
        train = sfn.CustomState(self, "Train", state_json={
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
        fail_on_error(self, train, "TrainingFailed", "the training job")

        gate = sfn.Choice(self, "TunedBeatsBase", comment=f"promote only if {GAIN_METRIC} >= {jobs.min_ndcg_gain}")
        metrics_missing = sfn.Fail(self, "MetricsMissing", error="MetricsMissing",
                                   cause=f"the training job reported no {GAIN_METRIC} metric")
        not_promoted = sfn.Fail(self, "NotPromoted", error="GateRejected",
                                cause=jsonata(f"'tuned model gained ' & $string($gain) & ' {contract.PRIMARY_METRIC}"
                                              f" over the base model; promotion needs {jobs.min_ndcg_gain}'"))

        model_name = jsonata(f"'{name_prefix}-' & $substringAfter($trainingJob, '{name_prefix}-')")
        create_model = tasks.CallAwsService(
            self, "CreateModel", service="sagemaker", action="createModel",
            iam_resources=[stack.format_arn(service="sagemaker", resource="model", resource_name=f"{name_prefix}-*")],
            parameters={
                "ModelName": model_name,
                "ExecutionRoleArn": execution_role.role_arn,
                "EnableNetworkIsolation": True,
                "PrimaryContainer": {"Image": serving_image, "ModelDataUrl": jsonata("$modelData"), "Environment": {
                    "SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": f"{MODEL_MOUNT}/code",
                    "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
                    "SEMSEARCH_THREADS": str(serving_instance.vcpus)}},
            },
            assign={"modelName": model_name},
        )
        endpoint_arn = stack.format_arn(service="sagemaker", resource="endpoint", resource_name=endpoint_name)
        rollback = {"Alarms": [{"AlarmName": a.alarm_name} for a in rollback_alarms]}
        wait = sfn.Wait(self, "WaitForDeployment", time=sfn.WaitTime.duration(cdk.Duration.minutes(1)))
        rollout: list[tasks.CallAwsService]
        if inference_component is None:
            variant: dict[str, object] = {"VariantName": VARIANT_NAME, "ModelName": jsonata("$modelName"),
                                          "InstanceType": endpoint.instance_type,
                                          "InitialInstanceCount": endpoint.initial_instance_count}
            create_config = tasks.CallAwsService(
                self, "CreateEndpointConfig", service="sagemaker", action="createEndpointConfig",
                iam_resources=[stack.format_arn(service="sagemaker", resource="endpoint-config",
                                                resource_name=f"{name_prefix}-*")],
                parameters={"EndpointConfigName": jsonata("$modelName"), "ProductionVariants": [variant],
                            **({"KmsKeyId": kms_key.key_arn} if endpoint.volume_kms_supported else {})},
            )
            update = tasks.CallAwsService(
                self, "BlueGreenUpdate", service="sagemaker", action="updateEndpoint",
                iam_resources=[endpoint_arn, stack.format_arn(service="sagemaker", resource="endpoint-config",
                                                              resource_name=f"{name_prefix}-*")],
                parameters={
                    "EndpointName": endpoint_name, "EndpointConfigName": jsonata("$modelName"),
                    "DeploymentConfig": {
                        "BlueGreenUpdatePolicy": {
                            "TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 300,
                                                            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20}},
                            "TerminationWaitInSeconds": 300, "MaximumExecutionTimeoutInSeconds": 3600},
                        "AutoRollbackConfiguration": rollback,
                    },
                },
            )
            describe = tasks.CallAwsService(
                self, "DescribeEndpoint", service="sagemaker", action="describeEndpoint",
                iam_resources=[endpoint_arn], parameters={"EndpointName": endpoint_name},
                assign={"status": jsonata("$states.result.EndpointStatus"),
                        "liveConfig": jsonata("$states.result.EndpointConfigName"),
                        "failure": jsonata("$states.result.FailureReason ? $states.result.FailureReason : ''")},
            )
            rollout = [create_config, update]
        else:
            # An endpoint that scales to zero hosts the model as an inference component: swap
            # the component's model with a rolling update that rolls back on the same alarms.
            component_name, compute = inference_component
            component_arn = stack.format_arn(service="sagemaker", resource="inference-component",
                                             resource_name=component_name)
            update = tasks.CallAwsService(
                self, "RollingUpdate", service="sagemaker", action="updateInferenceComponent",
                # inference-component is its only resource type (Service Authorization Reference).
                iam_resources=[component_arn],
                parameters={
                    "InferenceComponentName": component_name,
                    "Specification": {"ModelName": jsonata("$modelName"), "ComputeResourceRequirements": compute},
                    "DeploymentConfig": {
                        "RollingUpdatePolicy": {"MaximumBatchSize": {"Type": "COPY_COUNT", "Value": 1},
                                                "WaitIntervalInSeconds": 120},
                        "AutoRollbackConfiguration": rollback,
                    },
                },
            )
            describe = tasks.CallAwsService(
                self, "DescribeInferenceComponent", service="sagemaker", action="describeInferenceComponent",
                iam_resources=[component_arn], parameters={"InferenceComponentName": component_name},
                assign={"status": jsonata("$states.result.InferenceComponentStatus"),
                        "liveConfig": jsonata("$states.result.Specification.ModelName"),
                        "failure": jsonata("$states.result.FailureReason ? $states.result.FailureReason : ''")},
            )
            rollout = [update]
        record = tasks.CallAwsService(
            self, "RecordPromotedModel", service="ssm", action="putParameter",
            iam_resources=[latest_model.parameter_arn],
            parameters={"Name": latest_model.parameter_name, "Value": jsonata("$modelName"), "Overwrite": True},
        )
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
        for step in (create_model, *rollout, describe, record):
            fail_on_error(self, step, f"{step.node.id}Failed", step.node.id)

        gate.when(sfn.Condition.jsonata("{% $gain = null %}"), metrics_missing)
        promote: sfn.INextable = create_model
        for step in rollout:
            promote = promote.next(step)  # type: ignore[assignment]
        gate.when(sfn.Condition.jsonata(f"{{% $gain >= {jobs.min_ndcg_gain} %}}"), create_model)
        promote.next(wait)
        gate.otherwise(not_promoted)
        wait.next(describe).next(deployed)

        self.state_machine = workflow_state_machine(
            self, name=f"{name_prefix}-fine-tune", start=train.next(gate),
            timeout=cdk.Duration.hours(jobs.training_max_runtime_hours * 2 + 3))
        role = self.state_machine.role
        # createTrainingJob.sync, as AWS documents it for Step Functions
        # (https://docs.aws.amazon.com/step-functions/latest/dg/sagemaker-iam.html, and aws-cdk-lib's
        # aws-stepfunctions-tasks/lib/sagemaker/create-training-job.ts): the job, ListTags on "*",
        # AddTags (Step Functions tags the job it starts), the managed EventBridge rule that
        # reports the job's end, and PassRole of the execution role to SageMaker only.
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
                     "sagemaker:AddTags"],
            resources=[stack.format_arn(service="sagemaker", resource="training-job", resource_name=f"{name_prefix}-*")]))
        role.add_to_principal_policy(iam.PolicyStatement(actions=["sagemaker:ListTags"], resources=["*"]))
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            resources=[stack.format_arn(service="events", resource="rule",
                                        resource_name="StepFunctionsGetEventsForSageMakerTrainingJobsRule")]))
        grant_pass_to_sagemaker(execution_role, role)
        # Automatic rollback reads the alarms it watches: "Ensure that your IAM execution role has
        # permission to perform the cloudwatch:DescribeAlarms action on the auto-rollback alarms"
        # (https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html).
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["cloudwatch:DescribeAlarms"], resources=[a.alarm_arn for a in rollback_alarms]))
        if inference_component is None and endpoint.volume_kms_supported:
            # UpdateEndpoint onto a config with a KmsKeyId needs kms:CreateGrant
            # (https://docs.aws.amazon.com/sagemaker/latest/dg/api-permissions-reference.html);
            # the grant can only be for an AWS resource (SageMaker's instances), never for us.
            role.add_to_principal_policy(iam.PolicyStatement(
                actions=["kms:CreateGrant"], resources=[kms_key.key_arn],
                conditions={"Bool": {"kms:GrantIsForAWSResource": True}}))


def grant_pass_to_sagemaker(execution_role: iam.IRole, grantee: iam.IGrantable) -> iam.Grant:
    """iam:PassRole of the SageMaker execution role, to SageMaker only."""
    return iam.Grant.add_to_principal(
        grantee=grantee, actions=["iam:PassRole"], resource_arns=[execution_role.role_arn],
        conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}})
