"""Day-2 operations of a stage: one dashboard and every alarm, notifying one SNS topic."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_opensearchservice as opensearch
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.components.embedding_endpoint import EmbeddingEndpoint
from stacks.config import StageConfig

FIVE_MINUTES = cdk.Duration.minutes(5)


class OpsStack(cdk.Stack):
    """Dashboard: endpoints, the domain, the workflows. Alarms to SNS (+ e-mail from config)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, topic: sns.ITopic,
                 endpoints: dict[str, EmbeddingEndpoint], domain: opensearch.Domain,
                 workflows: dict[str, sfn.StateMachine], **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        prefix = f"semsearch-{config.name}"
        notify = actions.SnsAction(topic)
        self.alarms: list[cloudwatch.Alarm] = []

        def alarm(name: str, metric: cloudwatch.IMetric, threshold: float, description: str,
                  comparison: cloudwatch.ComparisonOperator = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                  periods: int = 1) -> cloudwatch.Alarm:
            created = cloudwatch.Alarm(self, name, metric=metric, threshold=threshold, evaluation_periods=periods,
                                       comparison_operator=comparison, alarm_description=f"{prefix}: {description}",
                                       treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
            created.add_alarm_action(notify)
            created.add_ok_action(notify)
            self.alarms.append(created)
            return created

        alarm("ClusterRed", domain.metric_cluster_status_red(period=cdk.Duration.minutes(1), statistic="Maximum"), 1,
              "cluster status RED: at least one primary shard is unassigned")
        alarm("ClusterYellow", domain.metric_cluster_status_yellow(period=cdk.Duration.minutes(1), statistic="Maximum"),
              1, "cluster status YELLOW: replicas unassigned", periods=5)
        alarm("FreeStorageLow", domain.metric_free_storage_space(period=FIVE_MINUTES, statistic="Minimum"),
              config.search.volume_size_gib * 1024 * 0.2,  # MiB: alarm below 20% of one node's volume
              "free storage below 20% of a node's volume",
              comparison=cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD)
        alarm("JvmPressureHigh", domain.metric_jvm_memory_pressure(period=FIVE_MINUTES, statistic="Maximum"), 85,
              "JVM memory pressure at or above 85%", periods=3)
        for name, machine in workflows.items():
            alarm(f"{name}Failed", machine.metric_failed(period=FIVE_MINUTES), 1, f"{name} workflow execution failed")
            alarm(f"{name}TimedOut", machine.metric_timed_out(period=FIVE_MINUTES), 1,
                  f"{name} workflow execution timed out")

        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=prefix,
                                              default_interval=cdk.Duration.hours(3))
        for key, endpoint in endpoints.items():
            # Read at deploy time, not imported: the name changes with every model version.
            ep = endpoint.reference_in(self, stage=config.name, endpoint=key)
            self.add_stack_dependency(cdk.Stack.of(endpoint))
            self.dashboard.add_widgets(cloudwatch.TextWidget(markdown=f"## Endpoint {ep.endpoint_name} "
                                                                      f"({ep.config.instance_type}, {ep.config.flavor})",
                                                             width=24, height=1))
            self.dashboard.add_widgets(
                cloudwatch.GraphWidget(title="Invocations", left=[ep.metric_invocations()], width=6),
                cloudwatch.GraphWidget(title="Model latency p50 / p99 (µs)",
                                       left=[ep.metric_model_latency(statistic="p50"),
                                             ep.metric_model_latency(statistic="p99")], width=6),
                cloudwatch.GraphWidget(title="4xx / 5xx", left=[ep.metric_invocation_4xx_errors(),
                                                                 ep.metric_invocation_5xx_errors()], width=6),
                cloudwatch.GraphWidget(title="Utilization % and instances",
                                       left=[ep.metric_cpu_utilization(), ep.metric_memory_utilization(),
                                             *([ep.metric_gpu_utilization()] if ep.config.model and
                                               ep.config.instance_type.startswith(("ml.g", "ml.p")) else [])],
                                       right=[ep.metric_instance_count()], width=6),
            )
        self.dashboard.add_widgets(cloudwatch.TextWidget(markdown=f"## Domain {domain.domain_name}", width=24, height=1))
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Cluster status (red / yellow)",
                                   left=[domain.metric_cluster_status_red(), domain.metric_cluster_status_yellow()],
                                   width=6),
            cloudwatch.GraphWidget(title="JVM memory pressure %", left=[domain.metric_jvm_memory_pressure()], width=6),
            cloudwatch.GraphWidget(title="Search / indexing latency (ms)",
                                   left=[domain.metric_search_latency(), domain.metric_indexing_latency()], width=6),
            cloudwatch.GraphWidget(title="Rejections and 5xx (ingest, ml-commons calls)", left=[
                domain.metric("ThreadpoolWriteRejected", statistic="Sum"),
                domain.metric("ThreadpoolSearchRejected", statistic="Sum"),
                domain.metric("5xx", statistic="Sum")], width=6),
        )
        self.dashboard.add_widgets(cloudwatch.TextWidget(markdown="## Workflows", width=24, height=1))
        self.dashboard.add_widgets(*(
            cloudwatch.GraphWidget(title=f"{name} executions", left=[
                machine.metric_started(), machine.metric_succeeded(), machine.metric_failed()], width=12)
            for name, machine in workflows.items()))
        self.dashboard.add_widgets(cloudwatch.AlarmStatusWidget(
            title="Alarms", width=24,
            alarms=[*self.alarms, *(a for ep in endpoints.values() for a in (ep.latency_alarm, ep.error_5xx_alarm))]))
