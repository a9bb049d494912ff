"""From raw context to a validated ``AppConfig``: merge the raw sources, then build the
dataclasses, collecting every problem into one ``ConfigError``.

The sources, later ones winning: the ``stages`` block of cdk.json's context, a JSON file
(``-c config=path.json``), then ``-c`` overrides whose key is a dotted path
(``-c prod.endpoints.gpu.max_capacity=6``). ``-c stage=NAME`` builds one stage only.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from stacks.config.schema import (
    DEPLOY_PATHS,
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
from stacks.config.validators import (
    ENDPOINT_NAME_RE,
    validate_bedrock,
    validate_endpoint,
    validate_jobs,
    validate_ops,
    validate_pipeline,
    validate_search,
    validate_stage,
    validate_vpc,
)

# Context keys that are not dotted config overrides.
RESERVED_CONTEXT_KEYS = ("stages", "stage", "config", "pipeline", "deploy")


def load_config(context: Mapping[str, Any]) -> AppConfig:
    """Build the validated config from CDK context (cdk.json + ``-c`` flags)."""
    problems: list[str] = []
    raw_stages = _raw_stages(context)

    selected = str(context.get("stage") or "all")
    if selected == "all":
        names = [n for n in raw_stages]
    elif selected in raw_stages:
        names = [selected]
    else:
        raise ConfigError([f"stage: unknown stage {selected!r}; allowed: all, {', '.join(raw_stages)}"])

    stages = []
    for name in names:
        if name not in STAGE_NAMES:
            problems.append(f"stages.{name}: unknown stage; allowed: {', '.join(STAGE_NAMES)}")
            continue
        stage = _build_stage(name, raw_stages[name], problems)
        if stage is not None:
            stages.append(stage)
    deploy = str(context.get("deploy") or "pipeline")
    if deploy not in DEPLOY_PATHS:
        problems.append(f"deploy: bad value {deploy!r}; allowed: {', '.join(DEPLOY_PATHS)}")
    pipeline = _build_pipeline(context, deploy, selected, raw_stages, problems)
    if problems:
        raise ConfigError(problems)
    return AppConfig(stages=tuple(stages), pipeline=pipeline, deploy=deploy)


def _build_pipeline(context: Mapping[str, Any], deploy: str, selected: str, raw_stages: Mapping[str, Any],
                    problems: list[str]) -> PipelineConfig | None:
    """The pipeline block with its ``-c pipeline.KEY=`` overrides; built only when it deploys every stage."""
    raw_pipeline = copy.deepcopy(_parse_scalar(context.get("pipeline")))
    for key, value in context.items():
        if key.startswith("pipeline.") and isinstance(raw_pipeline, dict):
            _set_dotted(raw_pipeline, key.removeprefix("pipeline."), _parse_scalar(value))
    if deploy == "pipeline" and raw_pipeline is None:
        problems.append("pipeline: missing; deploy 'pipeline' needs the pipeline block (repository, "
                        "connection_arn, stages); allowed: a pipeline block, or deploy 'github'")
    if deploy != "pipeline" or raw_pipeline is None or selected != "all":
        return None
    pipeline: PipelineConfig | None = _build(PipelineConfig, raw_pipeline, "pipeline", problems)
    if pipeline is not None:
        validate_pipeline(pipeline, raw_stages, problems)
    return pipeline


def _raw_stages(context: Mapping[str, Any]) -> dict[str, Any]:
    """cdk.json's ``stages``, merged with the ``-c config=`` file, then with the dotted ``-c`` overrides."""
    raw_stages = copy.deepcopy(context.get("stages") or {})
    if not isinstance(raw_stages, dict):
        raise ConfigError([f"stages: expected an object, got {type(raw_stages).__name__}"])

    config_file = context.get("config")
    if config_file:
        path = Path(str(config_file))
        try:
            file_data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError([f"config: file {str(path)!r} not found"]) from None
        except json.JSONDecodeError as e:
            raise ConfigError([f"config: {path} is not valid JSON ({e})"]) from None
        deep_merge(raw_stages, file_data.get("stages", file_data))

    for key, value in sorted(context.items()):
        if key in RESERVED_CONTEXT_KEYS or "." not in key or key.startswith("@"):
            continue
        if key.split(".", 1)[0] in raw_stages or key.split(".", 1)[0] in STAGE_NAMES:
            _set_dotted(raw_stages, key, _parse_scalar(value))
    return raw_stages


def deep_merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    """Merge ``other`` into ``into`` in place: objects key by key, anything else replaced (copied)."""
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def _parse_scalar(value: Any) -> Any:
    """`-c` values arrive as strings: read JSON literals (numbers, booleans, lists)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _build(cls: type, raw: Any, path: str, problems: list[str], **given: Any) -> Any:
    """Build a frozen dataclass from raw data, recording every bad field in ``problems``."""
    if not isinstance(raw, Mapping):
        problems.append(f"{path}: expected an object, got {raw!r}")
        return None
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for unknown in sorted(set(raw) - known):
        problems.append(f"{path}.{unknown}: unknown field; allowed: {', '.join(sorted(known - set(given)))}")
    values: dict[str, Any] = dict(given)
    ok = True
    for f in fields(cls):
        if f.name in given:
            continue
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                problems.append(f"{path}.{f.name}: required field is missing")
                ok = False
            continue
        coerced, error = _coerce(raw[f.name], hints[f.name])
        if error:
            problems.append(f"{path}.{f.name}: {error}")
            ok = False
        else:
            values[f.name] = coerced
    return cls(**values) if ok else None


def _coerce(value: Any, hint: Any) -> tuple[Any, str | None]:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        if value in args:
            return value, None
        # "-c" may deliver "3" where the literal is the int 3.
        for a in args:
            if str(a) == str(value):
                return a, None
        return None, f"bad value {value!r}; allowed: {', '.join(str(a) for a in args)}"
    if hint is bool:
        if isinstance(value, bool):
            return value, None
        return None, f"bad value {value!r}; allowed: true, false"
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return None, f"bad value {value!r}; allowed: an integer"
        return value, None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"bad value {value!r}; allowed: a number"
        return float(value), None
    if hint is str:
        if not isinstance(value, str):
            return None, f"bad value {value!r}; allowed: a string"
        return value, None
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return None, f"bad value {value!r}; allowed: a list of strings"
        return tuple(value), None
    raise TypeError(f"unsupported config type {hint!r}")  # a programming error, not input


def _build_stage(name: str, raw: Any, problems: list[str]) -> StageConfig | None:
    path = f"stages.{name}"
    if not isinstance(raw, Mapping):
        problems.append(f"{path}: expected an object, got {raw!r}")
        return None
    before = len(problems)
    endpoints: dict[str, EndpointConfig] = {}
    raw_endpoints = raw.get("endpoints", {})
    if not isinstance(raw_endpoints, Mapping) or not raw_endpoints:
        problems.append(f"{path}.endpoints: expected at least one endpoint, got {raw_endpoints!r}")
        raw_endpoints = {}
    for ep_name, ep_raw in raw_endpoints.items():
        ep_path = f"{path}.endpoints.{ep_name}"
        if not ENDPOINT_NAME_RE.match(ep_name):
            problems.append(f"{ep_path}: bad endpoint name; allowed: lowercase letters, digits, '-', starting with a letter (max 20)")
        ep_raw, dimension = _stated_dimension(ep_raw, ep_path, problems)
        ep = _build(EndpointConfig, ep_raw, ep_path, problems)
        if ep is not None:
            validate_endpoint(ep, ep_path, problems, dimension=dimension)
            endpoints[ep_name] = ep
    search = _build(SearchConfig, raw.get("search"), f"{path}.search", problems)
    vpc = None
    if raw.get("vpc") is not None:
        vpc = _build(VpcConfig, raw.get("vpc"), f"{path}.vpc", problems)
    bedrock = None
    if raw.get("bedrock") is not None:
        bedrock = _build(BedrockConfig, raw.get("bedrock"), f"{path}.bedrock", problems)
        if bedrock is not None:
            validate_bedrock(bedrock, f"{path}.bedrock", problems)
    jobs = _build(JobsConfig, raw.get("jobs", {}), f"{path}.jobs", problems)
    ops = _build(OpsConfig, raw.get("ops", {}), f"{path}.ops", problems)
    rest = {k: v for k, v in raw.items() if k not in ("endpoints", "search", "vpc", "bedrock", "jobs", "ops")}
    stage = _build(StageConfig, rest, path, problems, name=name, endpoints=endpoints,
                   search=search, vpc=vpc, bedrock=bedrock, jobs=jobs, ops=ops)
    if jobs is not None:
        validate_jobs(jobs, raw_endpoints, f"{path}.jobs", problems)
    if ops is not None:
        validate_ops(ops, name, f"{path}.ops", problems)
    if search is not None:
        validate_search(search, raw_endpoints, f"{path}.search", problems)
    if vpc is not None:
        validate_vpc(vpc, f"{path}.vpc", problems)
    if stage is not None:
        validate_stage(stage, path, problems)
    return stage if len(problems) == before else None


def _stated_dimension(raw: Any, path: str, problems: list[str]) -> tuple[Any, int | None]:
    """An endpoint's raw fields without ``dimension``, and the dimension it states (None if none).

    The dimension is the catalog's (EndpointConfig.model); a config may still state it, and
    validate_endpoint rejects any other value, so an old cdk.json never changes meaning silently.
    """
    if not isinstance(raw, Mapping) or "dimension" not in raw:
        return raw, None
    rest = {k: v for k, v in raw.items() if k != "dimension"}
    dimension, error = _coerce(raw["dimension"], int)
    if error:
        problems.append(f"{path}.dimension: {error}")
    return rest, dimension
