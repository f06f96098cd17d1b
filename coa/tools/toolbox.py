"""The enabled tools of one environment and their budget: what the agent loop calls.

    box = Toolbox([make_tool("search", ctx), make_tool("open", ctx)], ToolBudget(max_calls=4, per_tool={"open": 2}))
    used = Counter()                                          # calls per tool, one per trajectory
    call = box.prepare("open", '{"doc": "Maria Golovin"}', used)   # a Call (counted in used), or an Observation
    observations = box.run([call, ...])                       # calls of many trajectories, batched per tool

``prepare`` is where every mistake of the policy becomes an observation it reads (``error`` says which):
an unknown tool, arguments that are not one JSON object, arguments that break the schema, a spent budget.
Only accepted calls are counted. ``run`` never sees a bad call, so what it raises is the environment's.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, MutableMapping, Sequence

from coa.tools import Observation, Tool, ToolBudget
from coa.tools.schema import problems, shown, signature

EXAMPLE_VALUES = {"string": "...", "integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}


@dataclass(frozen=True)
class Call:
    """A call that passed the checks: the tool's name and its arguments."""

    name: str
    args: dict


def example(schema: dict) -> str:
    """``{"doc": "..."}``: the required arguments with placeholder values, for messages."""
    props = schema.get("properties", {})
    args = {k: EXAMPLE_VALUES.get(props.get(k, {}).get("type"), "...") for k in schema.get("required", [])}
    return json.dumps(args)


def check_arguments(tool: Tool | type[Tool], arguments: str | Mapping[str, Any]) -> dict | Observation:
    """``arguments`` (JSON text, or already parsed) as a dict that passes ``tool``'s schema, or the
    ``Observation`` saying what is wrong (``bad_json``, ``bad_arguments``)."""
    name = tool.name
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            return Observation(
                f"The arguments of {name} are not valid JSON ({e.msg} at character {e.pos}); write one "
                f"JSON object, e.g. {example(tool.parameters)}.",
                error="bad_json",
            )
    if not isinstance(arguments, Mapping):
        return Observation(
            f"The arguments of {name} must be one JSON object, e.g. {example(tool.parameters)}; "
            f"got {shown(arguments)}.",
            error="bad_json",
        )
    wrong = problems(dict(arguments), tool.parameters)
    if wrong:
        return Observation(
            f"Bad arguments for {name}: {'; '.join(wrong)}. Parameters: {signature(tool.parameters)}.",
            error="bad_arguments",
        )
    return dict(arguments)


class Toolbox:
    def __init__(self, tools: Sequence[Tool], budget: ToolBudget | None = None):
        self.tools = {t.name: t for t in tools}
        self.budget = budget or ToolBudget()

    @property
    def names(self) -> list[str]:
        return list(self.tools)

    def schemas(self) -> list[dict]:
        """Every enabled tool's function declaration (what a chat teacher is offered)."""
        return [t.schema() for t in self.tools.values()]

    def prepare(
        self,
        name: str,
        arguments: str | Mapping[str, Any],
        used: MutableMapping[str, int] | None = None,
        budget: ToolBudget | None = None,
    ) -> Call | Observation:
        """Check one call of the policy: a ``Call`` to run (counted in ``used``), or the ``Observation`` that
        refuses it. ``arguments``: the JSON text the policy wrote, or the object already parsed; ``budget``:
        this trajectory's, if not the toolbox's (the agent loop passes its ``Budget``'s)."""
        used = Counter() if used is None else used
        tool = self.tools.get(name)
        if tool is None:
            return Observation(
                f"Unknown tool {name!r}. Available tools: {', '.join(self.names) or 'none'}.", error="unknown_tool"
            )
        refusal = (budget or self.budget).refusal(name, used)
        if refusal:
            return Observation(refusal, error="budget")
        args = check_arguments(tool, arguments)
        if isinstance(args, Observation):
            return args
        used[name] = used.get(name, 0) + 1
        return Call(name, args)

    def prepare_json(
        self, text: str, used: MutableMapping[str, int] | None = None, budget: ToolBudget | None = None
    ) -> Call | Observation:
        """A whole call written as JSON, ``{"name": ..., "arguments": {...}}`` (the body of Hermes/Qwen's
        ``<tool_call>``)."""
        try:
            call = json.loads(text)
        except json.JSONDecodeError as e:
            return Observation(
                f"The tool call is not valid JSON ({e.msg} at character {e.pos}); write one JSON "
                'object, e.g. {"name": "search", "arguments": {"query": "..."}}.',
                error="bad_json",
            )
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return Observation(
                'A tool call is one JSON object with a "name" and its "arguments", e.g. '
                '{"name": "search", "arguments": {"query": "..."}}; got '
                f"{shown(call)}.",
                error="bad_json",
            )
        return self.prepare(call["name"], call.get("arguments", {}), used, budget)

    def run(self, calls: Sequence[Call]) -> list[Observation]:
        """Run accepted calls (of one or many trajectories), each tool's calls in one ``execute_batch``;
        observations in the order of ``calls``."""
        out: list[Observation | None] = [None] * len(calls)
        by_tool: dict[str, list[int]] = {}
        for i, call in enumerate(calls):
            by_tool.setdefault(call.name, []).append(i)
        for name, where in by_tool.items():
            results = self.tools[name].execute_batch([calls[i].args for i in where])
            if len(results) != len(where):
                raise RuntimeError(f"tool {name!r} returned {len(results)} observations for {len(where)} calls")
            for i, result in zip(where, results):
                out[i] = result
        return out

    def call(
        self, name: str, arguments: str | Mapping[str, Any], used: MutableMapping[str, int] | None = None
    ) -> Observation:
        """``prepare`` then ``run`` one call: the observation the policy reads, whatever it wrote."""
        prepared = self.prepare(name, arguments, used)
        return prepared if isinstance(prepared, Observation) else self.run([prepared])[0]

    def close(self) -> None:
        for tool in self.tools.values():
            tool.close()
