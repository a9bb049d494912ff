"""A SageMaker real-time endpoint serving one embedding model (TEI or our own handler)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import aws_cdk as cdk
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks import images
from stacks.catalog import INSTANCES, InstanceSpec
from stacks.components.sagemaker_execution_role import SageMakerExecutionRole
from stacks.components.served_model import PromotedFineTune, read_serving
from stacks.config import EndpointConfig, VpcConfig
from stacks.containers import MODEL_MOUNT, custom_container_environment, tei_container_environment
from stacks.nag import acknowledge
from stacks.names import inference_component_name

VARIANT_NAME = "AllTraffic"


class EmbeddingEndpoint(Construct):
    """An embedding endpoint with autoscaling and alarms.

    Keyword-only properties:
      endpoint_name: the SageMaker endpoint name (the connector URL is built from it): it
        carries the model version, so a new version is a new endpoint beside the old one,
        which CloudFormation keeps when it replaces it (the glue deletes it after the flip).
      config: the endpoint's validated configuration (model, flavor, instance type...).
      kms_key: encrypts the ML storage volume where the instance type allows it
        (default: no volume key; never set on instance types with local NVMe such as g5,
        where SageMaker rejects a volume key and the NVMe is hardware-encrypted).
      model_bucket: bucket holding ``config.model_data_s3_uri`` (read access is granted);
        required when the config names model data.
      vpc: subnets and security groups for the model containers (default: none).
      promotion: the fine-tune promoted onto this version, read at deploy time: when set,
        the model serves it from S3 (in the same flavor) instead (default: none).
      active_hours: (start, end) UTC hours on weekdays; outside them the endpoint runs no
        instance at all (default: always on). The model is then hosted as an inference
        component, the only SageMaker hosting that scales to zero instances, and callers
        name it (``inference_component_name``) on every request.

    Resources: an execution role, a model, an endpoint config, the endpoint, a scalable
    target tracking invocations per instance (per copy when it scales to zero), and alarms
    on p99 model latency, 5xx and 4xx errors (``alarms``).
    """

    def __init__(self, scope: Construct, construct_id: str, *, endpoint_name: str, config: EndpointConfig,
                 kms_key: kms.IKey | None = None, model_bucket: s3.IBucket | None = None,
                 vpc: VpcConfig | None = None, active_hours: tuple[int, int] | None = None,
                 promotion: PromotedFineTune | None = None) -> None:
        super().__init__(scope, construct_id)
        self.endpoint_name = endpoint_name
        self.config = config
        instance = INSTANCES[config.instance_type]
        hosting: AlwaysOn | ScaleToZero = (
            AlwaysOn() if active_hours is None else ScaleToZero(endpoint_name, instance, active_hours))
        #: Set when the model is hosted as an inference component: callers name it on every request.
        self.inference_component_name = hosting.inference_component_name
        #: The component's ComputeResourceRequirements (empty when always on): a rollout keeps them.
        self.compute_requirements = hosting.compute_requirements

        self.role = SageMakerExecutionRole(self, "ExecutionRole",
                                           description=f"SageMaker execution role of endpoint {endpoint_name}")
        self.role.allow_containers(images=[serving_image(config)], log_groups=["Endpoints/"],
                                   metric_namespaces=["/aws/sagemaker/Endpoints"], vpc=vpc is not None)
        self.model = self._model(config, kms_key=kms_key, model_bucket=model_bucket, vpc=vpc, promotion=promotion)

        volume_key = kms_key if (kms_key is not None and config.volume_kms_supported) else None
        endpoint_config = sagemaker.CfnEndpointConfig(
            self, "EndpointConfig",
            kms_key_id=volume_key.key_arn if volume_key else None,
            # An endpoint that hosts inference components names the role on its config.
            execution_role_arn=self.role.role_arn if hosting.inference_component_name else None,
            production_variants=[hosting.variant(config, self.model)],
        )
        if volume_key is not None:
            volume_key.grant_encrypt_decrypt(self.role)
            for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
                acknowledge(self.role, f"AwsSolutions-IAM5[Action::{action}]",
                            "CDK's encrypt/decrypt grant on the one volume key of this endpoint; "
                            "SageMaker needs data-key generation and re-encryption to mount the volume")
        self.endpoint = sagemaker.CfnEndpoint(self, "Endpoint", endpoint_name=endpoint_name,
                                              endpoint_config_name=endpoint_config.attr_endpoint_config_name)
        # A new model version is a new endpoint name: the old endpoint keeps serving the old
        # index until the glue has moved the alias, and the glue deletes it then.
        # A stack deletion still deletes it (stated, so that keeping it on replacement reads as meant).
        self.endpoint.cfn_options.update_replace_policy = cdk.CfnDeletionPolicy.RETAIN
        self.endpoint.cfn_options.deletion_policy = cdk.CfnDeletionPolicy.DELETE
        # Names are lowercase by construction (stage, endpoint name, hex version, promotion tag),
        # as SageMaker ARNs are.
        #: Grants and metrics in this stack; other stacks use ``reference_in``.
        self.reference = EndpointReference(self, endpoint_name, self.inference_component_name, config)
        self.endpoint_arn = self.reference.endpoint_arn

        scaling = _add_autoscaling(self, config, hosting.scaling(self, config, self.endpoint, self.model))
        hosting.schedule(scaling, config)
        self.latency_alarm, self.error_5xx_alarm, error_4xx_alarm = self._add_alarms(config)
        self.alarms: list[cloudwatch.Alarm] = [self.latency_alarm, self.error_5xx_alarm, error_4xx_alarm]

    def _model(self, config: EndpointConfig, *, kms_key: kms.IKey | None, model_bucket: s3.IBucket | None,
               vpc: VpcConfig | None, promotion: PromotedFineTune | None) -> sagemaker.CfnModel:
        """The SageMaker model: the container image, its environment and (optionally) model data in S3."""
        instance = INSTANCES[config.instance_type]
        family, version, accelerated = serving_image(config)
        if family == "pytorch-inference":
            environment = custom_container_environment(config, instance)
        else:
            environment = tei_container_environment(config)
            if promotion is not None:  # TEI serves a promoted model from where SageMaker unpacks it
                environment["HF_MODEL_ID"] = promotion.pick_string(MODEL_MOUNT, environment["HF_MODEL_ID"])
        container: dict[str, object] = {
            "image": images.image_uri(self, family, version, accelerated=accelerated), "environment": environment}
        if config.model_data_s3_uri:
            if model_bucket is None:
                raise ValueError(f"{self.endpoint_name}: model_data_s3_uri needs the bucket that holds it")
            # Exactly the one object SageMaker downloads (no List*/Get* wildcards).
            self.role.add_to_policy(iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[model_bucket.arn_for_objects(_object_key(config.model_data_s3_uri))]))
            if kms_key is not None:  # artifacts in the stage bucket are encrypted with the stage key
                kms_key.grant_decrypt(self.role)
            container["model_data_url"] = config.model_data_s3_uri
        network_isolation: bool | cdk.IResolvable = bool(config.model_data_s3_uri)
        if promotion is not None:
            self._grant_promoted_model(promotion, kms_key)
            container["model_data_url"] = promotion.pick_string(
                promotion.model_data_url, config.model_data_s3_uri or cdk.Aws.NO_VALUE)
            network_isolation = promotion.pick(True, network_isolation)
        model = sagemaker.CfnModel(
            self, "Model",
            execution_role_arn=self.role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(**container),  # type: ignore[arg-type]
            vpc_config=sagemaker.CfnModel.VpcConfigProperty(
                subnets=list(vpc.subnet_ids), security_group_ids=list(vpc.security_group_ids)) if vpc else None,
            # With model data in S3 the container needs no network; TEI pulling from the
            # Hugging Face Hub does.
            enable_network_isolation=network_isolation,
        )
        # The role's policy (image pull) must exist before SageMaker validates the model.
        model.node.add_dependency(self.role.node.find_child("DefaultPolicy"))
        return model

    def _grant_promoted_model(self, promotion: PromotedFineTune, kms_key: kms.IKey | None) -> None:
        """Read exactly the promoted model's object (encrypted with the stage key)."""
        bucket, key = promotion.model_data_url.removeprefix("s3://").split("/", 1)
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[f"arn:{cdk.Aws.PARTITION}:s3:::{bucket}/{key}"]))
        if kms_key is not None:
            kms_key.grant_decrypt(self.role)

    def _add_alarms(self, config: EndpointConfig) -> tuple[cloudwatch.Alarm, cloudwatch.Alarm, cloudwatch.Alarm]:
        """p99 model latency, 5xx errors and 4xx errors; missing data (no traffic) never alarms."""
        latency = self.reference.metric_model_latency(statistic="p99").create_alarm(
            self, "LatencyAlarm",
            alarm_description=f"{self.endpoint_name}: p99 model latency above {config.latency_alarm_ms} ms",
            threshold=config.latency_alarm_ms * 1000,  # ModelLatency is reported in microseconds
            evaluation_periods=3, datapoints_to_alarm=2,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        errors_5xx = self.reference.metric_invocation_5xx_errors().create_alarm(
            self, "Errors5xxAlarm",
            alarm_description=f"{self.endpoint_name}: {config.error_alarm_threshold}+ 5xx errors in 5 minutes",
            threshold=config.error_alarm_threshold, evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        errors_4xx = self.reference.metric_invocation_4xx_errors().create_alarm(
            self, "Errors4xxAlarm",
            alarm_description=f"{self.endpoint_name}: many 4xx errors (bad requests or throttling) in 5 minutes",
            threshold=config.error_alarm_threshold * 20, evaluation_periods=2,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        return latency, errors_5xx, errors_4xx

    def reference_in(self, scope: Construct, *, stage: str, endpoint: str) -> EndpointReference:
        """This endpoint as ``scope``'s stack sees it: its name read from SSM at deploy time
        (served_model.read_serving), never imported: it changes with every model version."""
        name = read_serving(scope, stage=stage, endpoint=endpoint, what="endpoint")
        component = inference_component_name(name) if self.inference_component_name else None
        return EndpointReference(scope, name, component, self.config)


class EndpointReference:
    """An endpoint's grants and metrics, in the stack of ``scope`` (names may be tokens)."""

    def __init__(self, scope: Construct, endpoint_name: str, inference_component_name: str | None,
                 config: EndpointConfig) -> None:
        self.scope = scope
        self.endpoint_name = endpoint_name
        self.inference_component_name = inference_component_name
        self.config = config

    @property
    def endpoint_arn(self) -> str:
        # Names are lowercase by construction, as SageMaker ARNs are.
        return cdk.Stack.of(self.scope).format_arn(service="sagemaker", resource="endpoint",
                                                   resource_name=self.endpoint_name)

    # -- grants --------------------------------------------------------------------------

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``grantee`` to call InvokeEndpoint on this endpoint (and its inference component) only.

        A request that names an inference component is authorized against both the endpoint
        and ``inference-component/<name>`` (resource types of sagemaker:InvokeEndpoint in the
        Service Authorization Reference).
        """
        return iam.Grant.add_to_principal(grantee=grantee, actions=["sagemaker:InvokeEndpoint"],
                                          resource_arns=[self.endpoint_arn, *self.inference_component_arns])

    @property
    def inference_component_arns(self) -> list[str]:
        if self.inference_component_name is None:
            return []
        return [cdk.Stack.of(self.scope).format_arn(service="sagemaker", resource="inference-component",
                                              resource_name=self.inference_component_name)]

    # -- metrics ---------------------------------------------------------------------------

    def metric(self, metric_name: str, *, namespace: str = "AWS/SageMaker", statistic: str = "Sum") -> cloudwatch.Metric:
        """A metric of this endpoint's model over 5 minutes (default: Sum)."""
        dimensions = {"EndpointName": self.endpoint_name, "VariantName": VARIANT_NAME}
        if self.inference_component_name and namespace == "AWS/SageMaker":
            # Invocation metrics of a component are reported per component.
            dimensions = {"InferenceComponentName": self.inference_component_name}
        return cloudwatch.Metric(namespace=namespace, metric_name=metric_name, statistic=statistic,
                                 period=cdk.Duration.minutes(5), dimensions_map=dimensions)

    def metric_invocations(self) -> cloudwatch.Metric:
        return self.metric("Invocations")

    def metric_model_latency(self, *, statistic: str = "p50") -> cloudwatch.Metric:
        """Time spent in the container per request, in microseconds."""
        return self.metric("ModelLatency", statistic=statistic)

    def metric_invocation_4xx_errors(self) -> cloudwatch.Metric:
        return self.metric("Invocation4XXErrors")

    def metric_invocation_5xx_errors(self) -> cloudwatch.Metric:
        return self.metric("Invocation5XXErrors")

    def metric_cpu_utilization(self) -> cloudwatch.Metric:
        return self.metric("CPUUtilization", namespace="/aws/sagemaker/Endpoints", statistic="Average")

    def metric_memory_utilization(self) -> cloudwatch.Metric:
        return self.metric("MemoryUtilization", namespace="/aws/sagemaker/Endpoints", statistic="Average")

    def metric_gpu_utilization(self) -> cloudwatch.Metric:
        return self.metric("GPUUtilization", namespace="/aws/sagemaker/Endpoints", statistic="Average")

    def metric_instance_count(self) -> cloudwatch.Metric:
        return self.metric("CPUUtilization", namespace="/aws/sagemaker/Endpoints", statistic="SampleCount")



def serving_image(config: EndpointConfig) -> tuple[str, str, bool]:
    """(framework, version, accelerated) of the image that serves this endpoint's model."""
    family = config.container_family
    version = config.pytorch_version if family == "pytorch-inference" else config.tei_version
    return family, version, INSTANCES[config.instance_type].accelerated


# -- hosting strategies -------------------------------------------------------------------


@dataclass(frozen=True)
class ScalingDimension:
    """What the endpoint's scalable target scales, and the resource it must wait for."""

    resource_id: str
    dimension: str
    tracked: appscaling.PredefinedMetric
    after: cdk.CfnResource


class AlwaysOn:
    """The model is the endpoint's production variant; autoscaling never goes below one instance."""

    inference_component_name: str | None = None
    compute_requirements: Mapping[str, int] = MappingProxyType({})

    def variant(self, config: EndpointConfig, model: sagemaker.CfnModel,
                ) -> sagemaker.CfnEndpointConfig.ProductionVariantProperty:
        return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
            variant_name=VARIANT_NAME, instance_type=config.instance_type,
            initial_instance_count=config.initial_instance_count,
            container_startup_health_check_timeout_in_seconds=600, model_data_download_timeout_in_seconds=600,
            model_name=model.attr_model_name, initial_variant_weight=1.0)

    def scaling(self, scope: Construct, config: EndpointConfig, endpoint: sagemaker.CfnEndpoint,
                model: sagemaker.CfnModel) -> ScalingDimension:
        return ScalingDimension(
            resource_id=f"endpoint/{endpoint.endpoint_name}/variant/{VARIANT_NAME}",
            dimension="sagemaker:variant:DesiredInstanceCount",
            tracked=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE, after=endpoint)

    def schedule(self, target: appscaling.ScalableTarget, config: EndpointConfig) -> None:
        """Always on: no schedule."""


class ScaleToZero:
    """The model is an inference component of the endpoint, asleep outside the active hours.

    Only endpoints that host inference components can drop to zero instances: SageMaker then
    removes instances once no component copy needs them. One copy per instance.
    """

    def __init__(self, endpoint_name: str, instance: InstanceSpec, active_hours: tuple[int, int]) -> None:
        self.inference_component_name: str | None = inference_component_name(endpoint_name)
        self.active_hours = active_hours
        # One copy per instance: leave a core and a quarter of memory to the host.
        requirements = {"MinMemoryRequiredInMb": instance.memory_gib * 1024 * 3 // 4}
        if instance.accelerated:
            requirements["NumberOfAcceleratorDevicesRequired"] = 1
        else:
            requirements["NumberOfCpuCoresRequired"] = max(1, instance.vcpus - 1)
        self.compute_requirements: Mapping[str, int] = MappingProxyType(requirements)

    def variant(self, config: EndpointConfig, model: sagemaker.CfnModel,
                ) -> sagemaker.CfnEndpointConfig.ProductionVariantProperty:
        # No model here: the inference component names it.
        return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
            variant_name=VARIANT_NAME, instance_type=config.instance_type,
            initial_instance_count=config.initial_instance_count,
            managed_instance_scaling=sagemaker.CfnEndpointConfig.ManagedInstanceScalingProperty(
                status="ENABLED", min_instance_count=0, max_instance_count=config.max_capacity),
            routing_config=sagemaker.CfnEndpointConfig.RoutingConfigProperty(
                routing_strategy="LEAST_OUTSTANDING_REQUESTS"))

    def scaling(self, scope: Construct, config: EndpointConfig, endpoint: sagemaker.CfnEndpoint,
                model: sagemaker.CfnModel) -> ScalingDimension:
        """Creates the inference component; its copy count is what scales."""
        compute = self.compute_requirements
        component = sagemaker.CfnInferenceComponent(
            scope, "InferenceComponent", inference_component_name=self.inference_component_name,
            endpoint_name=endpoint.attr_endpoint_name, variant_name=VARIANT_NAME,
            specification=sagemaker.CfnInferenceComponent.InferenceComponentSpecificationProperty(
                model_name=model.attr_model_name,
                compute_resource_requirements=sagemaker.CfnInferenceComponent.
                InferenceComponentComputeResourceRequirementsProperty(
                    number_of_cpu_cores_required=compute.get("NumberOfCpuCoresRequired"),
                    number_of_accelerator_devices_required=compute.get("NumberOfAcceleratorDevicesRequired"),
                    min_memory_required_in_mb=compute["MinMemoryRequiredInMb"])),
            runtime_config=sagemaker.CfnInferenceComponent.InferenceComponentRuntimeConfigProperty(
                copy_count=config.initial_instance_count))
        # Kept beside its endpoint when a new model version replaces both (see the endpoint).
        component.cfn_options.update_replace_policy = cdk.CfnDeletionPolicy.RETAIN
        component.cfn_options.deletion_policy = cdk.CfnDeletionPolicy.DELETE
        return ScalingDimension(
            resource_id=f"inference-component/{self.inference_component_name}",
            dimension="sagemaker:inference-component:DesiredCopyCount",
            tracked=appscaling.PredefinedMetric.SAGEMAKER_INFERENCE_COMPONENT_INVOCATIONS_PER_COPY, after=component)

    def schedule(self, target: appscaling.ScalableTarget, config: EndpointConfig) -> None:
        """Wake up at the start of the active hours, sleep (zero copies) at their end."""
        (wake_hour, wake_days), (sleep_hour, sleep_days) = weekday_schedule(*self.active_hours)
        # Weekdays only: Friday's scale-in holds through the weekend.
        target.scale_on_schedule(
            "WakeUp", schedule=appscaling.Schedule.cron(minute="0", hour=str(wake_hour), week_day=wake_days),
            min_capacity=config.min_capacity, max_capacity=config.max_capacity)
        target.scale_on_schedule(
            "Sleep", schedule=appscaling.Schedule.cron(minute="0", hour=str(sleep_hour), week_day=sleep_days),
            min_capacity=0, max_capacity=0)


def _add_autoscaling(endpoint: EmbeddingEndpoint, config: EndpointConfig,
                     scaling: ScalingDimension) -> appscaling.ScalableTarget:
    """Target tracking on invocations (per instance, or per copy of the component)."""
    target = appscaling.ScalableTarget(
        endpoint, "Scaling", service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
        resource_id=scaling.resource_id, scalable_dimension=scaling.dimension,
        min_capacity=config.min_capacity, max_capacity=config.max_capacity)
    target.node.add_dependency(scaling.after)
    target.scale_to_track_metric(
        "InvocationsPerInstance", target_value=config.target_invocations_per_instance, predefined_metric=scaling.tracked,
        scale_in_cooldown=cdk.Duration.minutes(5), scale_out_cooldown=cdk.Duration.minutes(1))
    return target


def weekday_schedule(start: int, end: int) -> tuple[tuple[int, str], tuple[int, str]]:
    """(hour, cron days) to wake up and to sleep for active hours [start, end) UTC, Monday to Friday.

    A day that ends at 24 ends at 00:00 of the next day: Tuesday to Saturday, so Friday's
    day ends on Saturday morning and the weekend stays asleep. 00-24 is one block, from
    Monday 00:00 to Saturday 00:00 (a wake-up and a sleep at the same minute would race).
    """
    if end < 24:
        return (start, "MON-FRI"), (end, "MON-FRI")
    if start == 0:
        return (0, "MON"), (0, "SAT")
    return (start, "MON-FRI"), (0, "TUE-SAT")


def _object_key(s3_uri: str) -> str:
    return s3_uri.split("/", 3)[3]


def bucket_name(s3_uri: str) -> str:
    return s3_uri.split("/", 3)[2]
