"""Stateful resources of a stage: the KMS key, the artifact bucket, and the alarm topic."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from stacks.config import StageConfig
from stacks.containers import model_version
from stacks.names import NOT_PROMOTED, promotion_parameter


def artifacts_bucket_name(stage: str) -> str:
    """Deterministic, so other stacks and IAM policies name it without cross-stack imports."""
    return f"semsearch-{stage}-artifacts-{cdk.Aws.ACCOUNT_ID}-{cdk.Aws.REGION}"


def artifacts_nag_arn(stage: str, key_pattern: str) -> str:
    """How cdk-nag spells an object ARN of the artifact bucket in a finding id."""
    return f"arn:<AWS::Partition>:s3:::semsearch-{stage}-artifacts-<AWS::AccountId>-<AWS::Region>/{key_pattern}"


class StorageStack(cdk.Stack):
    """KMS key and buckets, apart from everything stateless so a failed deploy elsewhere
    never rolls them back; and the promotion parameter of each endpoint's model version,
    which the model stack reads at deploy time and so must exist before it."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        removal = cdk.RemovalPolicy.RETAIN if config.retain_data else cdk.RemovalPolicy.DESTROY
        self.key = kms.Key(self, "DataKey", enable_key_rotation=True, removal_policy=removal,
                           description=f"semsearch {config.name}: endpoint volumes, domain, logs, artifacts")
        # CloudWatch Logs encrypts the domain's log groups with this key.
        self.key.grant_encrypt_decrypt(cdk.aws_iam.ServicePrincipal(f"logs.{cdk.Aws.REGION}.amazonaws.com"))
        # One topic per stage for every alarm (endpoint alarms live in the model stack, the rest
        # in the ops stack); here so both can notify it without a dependency cycle.
        self.alarm_topic = sns.Topic(self, "Alarms", display_name=f"semsearch-{config.name} alarms",
                                     master_key=self.key, enforce_ssl=True)
        if config.ops.alarm_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(config.ops.alarm_email))
        # CloudWatch alarms publish to the encrypted topic with this key.
        self.key.grant_encrypt_decrypt(cdk.aws_iam.ServicePrincipal("cloudwatch.amazonaws.com"))
        self.access_logs = s3.Bucket(
            self, "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # the log delivery service cannot use KMS keys
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(90))],
            removal_policy=removal, auto_delete_objects=False,
        )
        self.artifacts = s3.Bucket(
            self, "Artifacts",
            bucket_name=artifacts_bucket_name(config.name),
            encryption=s3.BucketEncryption.KMS, encryption_key=self.key, bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, enforce_ssl=True, versioned=True,
            server_access_logs_bucket=self.access_logs, server_access_logs_prefix="artifacts/",
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-job-outputs", prefix="jobs/", expiration=cdk.Duration.days(30),
                                 noncurrent_version_expiration=cdk.Duration.days(7)),
                s3.LifecycleRule(id="trim-old-versions", noncurrent_version_expiration=cdk.Duration.days(30),
                                 abort_incomplete_multipart_upload_after=cdk.Duration.days(1)),
            ],
            removal_policy=removal,
        )
        # Uploads under batch/input/ start the batch-embed workflow through EventBridge. Set on
        # the CfnBucket: the L2 flag deploys a notification-handler Lambda for the same thing.
        cfn_bucket = self.artifacts.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        cfn_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            event_bridge_configuration=s3.CfnBucket.EventBridgeConfigurationProperty(event_bridge_enabled=True))
        # "none" until the fine-tune workflow promotes a model onto this version (it overwrites
        # the value; CloudFormation leaves it alone while this resource's template is unchanged).
        # A new model version is a new parameter, so a new base model starts unpromoted.
        for name, ep in config.endpoints.items():
            ssm.StringParameter(self, f"Promotion-{name}",
                                parameter_name=promotion_parameter(config.name, name, model_version(ep)),
                                string_value=NOT_PROMOTED,
                                description=f"semsearch {config.name}: fine-tune promoted onto endpoint {name!r} "
                                            f"(its training job's tag), or {NOT_PROMOTED}")
