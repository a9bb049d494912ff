"""Batch embedding: a SageMaker batch-transform job over JSONL in S3, then a bulk load of
the vectors into the OpenSearch index (no re-embedding).

Start input (all optional): {"input_s3_uri": "s3://…", "model_name": "…"}. Without a
model name the workflow uses the last model the fine-tune workflow promoted (an SSM
parameter). An upload under the artifact bucket's batch/input/ starts it too (EventBridge).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks.catalog import INSTANCES
from stacks.components.fine_tune_workflow import JOBS_PREFIX, fail_on_error, jsonata, workflow_state_machine
from stacks.config import JobsConfig

BATCH_INPUT_PREFIX = "batch/input/"
NO_MODEL = "none"


class BatchEmbedWorkflow(Construct):
    """CreateTransformJob (.sync; SplitType Line, MultiRecord, AssembleWith Line) → bulk load.

    Keyword-only properties:
      name_prefix: prefix of job names (semsearch-<stage>).
      jobs: transform instance type/count and payload size.
      execution_role: the SageMaker role (reads the input prefix, writes jobs/batch/).
      artifacts / kms_key: the stage bucket and key.
      latest_model: SSM parameter naming the model to use when the input names none.
      loader: the bulk-loader function (payload: bucket, prefix; result: counts).
    """

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str, jobs: JobsConfig,
                 execution_role: iam.IRole, artifacts: s3.IBucket, kms_key: kms.IKey,
                 latest_model: ssm.IStringParameter, loader: lambda_.IFunction) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        bucket_uri = f"s3://{artifacts.bucket_name}"
        transform_instance = INSTANCES[jobs.transform_instance_type]

        resolve_model = tasks.CallAwsService(
            self, "LatestModel", service="ssm", action="getParameter",
            iam_resources=[latest_model.parameter_arn], parameters={"Name": latest_model.parameter_name},
            assign={"modelName": jsonata("$exists($states.input.model_name) ? $states.input.model_name : "
                                         "$states.result.Parameter.Value"),
                    "inputUri": jsonata(f"$exists($states.input.input_s3_uri) ? $states.input.input_s3_uri : "
                                        f"'{bucket_uri}/{BATCH_INPUT_PREFIX}'"),
                    "jobName": jsonata(f"'{name_prefix}-embed-' & $string($millis())")},
        )
        no_model = sfn.Fail(self, "NoModel", error="NoModel",
                            cause="no model to embed with: pass model_name, or run the fine-tune workflow first")
        has_model = sfn.Choice(self, "HasModel")

        resources: dict[str, object] = {"InstanceType": jobs.transform_instance_type,
                                        "InstanceCount": jobs.transform_instance_count}
        if not transform_instance.local_nvme:
            resources["VolumeKmsKeyId"] = kms_key.key_arn
        output_prefix = f"{JOBS_PREFIX}batch/"
        transform = sfn.CustomState(self, "Transform", state_json={
            "Type": "Task",
            "Resource": f"arn:{cdk.Aws.PARTITION}:states:::sagemaker:createTransformJob.sync",
            "Arguments": {
                "TransformJobName": jsonata("$jobName"),
                "ModelName": jsonata("$modelName"),
                "BatchStrategy": "MultiRecord",
                "MaxPayloadInMB": jobs.transform_max_payload_mb,
                "TransformInput": {
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": jsonata("$inputUri")}},
                    "ContentType": "application/jsonlines", "SplitType": "Line"},
                "TransformOutput": {"S3OutputPath": jsonata(f"'{bucket_uri}/{output_prefix}' & $jobName & '/'"),
                                    "Accept": "application/jsonlines", "AssembleWith": "Line",
                                    "KmsKeyId": kms_key.key_arn},
                "TransformResources": resources,
                # Keep each input line's fields (id, text) next to its embedding, so the
                # loader indexes the text without embedding anything again.
                "DataProcessing": {"JoinSource": "Input"},
            },
        })
        fail_on_error(self, transform, "TransformFailed", "the transform job")

        load = tasks.LambdaInvoke(
            self, "BulkLoad", lambda_function=loader,
            payload=sfn.TaskInput.from_object({"bucket": artifacts.bucket_name,
                                               "prefix": jsonata(f"'{output_prefix}' & $jobName & '/'")}),
            retry_on_service_exceptions=True,
            outputs=jsonata("$states.result.Payload"),
        )
        fail_on_error(self, load, "LoadFailed", "the bulk load")
        check = sfn.Choice(self, "AllDocumentsIndexed")
        check.when(sfn.Condition.jsonata("{% $states.input.documents_in = $states.input.documents_indexed and "
                                         "$states.input.documents_failed = 0 %}"), sfn.Succeed(self, "Loaded"))
        check.otherwise(sfn.Fail(self, "LoadIncomplete", error="LoadIncomplete",
                                 cause=jsonata("$string($states.input.documents_failed) & ' of ' & "
                                               "$string($states.input.documents_in) & ' documents failed to index: '"
                                               " & $string($states.input.failures)")))

        has_model.when(sfn.Condition.jsonata(f"{{% $modelName = '{NO_MODEL}' %}}"), no_model)
        has_model.otherwise(transform.next(load).next(check))
        self.state_machine = workflow_state_machine(self, name=f"{name_prefix}-batch-embed",
                                                    start=resolve_model.next(has_model),
                                                    timeout=cdk.Duration.hours(24))
        role = self.state_machine.role
        # createTransformJob.sync, as AWS documents it for Step Functions
        # (https://docs.aws.amazon.com/step-functions/latest/dg/sagemaker-iam.html, and aws-cdk-lib's
        # aws-stepfunctions-tasks/lib/sagemaker/create-transform-job.ts): the job, AddTags (Step
        # Functions tags the job it starts, aws/aws-cdk#26012), ListTags on "*", and the managed
        # EventBridge rule that reports the job's end. The job runs with the model's own role:
        # CreateTransformJob passes none.
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["sagemaker:CreateTransformJob", "sagemaker:DescribeTransformJob", "sagemaker:StopTransformJob",
                     "sagemaker:AddTags"],
            resources=[stack.format_arn(service="sagemaker", resource="transform-job",
                                        resource_name=f"{name_prefix}-*")]))
        role.add_to_principal_policy(iam.PolicyStatement(actions=["sagemaker:ListTags"], resources=["*"]))
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            resources=[stack.format_arn(service="events", resource="rule",
                                        resource_name="StepFunctionsGetEventsForSageMakerTransformJobsRule")]))

        # An upload under batch/input/ starts a run over that one object.
        self.upload_rule = events.Rule(self, "OnUpload", event_pattern=events.EventPattern(
            source=["aws.s3"], detail_type=["Object Created"],
            detail={"bucket": {"name": [artifacts.bucket_name]}, "object": {"key": [{"prefix": BATCH_INPUT_PREFIX}]}}))
        self.upload_rule.add_target(targets.SfnStateMachine(self.state_machine, input=events.RuleTargetInput.from_object(
            {"input_s3_uri": f"{bucket_uri}/{events.EventField.from_path('$.detail.object.key')}"})))
