"""Typed, validated configuration for every stage of the app.

Raw configuration is plain JSON-like data: the ``stages`` block of cdk.json's context,
deep-merged with an optional JSON file (``-c config=path.json``) and with ``-c`` overrides
whose key is a dotted path (``-c prod.endpoints.gpu.max_capacity=6``). ``load_config``
turns it into frozen dataclasses. Validation never stops at the first problem: it collects
every bad field and raises one ``ConfigError`` naming each field, its bad value and what is
allowed, so a wrong ``-c`` fails ``cdk synth`` in seconds with the whole list.

- schema.py: the dataclasses and their defaults (what a stage is made of);
- loading.py: merging the raw sources and building the dataclasses (``load_config``);
- validators.py: what each value may be beyond its type, and the cross-field rules.
"""

from stacks.config.loading import RESERVED_CONTEXT_KEYS, deep_merge, load_config
from stacks.config.schema import (
    DEPLOY_PATHS,
    PLACEHOLDER_CONNECTION_ARN,
    STAGE_NAMES,
    AppConfig,
    BedrockConfig,
    ConfigError,
    EndpointConfig,
    JobsConfig,
    OpsConfig,
    PipelineConfig,
    SearchConfig,
    StageConfig,
    VpcConfig,
)
from stacks.config.validators import SEARCH_INSTANCE_TYPES, active_hours

__all__ = [
    "DEPLOY_PATHS", "PLACEHOLDER_CONNECTION_ARN", "RESERVED_CONTEXT_KEYS", "SEARCH_INSTANCE_TYPES", "STAGE_NAMES",
    "AppConfig", "BedrockConfig", "ConfigError", "EndpointConfig", "JobsConfig", "OpsConfig", "PipelineConfig", "SearchConfig",
    "StageConfig", "VpcConfig", "active_hours", "deep_merge", "load_config",
]
