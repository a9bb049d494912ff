"""One deployable stage (dev, prod): its stacks in dependency order."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from stacks.config import StageConfig
from stacks.jobs_stack import JobsStack
from stacks.model_stack import ModelStack
from stacks.names import stack_name
from stacks.ops_stack import OpsStack
from stacks.search_stack import SearchStack
from stacks.storage_stack import StorageStack


class SemsearchStage(cdk.Stage):
    """Storage (stateful) → Model (endpoints) → Search (domain, roles, glue) → Jobs (workflows)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        env = cdk.Environment(account=config.account or None, region=config.region or None)
        super().__init__(scope, construct_id, env=env)
        self.storage = StorageStack(self, "Storage", stack_name=stack_name(config.name, "storage"), config=config,
                                    description=f"semsearch {config.name}: KMS key and artifact buckets")
        self.model = ModelStack(self, "Model", stack_name=stack_name(config.name, "model"), config=config,
                                key=self.storage.key, alarm_topic=self.storage.alarm_topic,
                                description=f"semsearch {config.name}: SageMaker embedding endpoints")
        self.search = SearchStack(self, "Search", stack_name=stack_name(config.name, "search"), config=config,
                                  key=self.storage.key, endpoints=self.model.endpoints,
                                  description=f"semsearch {config.name}: OpenSearch domain and neural-search glue")
        self.jobs = JobsStack(self, "Jobs", stack_name=stack_name(config.name, "jobs"), config=config, key=self.storage.key,
                              endpoints=self.model.endpoints, domain_url=self.search.domain.endpoint_url, index_name=config.search.index_name,
                              loader_role=self.search.loader_role,
                              description=f"semsearch {config.name}: fine-tune and batch-embed workflows")
        self.jobs.add_stack_dependency(self.storage)  # the bucket is referenced by name, not by import
        self.ops = OpsStack(self, "Ops", stack_name=stack_name(config.name, "ops"), config=config,
                            topic=self.storage.alarm_topic, endpoints=self.model.endpoints,
                            domain=self.search.domain.domain,
                            workflows={"FineTune": self.jobs.fine_tune.state_machine,
                                       "BatchEmbed": self.jobs.batch_embed.state_machine},
                            description=f"semsearch {config.name}: dashboard and alarms")
        for stack in (self.storage, self.model, self.search, self.jobs, self.ops):
            cdk.Tags.of(stack).add("project", "semsearch")
            cdk.Tags.of(stack).add("stage", config.name)
