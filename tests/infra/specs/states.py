"""A path-following Step Functions simulator for JSONata state machines.

Walks a definition from StartAt down every branch (every Choice rule and the Default, every
Catch, each Task's success), evaluating each ``{% ... %}`` with jsonata-python against
``$states`` and the workflow variables as the Step Functions developer guide documents them
(https://docs.aws.amazon.com/step-functions/latest/dg/transforming-data.html, "Reserved
variable: $states"; https://docs.aws.amazon.com/step-functions/latest/dg/workflow-variables.html):

- ``$states.input`` and ``$states.context`` everywhere;
- ``$states.result`` only in a Task's (or Map's, Parallel's) Output and Assign;
- ``$states.errorOutput`` only in a Catch's Output and Assign;
- variables are those Assigned by earlier states on the path; a state's own Assign is not
  visible in its Output or other Assign entries, and a caught Task's Assign is not applied.

A reference outside those scopes is reported with the state, the field and the expression.
Task results come from a callback (``results``): representative responses built from
botocore's output shapes. Map and Parallel states are not modelled and are refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonata
from jsonata.utils import Utils

from tests.infra.specs.intrinsics import ACCOUNT, REGION

_EXPRESSION = re.compile(r"^\{%(.*)%\}$", re.DOTALL)
#: Functions Step Functions adds to JSONata 2.0.6 (its $eval is not available).
SFN_FUNCTIONS = {"partition", "range", "hash", "random", "uuid", "parse"}
JSONATA_FUNCTIONS = set(jsonata.Jsonata.static_frame.bindings) - {"eval"}
NULL_VALUE = Utils.NULL_VALUE


def _arity(name: str) -> tuple[int, float]:
    """How many arguments JSONata 2.0.6's ``$name`` takes (least, most), read from the signature
    jsonata-python declares for it: ``?`` marks an optional parameter (also one the context fills),
    ``+`` a variadic one."""
    params = jsonata.Jsonata.static_frame.bindings[name].signature._params
    least = sum(1 for p in params if not p.regex.endswith(("?", "*")))
    return least, float("inf") if any(p.regex.endswith(("+", "*")) for p in params) else len(params)


#: (least, most) arguments of each built-in JSONata function. Step Functions' own functions are
#: not in it: none of our workflows calls them, and their signatures are only prose in AWS's docs.
JSONATA_ARITY = {name: _arity(name) for name in JSONATA_FUNCTIONS}

SCOPE_ARGUMENTS = frozenset({"input", "context"})
SCOPE_RESULT = frozenset({"input", "context", "result"})
SCOPE_CATCH = frozenset({"input", "context", "errorOutput"})
ERROR_OUTPUT = {"Error": "States.TaskFailed", "Cause": "representative cause of a failed task"}


@dataclass
class TaskCall:
    machine: str
    state: str
    resource: str
    arguments: Any
    variables: dict[str, Any]
    path: tuple[str, ...]


@dataclass
class Finding:
    machine: str
    state: str
    where: str
    expression: str
    message: str

    def __str__(self) -> str:
        return f"{self.machine} state {self.state!r} {self.where}: {self.message} in {self.expression!r}"


@dataclass
class Run:
    calls: list[TaskCall] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    visited_states: set[str] = field(default_factory=set)


# -- JSONata: static scope check + evaluation ---------------------------------------------

def _nodes(node: Any, seen: set[int] | None = None) -> Iterator[Any]:
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, (list, tuple)):
        for item in node:
            yield from _nodes(item, seen)
        return
    if not hasattr(node, "__dict__") or not hasattr(node, "type"):
        return
    yield node
    for name, child in vars(node).items():
        if name in ("_outer_instance", "lexer", "node") or child is None or isinstance(child, (str, int, float)):
            continue
        yield from _nodes(child, seen)


def scope_problems(expression: str, *, available: frozenset[str], variables: set[str]) -> list[str]:
    """References in ``expression`` to $states members or variables not available here."""
    try:
        ast = jsonata.Jsonata(expression).ast
    except Exception as error:  # noqa: BLE001 - the parser's own message says what is wrong
        return [f"does not parse: {error}"]
    nodes = list(_nodes(ast))
    local = {n.lhs.value for n in nodes if n.type == "bind" and getattr(n.lhs, "type", None) == "variable"}
    local |= {a.value for n in nodes if n.type == "lambda" for a in (n.arguments or [])}
    calls = [n for n in nodes if n.type in ("function", "partial") and n.procedure is not None]
    functions = {id(n.procedure) for n in calls}
    # `x ~> $f(a)` calls $f(x, a): the left side of ~> is one more argument.
    chained = {id(n.rhs) for n in nodes if n.type == "apply" and n.value == "~>"}
    problems = []
    for call in calls:
        name = call.procedure.value if call.procedure.type == "variable" else None
        if name in JSONATA_ARITY and name not in local:
            given = len(call.arguments or []) + (id(call) in chained)
            least, most = JSONATA_ARITY[name]
            if not least <= given <= most:
                takes = f"{least}" if least == most else f"{least} to {most}".replace(" to inf", " or more")
                problems.append(f"${name}() takes {takes} argument{'' if most == 1 else 's'}, given {given}")
    for node in nodes:
        steps = node.steps if node.type == "path" else []
        if (len(steps) > 1 and steps[0].type == "variable" and steps[0].value == "states"
                and steps[1].type == "name" and steps[1].value not in available):
            problems.append(f"$states.{node.steps[1].value} is not available here "
                                f"(available: {', '.join('$states.' + a for a in sorted(available))})")
        if node.type != "variable" or node.value in ("", "$", "states") or node.value in local:
            continue
        if id(node) in functions:
            if node.value not in JSONATA_FUNCTIONS | SFN_FUNCTIONS:
                problems.append(f"${node.value}() is not a function Step Functions provides")
        elif node.value not in variables:
            problems.append(f"${node.value} is not assigned on this path (assigned: "
                            f"{', '.join('$' + v for v in sorted(variables)) or 'none'})")
    return problems


def evaluate(expression: str, bindings: dict[str, Any]) -> Any:
    """``expression`` with these variables bound. A variable that holds JSON null (None here) is
    bound as JSONata's null, as Step Functions stores it: jsonata-python takes a bound None for
    undefined, and `$gain = null` would be false."""
    variables = {name: NULL_VALUE if value is None else value for name, value in bindings.items()}
    return jsonata.Jsonata(expression).evaluate(None, variables)


# -- the simulator -------------------------------------------------------------------------

class Simulator:
    """Explores one state machine from each start input; collects Task calls and findings."""

    def __init__(self, machine: str, definition: dict[str, Any],
                 results: Callable[[TaskCall], Any]) -> None:
        self.machine = machine
        self.definition = definition
        self.results = results
        self.default_language = definition.get("QueryLanguage", "JSONPath")

    def run(self, start_inputs: list[dict[str, Any]]) -> Run:
        run = Run()
        for start in start_inputs:
            seen: set[tuple[str, tuple[str, ...]]] = set()
            stack = [(self.definition["StartAt"], start, {}, ())]
            while stack:
                name, state_input, variables, path = stack.pop()
                key = (name, tuple(sorted(variables)))
                if key in seen:
                    continue
                seen.add(key)
                run.visited_states.add(name)
                for next_name, next_input, next_vars in self._step(run, start, name, state_input, variables,
                                                                    (*path, name)):
                    stack.append((next_name, next_input, next_vars, (*path, name)))
        return run

    # One state: its outgoing edges as (next state, next input, variables).
    def _step(self, run: Run, start: dict[str, Any], name: str, state_input: Any, variables: dict[str, Any],
              path: tuple[str, ...]) -> list[tuple[str, Any, dict[str, Any]]]:
        state = self.definition["States"][name]
        kind = state["Type"]
        if kind in ("Map", "Parallel"):
            raise NotImplementedError(f"{self.machine}: state {name} is a {kind}; the simulator does not model it")
        jsonata_state = state.get("QueryLanguage", self.default_language).upper() == "JSONATA"
        context = {"Execution": {"Id": f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{self.machine}:run-1",
                                 "Input": start, "Name": "run-1", "StartTime": "2026-01-05T12:00:00.000Z",
                                 "RedriveCount": 0},
                   "State": {"Name": name, "EnteredTime": "2026-01-05T12:00:01.000Z", "RetryCount": 0},
                   "StateMachine": {"Id": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{self.machine}",
                                    "Name": self.machine}}

        def render(value: Any, where: str, scope: frozenset[str], result: Any = None, error: Any = None) -> Any:
            if not jsonata_state:
                return value
            if isinstance(value, dict):
                rendered = {k: render(v, f"{where}.{k}", scope, result, error) for k, v in value.items()}
                return {k: v for k, v in rendered.items() if v is not None}
            if isinstance(value, list):
                return [render(v, f"{where}[{i}]", scope, result, error) for i, v in enumerate(value)]
            match = _EXPRESSION.match(value) if isinstance(value, str) else None
            if not match:
                return value
            expression = match.group(1).strip()
            for problem in scope_problems(expression, available=scope, variables=set(variables)):
                run.findings.append(Finding(self.machine, name, where, expression, problem))
            states = {"input": state_input, "context": context}
            if "result" in scope:
                states["result"] = result
            if "errorOutput" in scope:
                states["errorOutput"] = error
            try:
                return evaluate(expression, {**variables, "states": states})
            except Exception as failure:  # noqa: BLE001 - reported with the expression
                run.findings.append(Finding(self.machine, name, where, expression, f"evaluation fails: {failure}"))
                return None

        def assigned(assign: dict[str, Any] | None, where: str, scope: frozenset[str], result: Any = None,
                     error: Any = None) -> dict[str, Any]:
            if not assign:
                return dict(variables)
            return {**variables, **{k: render(v, f"{where}.{k}", scope, result, error) for k, v in assign.items()}}

        def output(spec: Any, default: Any, where: str, scope: frozenset[str], result: Any = None,
                   error: Any = None) -> Any:
            return default if spec is None else render(spec, where, scope, result, error)

        edges: list[tuple[str, Any, dict[str, Any]]] = []
        if kind == "Task":
            for timing in ("TimeoutSeconds", "HeartbeatSeconds"):
                if timing in state:
                    render(state[timing], timing, SCOPE_ARGUMENTS)
            arguments = render(state.get("Arguments", state.get("Parameters", state_input if not jsonata_state
                                                                            else None)), "Arguments",
                               SCOPE_ARGUMENTS)
            call = TaskCall(self.machine, name, state["Resource"], arguments, dict(variables), path)
            run.calls.append(call)
            result = self.results(call)
            after = assigned(state.get("Assign"), "Assign", SCOPE_RESULT, result=result)
            if "Next" in state:
                edges.append((state["Next"], output(state.get("Output"), result, "Output", SCOPE_RESULT,
                                                    result=result), after))
            for i, catcher in enumerate(state.get("Catch", [])):
                where = f"Catch[{i}]"
                caught_vars = assigned(catcher.get("Assign"), f"{where}.Assign", SCOPE_CATCH, error=ERROR_OUTPUT)
                caught_output = output(catcher.get("Output"), ERROR_OUTPUT, f"{where}.Output", SCOPE_CATCH,
                                       error=ERROR_OUTPUT)
                edges.append((catcher["Next"], caught_output, caught_vars))
        elif kind == "Choice":
            for i, rule in enumerate(state.get("Choices", [])):
                where = f"Choices[{i}]"
                if jsonata_state:
                    verdict = render(rule["Condition"], f"{where}.Condition", SCOPE_ARGUMENTS)
                    if not isinstance(verdict, bool):
                        run.findings.append(Finding(self.machine, name, f"{where}.Condition", rule["Condition"],
                                                    f"evaluates to {verdict!r}, not a boolean"))
                edges.append((rule["Next"], output(rule.get("Output"), state_input, f"{where}.Output",
                                                   SCOPE_ARGUMENTS),
                              assigned(rule.get("Assign"), f"{where}.Assign", SCOPE_ARGUMENTS)))
            if "Default" in state:
                edges.append((state["Default"], output(state.get("Output"), state_input, "Output", SCOPE_ARGUMENTS),
                              assigned(state.get("Assign"), "Assign", SCOPE_ARGUMENTS)))
        elif kind in ("Pass", "Wait", "Succeed"):
            for timing in ("Seconds", "Timestamp"):
                if kind == "Wait" and timing in state:
                    render(state[timing], timing, SCOPE_ARGUMENTS)
            out = output(state.get("Output"), state_input, "Output", SCOPE_ARGUMENTS)
            after = assigned(state.get("Assign"), "Assign", SCOPE_ARGUMENTS)
            if "Next" in state:
                edges.append((state["Next"], out, after))
        elif kind == "Fail":
            for member in ("Error", "Cause"):
                if member in state:
                    value = render(state[member], member, SCOPE_ARGUMENTS)
                    if not isinstance(value, str):
                        run.findings.append(Finding(self.machine, name, member, str(state[member]),
                                                    f"evaluates to {value!r}; a Fail state's {member} must be "
                                                    "a string"))
        else:
            raise NotImplementedError(f"{self.machine}: state type {kind} of {name}")
        return edges


def choose(definition: dict[str, Any], name: str, state_input: Any, variables: dict[str, Any]) -> str | None:
    """The state a JSONata Choice goes to for these variables (None: no rule and no Default)."""
    state = definition["States"][name]
    states = {"input": state_input, "context": {}}
    for rule in state.get("Choices", []):
        expression = _EXPRESSION.match(rule["Condition"])
        assert expression, rule
        if evaluate(expression.group(1).strip(), {**variables, "states": states}) is True:
            return str(rule["Next"])
    return state.get("Default")


def definition_of(templates: Any, stack: str, resource: dict[str, Any]) -> dict[str, Any]:
    """The state machine's definition with its intrinsics resolved."""
    props = resource["Properties"]
    if "DefinitionString" in props:
        return dict(json.loads(templates.resolve(stack, props["DefinitionString"])))
    return dict(templates.resolve(stack, props["Definition"]))
