"""The stage's embedding endpoints, one per configured endpoint, named by model version."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.components.embedding_endpoint import EmbeddingEndpoint, bucket_name
from stacks.components.served_model import PromotedFineTune, write_serving
from stacks.config import StageConfig, active_hours
from stacks.containers import model_version
from stacks.names import versioned_endpoint_name
from stacks.storage_stack import artifacts_bucket_name


class ModelStack(cdk.Stack):
    """One EmbeddingEndpoint per configured endpoint, and what it serves in SSM (served_model)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey,
                 alarm_topic: sns.ITopic, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.endpoints: dict[str, EmbeddingEndpoint] = {}
        for name, ep in config.endpoints.items():
            bucket: s3.IBucket | None = None
            if ep.model_data_s3_uri:
                # A model in another bucket (a fine-tuned one, say) is imported by name.
                bucket = s3.Bucket.from_bucket_name(self, f"{name}ModelBucket", bucket_name(ep.model_data_s3_uri))
            promotion = PromotedFineTune(self, f"Promotion-{name}", stage=config.name, endpoint=name,
                                         version=model_version(ep), bucket_name=artifacts_bucket_name(config.name))
            endpoint = EmbeddingEndpoint(
                self, f"Endpoint-{name}",
                endpoint_name=versioned_endpoint_name(config.name, name, model_version(ep)) + promotion.suffix(),
                config=ep, kms_key=key, model_bucket=bucket, vpc=config.vpc,
                active_hours=active_hours(config.ops.active_hours_utc), promotion=promotion)
            write_serving(endpoint, stage=config.name, endpoint=name, endpoint_name=endpoint.endpoint_name,
                          model_name=endpoint.model.attr_model_name)
            if name == config.promote_endpoint:
                # The previous release's jobs stack imports these (its in-place rollout rolled back
                # on them) and deploys after this stack: an export in use cannot be removed, so
                # they stay for one release. Remove once every stage has deployed this one.
                for alarm in (endpoint.latency_alarm, endpoint.error_5xx_alarm):
                    self.export_value(alarm.alarm_name)
            for alarm in endpoint.alarms:
                alarm.add_alarm_action(actions.SnsAction(alarm_topic))
                alarm.add_ok_action(actions.SnsAction(alarm_topic))
            self.endpoints[name] = endpoint
            cdk.CfnOutput(self, f"{name}EndpointName", value=endpoint.endpoint_name)
