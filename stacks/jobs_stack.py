"""SageMaker jobs of a stage: the fine-tune, batch-embed and compare workflows."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from semsearch import compare_job
from stacks import images
from stacks.catalog import INSTANCES
from stacks.components.batch_embed_workflow import BATCH_INPUT_PREFIX, BatchEmbedWorkflow, allow_transform_jobs
from stacks.components.compare_workflow import CompareWorkflow
from stacks.components.embedding_endpoint import EmbeddingEndpoint
from stacks.components.fine_tune_workflow import JOBS_PREFIX, TRAINING_PREFIX, FineTuneWorkflow
from stacks.components.sagemaker_execution_role import SageMakerExecutionRole
from stacks.config import StageConfig
from stacks.nag import acknowledge
from stacks.names import MODEL_VERSION_STACK_PARTS, serving_parameter, stack_name
from stacks.storage_stack import artifacts_bucket_name, artifacts_nag_arn


class JobsStack(cdk.Stack):
    """Training, promotion, batch embedding and model comparison, with SageMaker roles scoped to
    their prefixes."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey,
                 endpoints: dict[str, EmbeddingEndpoint], domain_url: str, index_name: str,
                 loader_role: iam.IRole, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        prefix = f"semsearch-{config.name}"
        promote = config.promote_endpoint
        endpoint_config = config.endpoints[promote]

        self.stage = config.name
        # The bucket by its deterministic name: policies then spell out exact prefixes.
        artifacts = s3.Bucket.from_bucket_name(self, "Artifacts", artifacts_bucket_name(config.name))
        self.execution_role = SageMakerExecutionRole(self, "SageMakerRole",
                                                     description=f"{prefix}: training jobs")
        # Runs the training job only (transform jobs run as the serving model's role): reads its
        # inputs, writes only under jobs/.
        self._grant_prefixes(self.execution_role, read=[TRAINING_PREFIX, JOBS_PREFIX],
                             write=[JOBS_PREFIX])
        key.grant_encrypt_decrypt(self.execution_role)
        for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
            acknowledge(self.execution_role, f"AwsSolutions-IAM5[Action::{action}]",
                        "CDK's encrypt/decrypt grant on the one stage key that encrypts job data and volumes")
        # Training volumes encrypted with the stage key: CreateTrainingJob needs kms:CreateGrant
        # unless this role has it (SageMaker API
        # permissions reference; aws-cdk-lib's create-training-job.ts grants it the same way).
        self.execution_role.add_to_policy(iam.PolicyStatement(
            actions=["kms:CreateGrant"], resources=[key.key_arn],
            conditions={"Bool": {"kms:GrantIsForAWSResource": True}}))
        self.execution_role.allow_containers(
            images=[("pytorch-training", images.PYTORCH_TRAINING_VERSION,
                     INSTANCES[config.jobs.training_instance_type].accelerated)],
            log_groups=["TrainingJobs"], metric_namespaces=["/aws/sagemaker/*"])

        self.fine_tune = FineTuneWorkflow(
            self, "FineTune", name_prefix=prefix, stage=config.name, endpoint=promote,
            endpoint_config=endpoint_config, jobs=config.jobs, execution_role=self.execution_role,
            artifacts=artifacts, kms_key=key,
            # The stacks that read the promotion (the model) or what serves (search, ops), in deploy order.
            stacks_to_update=[stack_name(config.name, part) for part in MODEL_VERSION_STACK_PARTS],
            cloudformation_role_arn=cloudformation_role_arn(self))
        # Batch embedding runs on what serves the endpoint the search stack fronts, read at run time;
        # on a stage on Bedrock, with the Bedrock model the index embeds with.
        fronted = config.search.endpoint
        bedrock = config.bedrock if config.on_bedrock else None
        self.batch_embed = BatchEmbedWorkflow(
            self, "BatchEmbed", name_prefix=prefix, jobs=config.jobs, endpoint=config.connector_endpoint,
            serving_model_parameter=serving_parameter(config.name, fronted, "model"),
            serving_endpoint_parameter=serving_parameter(config.name, fronted, "endpoint"),
            artifacts=artifacts, kms_key=key, loader_role=loader_role,
            domain_url=domain_url, index_name=index_name, text_field=config.search.text_field,
            embedding_field=config.search.embedding_field, vpc=config.vpc, bedrock=bedrock)
        self._grant_prefixes(loader_role, read=[BatchEmbedWorkflow.output_prefix], write=[])
        key.grant_decrypt(self.batch_embed.loader)
        self._grant_prefixes(self.batch_embed.preparer_role, read=[BATCH_INPUT_PREFIX],
                             write=[BatchEmbedWorkflow.output_prefix])
        key.grant(self.batch_embed.preparer, "kms:Decrypt", "kms:GenerateDataKey")
        if self.batch_embed.embedder is not None and self.batch_embed.embedder_role is not None:
            # No transform job on Bedrock: the embed function reads the request lines and writes the output.
            self._grant_prefixes(self.batch_embed.embedder_role, read=[BatchEmbedWorkflow.output_prefix],
                                 write=[BatchEmbedWorkflow.output_prefix])
            key.grant(self.batch_embed.embedder, "kms:Decrypt", "kms:GenerateDataKey")
        else:
            # The transform job runs as the serving model's own role (the model stack's).
            allow_transform_jobs(endpoints[fronted].role, stage=config.name, kms_key=key)

        # `semsearch compare --remote`: the comparison as a processing job, on the training instance type.
        self.compare = CompareWorkflow(self, "Compare", name_prefix=prefix, stage=config.name, jobs=config.jobs,
                                       artifacts=artifacts, kms_key=key)

        cdk.CfnOutput(self, "FineTuneStateMachine", value=self.fine_tune.state_machine.state_machine_arn)
        cdk.CfnOutput(self, "BatchEmbedStateMachine", value=self.batch_embed.state_machine.state_machine_arn)
        cdk.CfnOutput(self, compare_job.STATE_MACHINE_OUTPUT, value=self.compare.state_machine.state_machine_arn)
        cdk.CfnOutput(self, compare_job.INPUT_URI_OUTPUT, value=self.compare.input_uri)

    def _grant_prefixes(self, role: iam.IRole, *, read: list[str], write: list[str]) -> None:
        """Object access to exactly these key prefixes of the artifact bucket."""
        bucket_arn = f"arn:{cdk.Aws.PARTITION}:s3:::{artifacts_bucket_name(self.stage)}"
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[f"{bucket_arn}/{p}*" for p in read]))
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:ListBucket"], resources=[bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in read]}}))
        if write:
            role.add_to_principal_policy(iam.PolicyStatement(
                actions=["s3:PutObject", "s3:AbortMultipartUpload"], resources=[f"{bucket_arn}/{p}*" for p in write]))
        for p in sorted(set(read + write)):
            acknowledge(role, f"AwsSolutions-IAM5[Resource::{artifacts_nag_arn(self.stage, p + '*')}]",
                        "job inputs and outputs have per-run names: access is limited to this key prefix")


def cloudformation_role_arn(stack: cdk.Stack) -> str:
    """The role CloudFormation deploys this stage with: the CDK bootstrap's execution role."""
    synthesizer = stack.synthesizer
    if not isinstance(synthesizer, cdk.DefaultStackSynthesizer):
        raise TypeError(f"{stack.stack_name}: promotions need the DefaultStackSynthesizer's execution role")
    # The synthesizer spells it with ${AWS::...} placeholders (for its asset manifest).
    return cdk.Fn.sub(synthesizer.cloud_formation_execution_role_arn)
