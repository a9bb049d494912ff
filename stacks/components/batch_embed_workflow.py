"""Batch embedding on the model version that serves the search stack's endpoint: documents
(JSONL in S3) → request lines → a SageMaker batch-transform job on that version's model →
a bulk load of the vectors into that version's index (no re-embedding).

Start input (all optional): {"input_s3_uri": "s3://…", "model_name": "…"}. The workflow reads
what serves the endpoint at run time, from the two SSM parameters the model stack writes
(stacks.names.serving_parameter): the SageMaker model (``serving-model``) and the endpoint
(``serving-endpoint``, whose name carries the model version). So it always has a model: the
base model on day one, the promoted one after a fine-tune. ``model_name`` transforms with
another SageMaker model instead; the loader's check compares the index with the serving
endpoint, so that model must make the serving version's vectors. An upload under the artifact
bucket's batch/input/ starts a run over that one object (EventBridge).

Passages are embedded as the index's ingest pipeline embeds them: the same request body and
prefix per flavor (lambda/endpoint_request), at most the endpoint's max_client_batch_size
texts a request (bulk_loader.prepare). Into that version's index: the loader first checks
that the index behind the alias embeds with the endpoint the run read, and writes nothing
otherwise (bulk_loader.serving).

The transform job runs as the model's own role (CreateTransformJob names none): the serving
model's role needs the job's S3 prefix, key, logs and metrics (``allow_transform_jobs``).

On a stage on Amazon Bedrock (``bedrock``) the index embeds with that Bedrock model, so batch
embedding does too, and nothing of SageMaker runs: Prepare writes the model's InvokeModel
bodies, exactly what the connector sends for passages (flavor bedrock,
endpoint_request.bedrock); Embed (bulk_loader.embed_bedrock, a Lambda whose role may
bedrock:InvokeModel on that one foundation model) sends them and writes the transform's output
shape, invoked again from where it stopped while a run needs more than one invocation's 15
minutes; the loader's check then wants the index's connector to invoke that same model with
the same parameters. Not a Map state: the calls are I/O, which one function runs concurrently
and in order, and a continuation loop keeps one run's output in one place without a
distributed map's child executions and their extra role. Not Bedrock's batch inference
(CreateModelInvocationJob): it needs a service role and at least its minimum record count
per job, and writes its own output format. ``model_name`` is refused: it names a SageMaker model.
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
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks import batch_transform
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
from stacks.components.sagemaker_execution_role import SageMakerExecutionRole
from stacks.config import BedrockConfig, EndpointConfig, JobsConfig, VpcConfig
from stacks.nag import acknowledge
from stacks.storage_stack import artifacts_bucket_name, artifacts_nag_arn

BATCH_INPUT_PREFIX = "batch/input/"
#: Where transform jobs work, one folder per job: requests/ (prepare), output/ (the loader's input).
OUTPUT_PREFIX = f"{JOBS_PREFIX}batch/"


def allow_transform_jobs(role: SageMakerExecutionRole, *, stage: str, kms_key: kms.IKey) -> None:
    """What a transform job needs from the role of the model it runs (the serving model's):
    read its request lines and write its output under jobs/batch/ (SSE-KMS with the stage
    key), a volume encrypted with that key, and the TransformJobs logs and metrics.

    The statements go into the role's own policy (the model stack's), naming the bucket by
    its deterministic name: no reference from the model stack to the jobs stack.
    """
    bucket_arn = f"arn:{cdk.Aws.PARTITION}:s3:::{artifacts_bucket_name(stage)}"
    role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                                           resources=[f"{bucket_arn}/{OUTPUT_PREFIX}*"]))
    role.add_to_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket_arn],
                                           conditions={"StringLike": {"s3:prefix": [f"{OUTPUT_PREFIX}*"]}}))
    acknowledge(role, f"AwsSolutions-IAM5[Resource::{artifacts_nag_arn(stage, OUTPUT_PREFIX + '*')}]",
                "transform jobs read and write per-run folders: access is limited to this key prefix")
    kms_key.grant(role, "kms:Decrypt", "kms:GenerateDataKey")
    role.add_to_policy(iam.PolicyStatement(actions=["kms:CreateGrant"], resources=[kms_key.key_arn],
                                           conditions={"Bool": {"kms:GrantIsForAWSResource": True}}))
    role.allow_containers(images=[], log_groups=["TransformJobs"], metric_namespaces=["/aws/sagemaker/TransformJobs"])


class BatchEmbedWorkflow(Construct):
    """ServingModel (SSM) → Prepare (Lambda) → Transform (.sync; one request per line) →
    BulkLoad (Lambda) → every prepared document indexed.

    Keyword-only properties:
      name_prefix: prefix of job and function names (semsearch-<stage>).
      jobs: transform instance type/count and payload size.
      endpoint: the configuration of the endpoint the search stack fronts: its flavor, its
        model's passage prefix and its batch limit shape the requests.
      serving_model_parameter / serving_endpoint_parameter: the SSM parameter names the model
        stack writes for that endpoint (stacks.names.serving_parameter).
      artifacts / kms_key: the stage bucket and key.
      loader_role: the bulk loader's role (the search stack maps it in OpenSearch). It
        receives the loader's logging and, with a VPC, network-interface permissions here;
        reading the transform output (``output_prefix``) is the caller's grant.
      domain_url / index_name / text_field / embedding_field: where the loader writes.
      vpc: the stage's VPC, where the domain answers (default: none).
      bedrock: the stage's Bedrock model when the index embeds with it (default: none): then
        Prepare → Embed (loop) → BulkLoad, and no ServingModel, no Transform.

    ``preparer`` writes request lines (its role, ``preparer_role``, may read the input and
    write under ``output_prefix`` by the caller's grants); ``loader`` is the bulk loader.
    On Bedrock, ``embedder`` sends the request lines (its role, ``embedder_role``, may invoke
    the model; reading and writing under ``output_prefix`` are the caller's grants).
    """

    #: Where transform jobs work, one folder per job: what the loader reads.
    output_prefix = OUTPUT_PREFIX

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str, jobs: JobsConfig,
                 endpoint: EndpointConfig, serving_model_parameter: str, serving_endpoint_parameter: str,
                 artifacts: s3.IBucket, kms_key: kms.IKey, loader_role: iam.IRole, domain_url: str, index_name: str,
                 text_field: str, embedding_field: str, vpc: VpcConfig | None = None,
                 bedrock: BedrockConfig | None = None) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        bucket_uri = f"s3://{artifacts.bucket_name}"
        # With a VPC the domain answers only inside it: the loader runs there, and so does
        # the preparer (every function of a stage with a VPC runs in its subnets).
        placement = LambdaVpcPlacement(self, "LambdaVpc", vpc=vpc) if vpc else None
        self.loader = _bulk_loader(self, name_prefix=name_prefix, role=loader_role, placement=placement, environment={
            "OPENSEARCH_URL": domain_url, "INDEX_NAME": index_name, "AUTH_MODE": "sigv4",
            "EMBEDDING_FIELD": embedding_field, "TEXT_FIELD": text_field})
        self.preparer_role = iam.Role(self, "PreparerRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                                      description="Batch-embed prepare: documents into endpoint request lines")
        self.preparer = _preparer(self, name_prefix=name_prefix, role=self.preparer_role, placement=placement)
        self.embedder: lambda_.Function | None = None
        self.embedder_role: iam.Role | None = None
        if bedrock:
            start = _bedrock_steps(self, name_prefix=name_prefix, bedrock=bedrock, bucket_uri=bucket_uri,
                                   placement=placement, artifacts=artifacts)
            self.state_machine = workflow_state_machine(self, name=f"{name_prefix}-batch-embed", start=start,
                                                        timeout=cdk.Duration.hours(24))
            self._finish(stack, artifacts, bucket_uri)
            return
        transform_instance = INSTANCES[jobs.transform_instance_type]
        job_folder = f"'{OUTPUT_PREFIX}' & $jobName & '/"

        def parameter(name: str) -> str:
            """The value of one parameter in the GetParameters result ('' when it is missing)."""
            return f"($v := $states.result.Parameters[Name = '{name}'].Value; $exists($v) ? $v : '')"

        resolve = tasks.CallAwsService(
            self, "ServingModel", service="ssm", action="getParameters", iam_action="ssm:GetParameters",
            iam_resources=[stack.format_arn(service="ssm", resource="parameter", resource_name=p.lstrip("/"))
                           for p in (serving_model_parameter, serving_endpoint_parameter)],
            # One call: the model and the endpoint name of one deploy (a promotion moves both).
            parameters={"Names": [serving_model_parameter, serving_endpoint_parameter]},
            assign={"modelName": jsonata(f"$exists($states.input.model_name) ? $states.input.model_name : "
                                         f"{parameter(serving_model_parameter)}"),
                    "endpointName": jsonata(parameter(serving_endpoint_parameter)),
                    "inputUri": jsonata(f"$exists($states.input.input_s3_uri) ? $states.input.input_s3_uri : "
                                        f"'{bucket_uri}/{BATCH_INPUT_PREFIX}'"),
                    "jobName": jsonata(f"'{name_prefix}-embed-' & $string($millis())")},
        )
        not_serving = sfn.Fail(self, "NotServing", error="NotServing",
                               cause=f"SSM parameter {serving_model_parameter} or {serving_endpoint_parameter} is "
                                     "missing: deploy the model stack, which writes what serves the endpoint")
        serving = sfn.Choice(self, "Serving")

        prepare = tasks.LambdaInvoke(
            self, "Prepare", lambda_function=self.preparer,
            payload=sfn.TaskInput.from_object({
                "input": jsonata("$inputUri"),
                "output": jsonata(f"'{bucket_uri}/' & {job_folder}requests/'"),
                "flavor": endpoint.flavor, "prefix": endpoint.model.passage_prefix,
                **batch_transform.request_limits(endpoint, jobs)}),
            retry_on_service_exceptions=True,
            assign={"documents": jsonata("$states.result.Payload.documents")},
        )
        fail_on_error(self, prepare, "PrepareFailed", "preparing the request lines")

        resources: dict[str, object] = {"InstanceType": jobs.transform_instance_type,
                                        "InstanceCount": jobs.transform_instance_count}
        if not transform_instance.local_nvme:
            resources["VolumeKmsKeyId"] = kms_key.key_arn
        transform = sfn.CustomState(self, "Transform", state_json={
            "Type": "Task",
            "Resource": f"arn:{cdk.Aws.PARTITION}:states:::sagemaker:createTransformJob.sync",
            "Arguments": {
                "TransformJobName": jsonata("$jobName"),
                "ModelName": jsonata("$modelName"),
                # One line, one request (stacks/batch_transform.py): the endpoint gets the request
                # alone; its answer is joined to the line, whose ids and texts the loader pairs.
                "BatchStrategy": batch_transform.BATCH_STRATEGY,
                "MaxPayloadInMB": jobs.transform_max_payload_mb,
                "TransformInput": {
                    "DataSource": {"S3DataSource": {
                        "S3DataType": "S3Prefix", "S3Uri": jsonata(f"'{bucket_uri}/' & {job_folder}requests/'")}},
                    "ContentType": batch_transform.CONTENT_TYPE, "SplitType": batch_transform.SPLIT_TYPE},
                "TransformOutput": {
                    "S3OutputPath": jsonata(f"'{bucket_uri}/' & {job_folder}output/'"),
                    "Accept": batch_transform.CONTENT_TYPE, "AssembleWith": batch_transform.ASSEMBLE_WITH,
                    "KmsKeyId": kms_key.key_arn},
                "TransformResources": resources,
                "DataProcessing": dict(batch_transform.DATA_PROCESSING),
            },
        })
        fail_on_error(self, transform, "TransformFailed", "the transform job")

        load = _load_step(self, artifacts, job_folder, {"endpoint_name": jsonata("$endpointName")})
        check = _check_step(self, "the transform output")

        serving.when(sfn.Condition.jsonata("{% $modelName = '' or $endpointName = '' %}"), not_serving)
        serving.otherwise(prepare.next(transform).next(load).next(check))
        self.state_machine = workflow_state_machine(self, name=f"{name_prefix}-batch-embed",
                                                    start=resolve.next(serving), timeout=cdk.Duration.hours(24))
        grant_sync_job(self.state_machine.role, name_prefix, "Transform")
        self._finish(stack, artifacts, bucket_uri)

    def _finish(self, stack: cdk.Stack, artifacts: s3.IBucket, bucket_uri: str) -> None:
        """What every variant has: the invoke grants' acknowledgements and the upload rule."""
        role = self.state_machine.role
        for function in (self.loader, self.preparer, *([self.embedder] if self.embedder else [])):
            function_id = stack.resolve(stack.get_logical_id(function.node.default_child))  # type: ignore[arg-type]
            acknowledge(role, f"AwsSolutions-IAM5[Resource::<{function_id}.Arn>:*]",
                        "invokes exactly this function (its step's grant); ':*' covers its versions")

        # An upload under batch/input/ starts a run over that one object.
        upload_rule = events.Rule(self, "OnUpload", event_pattern=events.EventPattern(
            source=["aws.s3"], detail_type=["Object Created"],
            detail={"bucket": {"name": [artifacts.bucket_name]}, "object": {"key": [{"prefix": BATCH_INPUT_PREFIX}]}}))
        upload_rule.add_target(targets.SfnStateMachine(self.state_machine, input=events.RuleTargetInput.from_object(
            {"input_s3_uri": f"{bucket_uri}/{events.EventField.from_path('$.detail.object.key')}"})))


def _load_step(workflow: BatchEmbedWorkflow, artifacts: s3.IBucket, job_folder: str,
               made_by: dict[str, object]) -> tasks.LambdaInvoke:
    """BulkLoad: the job folder's output into the index, once the loader's check of ``made_by``
    (the endpoint, or the Bedrock model and its parameters, that made the vectors) passes."""
    load = tasks.LambdaInvoke(
        workflow, "BulkLoad", lambda_function=workflow.loader,
        payload=sfn.TaskInput.from_object({"bucket": artifacts.bucket_name,
                                           "prefix": jsonata(f"{job_folder}output/'"),
                                           "suffix": batch_transform.OUTPUT_SUFFIX,
                                           **made_by}),
        retry_on_service_exceptions=True,
        outputs=jsonata("$states.result.Payload"),
    )
    fail_on_error(workflow, load, "LoadFailed", "the bulk load")
    return load


def _check_step(workflow: BatchEmbedWorkflow, output: str) -> sfn.Choice:
    """Every prepared document indexed, or a Fail saying which are missing or failed."""
    check = sfn.Choice(workflow, "AllDocumentsIndexed")
    check.when(sfn.Condition.jsonata("{% $states.input.documents_in = $states.input.documents_indexed and "
                                     "$states.input.documents_failed = 0 and "
                                     "$states.input.documents_in = $documents %}"), sfn.Succeed(workflow, "Loaded"))
    check.when(sfn.Condition.jsonata("{% $states.input.documents_failed = 0 and "
                                     "$states.input.documents_in != $documents %}"),
               sfn.Fail(workflow, "DocumentsMissing", error="DocumentsMissing",
                        cause=jsonata(f"'{output} holds ' & $string($states.input.documents_in) & "
                                      "' documents; ' & $string($documents) & ' were prepared'")))
    check.otherwise(sfn.Fail(workflow, "LoadIncomplete", error="LoadIncomplete",
                             cause=jsonata("$string($states.input.documents_failed) & ' of ' & "
                                           "$string($states.input.documents_in) & ' documents failed to index: '"
                                           " & $string($states.input.failures)")))
    return check


def _function_logs(scope: Construct, construct_id: str, role: iam.IRole, name: str) -> logs.LogGroup:
    """A fixed-name log group for function ``name`` that ``role`` may write, and only it."""
    stack = cdk.Stack.of(scope)
    log_group_name = f"/aws/lambda/{name}"
    log_group = logs.LogGroup(scope, construct_id, log_group_name=log_group_name,
                              retention=logs.RetentionDays.ONE_MONTH, removal_policy=cdk.RemovalPolicy.DESTROY)
    role.add_to_principal_policy(iam.PolicyStatement(
        actions=["logs:CreateLogStream", "logs:PutLogEvents"],
        resources=[stack.format_arn(service="logs", resource="log-group", resource_name=log_group_name,
                                    arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME) + ":*"]))
    acknowledge(role, "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:"
                      f"<AWS::AccountId>:log-group:{log_group_name}:*]",
                "Lambda names the function's log streams at run time inside its one log group")
    return log_group


def _bulk_loader_function(scope: Construct, construct_id: str, *, handler: str, function_name: str,
                          description: str, role: iam.IRole, placement: LambdaVpcPlacement | None,
                          environment: dict[str, str] | None = None) -> lambda_.Function:
    """One function of the bulk_loader package, with its fixed-name log group (``<id>Logs``)
    beside it in ``scope``, writable by ``role`` only."""
    if placement is not None:
        placement.grant_eni(role)
    log_group = _function_logs(scope, f"{construct_id}Logs", role, function_name)
    function = lambda_.Function(
        scope, construct_id, runtime=RUNTIME, architecture=lambda_.Architecture.ARM_64,
        code=lambda_code("bulk_loader"), handler=handler, role=role,
        timeout=cdk.Duration.minutes(15), memory_size=1024, description=description,
        environment=environment, log_group=log_group, **(placement.function_props if placement else {}))
    acknowledge(function, "AwsSolutions-L1",
                "pinned to python3.12, the runtime this code is tested against; bump deliberately")
    return function


def _preparer(workflow: BatchEmbedWorkflow, *, name_prefix: str, role: iam.IRole,
              placement: LambdaVpcPlacement | None) -> lambda_.Function:
    """The function that turns documents into request lines (S3 only)."""
    return _bulk_loader_function(
        workflow, "Preparer", handler="bulk_loader.prepare.handler", function_name=f"{name_prefix}-batch-prepare",
        description="Batch embedding: documents into endpoint request lines, as the ingest pipeline asks",
        role=role, placement=placement)


def _bulk_loader(workflow: BatchEmbedWorkflow, *, name_prefix: str, role: iam.IRole,
                 placement: LambdaVpcPlacement | None, environment: dict[str, str]) -> lambda_.Function:
    """The function that writes batch-transform embeddings into the index with _bulk.

    It and its log group are created at the stack's top level, where they were before this
    component owned them: the same construct paths keep their logical IDs, and the log group
    has a fixed name, which a new logical ID would try to create before deleting the old one.
    The role (search stack) has no logging policy: it may write this one group only; the
    group has a fixed name so that the grant names it without a reference back to this stack.
    """
    return _bulk_loader_function(
        cdk.Stack.of(workflow), "BulkLoader", handler="bulk_loader.handler.handler",
        function_name=f"{name_prefix}-bulk-loader",
        description="Writes batch-transform embeddings into the OpenSearch index with _bulk",
        role=role, placement=placement, environment=environment)


def _bedrock_steps(workflow: BatchEmbedWorkflow, *, name_prefix: str, bedrock: BedrockConfig, bucket_uri: str,
                   placement: LambdaVpcPlacement | None, artifacts: s3.IBucket) -> sfn.IChainable:
    """Start → (model_name: refused) → Prepare → Embed, again until complete → BulkLoad → check."""
    stack = cdk.Stack.of(workflow)
    workflow.embedder_role = iam.Role(
        workflow, "EmbedderRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"Batch-embed on Bedrock: request lines through {bedrock.model_id}")
    # A foundation model's ARN names no account (arn:<partition>:bedrock:<region>::foundation-model/<id>).
    workflow.embedder_role.add_to_policy(iam.PolicyStatement(actions=["bedrock:InvokeModel"], resources=[
        stack.format_arn(service="bedrock", account="", resource="foundation-model", resource_name=bedrock.model_id)]))
    workflow.embedder = _bulk_loader_function(
        workflow, "BedrockEmbedder", handler="bulk_loader.embed_bedrock.handler",
        function_name=f"{name_prefix}-batch-embed-bedrock",
        description=f"Batch embedding: request lines through Bedrock model {bedrock.model_id}, as the connector sends",
        role=workflow.embedder_role, placement=placement)
    job_folder = f"'{OUTPUT_PREFIX}' & $jobName & '/"
    requests = batch_transform.bedrock_requests(bedrock)

    start = sfn.Pass(workflow, "Start", assign={
        "inputUri": jsonata(f"$exists($states.input.input_s3_uri) ? $states.input.input_s3_uri : "
                            f"'{bucket_uri}/{BATCH_INPUT_PREFIX}'"),
        "jobName": jsonata(f"'{name_prefix}-embed-' & $string($millis())")})
    model_name = sfn.Choice(workflow, "ModelNameGiven")
    refused = sfn.Fail(workflow, "NotASageMakerStage", error="NotASageMakerStage",
                       cause=f"model_name names a SageMaker model; this stage embeds with Amazon Bedrock model "
                             f"{bedrock.model_id}, as its index does: start without model_name")
    prepare = tasks.LambdaInvoke(
        workflow, "Prepare", lambda_function=workflow.preparer,
        payload=sfn.TaskInput.from_object({
            "input": jsonata("$inputUri"),
            "output": jsonata(f"'{bucket_uri}/' & {job_folder}requests/'"),
            "flavor": "bedrock", **requests}),
        retry_on_service_exceptions=True,
        assign={"documents": jsonata("$states.result.Payload.documents"), "embedFrom": 0},
    )
    fail_on_error(workflow, prepare, "PrepareFailed", "preparing the request lines")
    embed = tasks.LambdaInvoke(
        workflow, "Embed", lambda_function=workflow.embedder,
        payload=sfn.TaskInput.from_object({
            "input": jsonata(f"'{bucket_uri}/' & {job_folder}requests/'"),
            "output": jsonata(f"'{bucket_uri}/' & {job_folder}output/'"),
            "suffix": batch_transform.OUTPUT_SUFFIX,
            "model_id": bedrock.model_id, "dimension": bedrock.embedding_dimension,
            "start_at": jsonata("$embedFrom")}),
        retry_on_service_exceptions=True,
        assign={"embedFrom": jsonata("$states.result.Payload.next"),
                "embedComplete": jsonata("$states.result.Payload.complete")},
    )
    fail_on_error(workflow, embed, "EmbedFailed", "embedding with Bedrock")
    embedded = sfn.Choice(workflow, "Embedded")
    load = _load_step(workflow, artifacts, job_folder, {"bedrock_model_id": bedrock.model_id,
                                                        "bedrock_parameters": batch_transform.bedrock_parameters(bedrock)})
    embedded.when(sfn.Condition.jsonata("{% $embedComplete = true %}"),
                  load.next(_check_step(workflow, "the embedded output")))
    # A run longer than one invocation goes on where the last one stopped.
    embedded.otherwise(embed)
    model_name.when(sfn.Condition.jsonata("{% $exists($states.input.model_name) %}"), refused)
    model_name.otherwise(prepare.next(embed).next(embedded))
    return start.next(model_name)
