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
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks.catalog import INSTANCES
from stacks.components.fine_tune_workflow import (
    JOBS_PREFIX,
    fail_on_error,
    grant_sync_job,
    jsonata,
    workflow_state_machine,
)
from stacks.components.lambda_assets import RUNTIME, lambda_code
from stacks.components.lambda_vpc import LambdaVpcPlacement
from stacks.config import JobsConfig, VpcConfig
from stacks.nag import acknowledge

BATCH_INPUT_PREFIX = "batch/input/"
NO_MODEL = "none"


class BatchEmbedWorkflow(Construct):
    """CreateTransformJob (.sync; SplitType Line, MultiRecord, AssembleWith Line) → bulk load.

    Keyword-only properties:
      name_prefix: prefix of job and function names (semsearch-<stage>).
      jobs: transform instance type/count and payload size.
      execution_role: the SageMaker role (reads the input prefix, writes jobs/batch/).
      artifacts / kms_key: the stage bucket and key.
      latest_model: SSM parameter naming the model to use when the input names none.
      loader_role: the bulk loader's role (the search stack maps it in OpenSearch). It
        receives the loader's logging and, with a VPC, network-interface permissions here;
        reading the transform output (``output_prefix``) is the caller's grant.
      domain_url / index_name / text_field / embedding_field: where the loader writes.
      vpc: the stage's VPC, where the domain answers (default: none).

    ``loader`` is the bulk-loader function (payload: bucket, prefix; result: counts).
    """

    #: Where transform jobs write, one folder per job: what the loader reads.
    output_prefix = f"{JOBS_PREFIX}batch/"

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str, jobs: JobsConfig,
                 execution_role: iam.IRole, artifacts: s3.IBucket, kms_key: kms.IKey,
                 latest_model: ssm.IStringParameter, loader_role: iam.IRole, domain_url: str, index_name: str,
                 text_field: str, embedding_field: str, vpc: VpcConfig | None = None) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        bucket_uri = f"s3://{artifacts.bucket_name}"
        self.loader = _bulk_loader(self, name_prefix=name_prefix, role=loader_role, vpc=vpc, environment={
            "OPENSEARCH_URL": domain_url, "INDEX_NAME": index_name, "AUTH_MODE": "sigv4",
            "EMBEDDING_FIELD": embedding_field, "TEXT_FIELD": text_field})
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
        output_prefix = self.output_prefix
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
            self, "BulkLoad", lambda_function=self.loader,
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
        # The job runs with the model's own role: CreateTransformJob passes none.
        grant_sync_job(role, name_prefix, "Transform")
        loader_id = stack.resolve(stack.get_logical_id(self.loader.node.default_child))  # type: ignore[arg-type]
        acknowledge(role, f"AwsSolutions-IAM5[Resource::<{loader_id}.Arn>:*]",
                    "invokes exactly the bulk loader (the BulkLoad step's grant); ':*' covers its versions")

        # An upload under batch/input/ starts a run over that one object.
        upload_rule = events.Rule(self, "OnUpload", event_pattern=events.EventPattern(
            source=["aws.s3"], detail_type=["Object Created"],
            detail={"bucket": {"name": [artifacts.bucket_name]}, "object": {"key": [{"prefix": BATCH_INPUT_PREFIX}]}}))
        upload_rule.add_target(targets.SfnStateMachine(self.state_machine, input=events.RuleTargetInput.from_object(
            {"input_s3_uri": f"{bucket_uri}/{events.EventField.from_path('$.detail.object.key')}"})))


def _bulk_loader(workflow: BatchEmbedWorkflow, *, name_prefix: str, role: iam.IRole, vpc: VpcConfig | None,
                 environment: dict[str, str]) -> lambda_.Function:
    """The function that writes batch-transform embeddings into the index with _bulk.

    It and its log group are created at the stack's top level, where they were before this
    component owned them: the same construct paths keep their logical IDs, and the log group
    has a fixed name, which a new logical ID would try to create before deleting the old one.
    """
    stack = cdk.Stack.of(workflow)
    # With a VPC the domain answers only inside it: the loader runs there too.
    placement = LambdaVpcPlacement(workflow, "LambdaVpc", vpc=vpc) if vpc else None
    if placement is not None:
        placement.grant_eni(role)
    # The role (search stack) has no logging policy: it may write this one group only. The
    # group has a fixed name so that the grant names it without a reference back to this stack.
    log_group_name = f"/aws/lambda/{name_prefix}-bulk-loader"
    log_group = logs.LogGroup(stack, "BulkLoaderLogs", log_group_name=log_group_name,
                              retention=logs.RetentionDays.ONE_MONTH, removal_policy=cdk.RemovalPolicy.DESTROY)
    role.add_to_principal_policy(iam.PolicyStatement(
        actions=["logs:CreateLogStream", "logs:PutLogEvents"],
        resources=[stack.format_arn(service="logs", resource="log-group", resource_name=log_group_name,
                                    arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME) + ":*"]))
    acknowledge(role, "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:"
                      f"<AWS::AccountId>:log-group:{log_group_name}:*]",
                "Lambda names the loader's log streams at run time inside its one log group")
    loader = lambda_.Function(
        stack, "BulkLoader", runtime=RUNTIME, architecture=lambda_.Architecture.ARM_64,
        code=lambda_code("bulk_loader"), handler="bulk_loader.handler.handler", role=role,
        timeout=cdk.Duration.minutes(15), memory_size=1024,
        description="Writes batch-transform embeddings into the OpenSearch index with _bulk",
        environment=environment, log_group=log_group, **(placement.function_props if placement else {}),
    )
    acknowledge(loader, "AwsSolutions-L1",
                "pinned to python3.12, the runtime this code is tested against; bump deliberately")
    return loader
