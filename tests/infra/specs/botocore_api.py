r"""Validate an API request against botocore's service model (the botocore pinned in the venv).

botocore's own ParamValidator checks required members, unknown members and types, but not
enums, patterns or maxima; this walker checks all of them and names the member path of each
problem. Patterns are the service team's Java regular expressions: ``java_pattern`` translates
the constructs the models use (POSIX classes are ASCII-only in Java; UTF-16 surrogate ranges
stand for the supplementary planes) and refuses anything it does not know. A value must match
its pattern as a whole (Java's ``Pattern.matches``), as AWS enforces it: the models often omit
the anchors that the API Reference prints (SageMaker's ModelName is ``[a-zA-Z0-9]([\-a-zA-Z0-9]*
[a-zA-Z0-9])?`` in botocore, ``^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?$`` in the API Reference).
"""

from __future__ import annotations

import datetime
import functools
import re
from typing import Any

import botocore.session
import regex  # Unicode property classes (\p{L}, \p{N}, ...) as Java has them
from botocore.model import OperationModel, Shape

_JAVA_POSIX = {  # java.util.regex: POSIX classes match US-ASCII only
    r"\p{Alnum}": "[A-Za-z0-9]", r"\p{Alpha}": "[A-Za-z]", r"\p{Digit}": "[0-9]", r"\p{XDigit}": "[0-9A-Fa-f]",
    r"\p{Upper}": "[A-Z]", r"\p{Lower}": "[a-z]", r"\p{Print}": r"[\x20-\x7E]", r"\p{Graph}": r"[\x21-\x7E]",
    r"\p{Punct}": r"[!-/:-@\[-`{-~]", r"\p{Space}": r"[ \t\n\x0B\f\r]", r"\p{ASCII}": r"[\x00-\x7F]",
}
_SUPPLEMENTARY = (r"\uD800\uDC00-\uDBFF\uDFFF", r"\U00010000-\U0010FFFF")  # a UTF-16 pair range
_UNICODE_CATEGORY = re.compile(r"\\[pP]\{(L|Lu|Ll|Lt|Lm|Lo|M|Mn|Mc|Me|N|Nd|Nl|No|P|Pc|Pd|Ps|Pe|Pi|Pf|Po|S|Sm|Sc|Sk|So|"
                               r"Z|Zs|Zl|Zp|C|Cc|Cf|Co|Cn)\}")


@functools.cache
def java_pattern(pattern: str) -> regex.Pattern[str]:
    """Compile a botocore (Java) pattern with the same meaning in Python's ``regex``."""
    translated = pattern.replace(*_SUPPLEMENTARY)
    for java, python in _JAVA_POSIX.items():
        translated = translated.replace(java, python)
    leftover = _UNICODE_CATEGORY.sub("", translated)
    if re.search(r"\\[pP]\{|\\u[dD][89a-fA-F][0-9a-fA-F]{2}|\\[QEzZG]|\\x\{", leftover):
        raise ValueError(f"untranslated Java construct in pattern {pattern!r}")
    return regex.compile(translated)


@functools.cache
def service_model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


def operation(service: str, name: str) -> OperationModel:
    model = service_model(service)
    if name not in model.operation_names:
        raise KeyError(f"botocore {service} has no operation {name}")
    return model.operation_model(name)


def validate(service: str, operation_name: str, params: dict[str, Any]) -> list[str]:
    """Every way ``params`` breaks the input shape of ``service.operation_name``, as messages."""
    shape = operation(service, operation_name).input_shape
    problems: list[str] = []
    _check(shape, params, f"{service}.{operation_name}", problems)
    return problems


def _check(shape: Shape, value: Any, path: str, problems: list[str]) -> None:
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if meta.get("document"):
            return
        if not isinstance(value, dict):
            problems.append(f"{path}: expected an object, got {type(value).__name__} {value!r:.80}")
            return
        members = shape.members
        for name in shape.required_members:
            if name not in value:
                problems.append(f"{path}: missing required member {name}")
        for name, item in value.items():
            if name not in members:
                problems.append(f"{path}: unknown member {name}; allowed: {', '.join(sorted(members))}")
            else:
                _check(members[name], item, f"{path}.{name}", problems)
        if meta.get("union") and len(value) != 1:
            problems.append(f"{path}: a union takes exactly one member, got {sorted(value)}")
        return
    if kind == "list":
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__} {value!r:.80}")
            return
        _bounds(len(value), meta, path, "items", problems)
        for i, item in enumerate(value):
            _check(shape.member, item, f"{path}[{i}]", problems)
        return
    if kind == "map":
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a map, got {type(value).__name__} {value!r:.80}")
            return
        _bounds(len(value), meta, path, "entries", problems)
        for key, item in value.items():
            _check(shape.key, key, f"{path} key {key!r}", problems)
            _check(shape.value, item, f"{path}[{key!r}]", problems)
        return
    if kind == "string":
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {type(value).__name__} {value!r:.80}")
            return
        _bounds(len(value), meta, path, "characters", problems)
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} is not one of {shape.enum}")
        if "pattern" in meta and not java_pattern(meta["pattern"]).fullmatch(value):
            problems.append(f"{path}: {value!r} does not match pattern {meta['pattern']!r}")
        return
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path}: expected an integer, got {type(value).__name__} {value!r:.80}")
            return
        _bounds(value, meta, path, "", problems)
        return
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{path}: expected a number, got {type(value).__name__} {value!r:.80}")
            return
        _bounds(value, meta, path, "", problems)
        return
    if kind == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{path}: expected a boolean, got {type(value).__name__} {value!r:.80}")
        return
    if kind == "timestamp":
        if not isinstance(value, (str, int, float, datetime.datetime)) or isinstance(value, bool):
            problems.append(f"{path}: expected a timestamp, got {type(value).__name__} {value!r:.80}")
        return
    if kind == "blob":
        if not isinstance(value, (str, bytes, bytearray)):
            problems.append(f"{path}: expected a blob (bytes or string), got {type(value).__name__}")
        return
    raise ValueError(f"{path}: unhandled botocore shape type {kind}")


def _bounds(measure: float, meta: dict[str, Any], path: str, unit: str, problems: list[str]) -> None:
    what = f"{measure} {unit}".strip()
    if "min" in meta and measure < meta["min"]:
        problems.append(f"{path}: {what} is below the minimum {meta['min']}")
    if "max" in meta and measure > meta["max"]:
        problems.append(f"{path}: {what} is above the maximum {meta['max']}")


# -- representative responses ---------------------------------------------------------------

_STRING_CANDIDATES = ("example", "example-1", "Example1", "1", "a",
                      "arn:aws:sagemaker:us-east-1:123456789012:endpoint/example")


def sample_output(service: str, operation_name: str) -> dict[str, Any]:
    """A minimal response of the operation: its required output members only, each shape-valid.

    Only what the output shape promises is present, so a workflow that reads an optional
    member without a default shows up; callers overlay the optional members a scenario needs.
    """
    shape = operation(service, operation_name).output_shape
    return _sample(shape, 0) if shape is not None else {}


def _sample(shape: Shape, depth: int) -> Any:
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if depth > 6 or meta.get("document"):
            return {}
        return {name: _sample(shape.members[name], depth + 1) for name in shape.required_members}
    if kind == "list":
        return [_sample(shape.member, depth + 1) for _ in range(int(meta.get("min", 0)))]
    if kind == "map":
        return {}
    if kind == "string":
        if shape.enum:
            return shape.enum[0]
        for candidate in _STRING_CANDIDATES:
            if meta.get("min", 0) <= len(candidate) <= meta.get("max", 1 << 30) and (
                    "pattern" not in meta or java_pattern(meta["pattern"]).fullmatch(candidate)):
                return candidate
        return "x" * int(meta.get("min", 1))
    if kind in ("integer", "long"):
        return int(meta.get("min", 1))
    if kind in ("float", "double"):
        return float(meta.get("min", 1.0))
    if kind == "boolean":
        return False
    if kind == "timestamp":
        return "2026-01-05T12:00:00Z"
    if kind == "blob":
        return ""
    raise ValueError(f"unhandled botocore shape type {kind}")
