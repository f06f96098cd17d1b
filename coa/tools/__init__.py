"""The tool seam: every action a policy can take besides answering is a ``Tool``, registered by name.

A tool is one file plus its registration (as engines and search backends are):

    @register("search")
    class SearchTool(Tool):                           # coa/tools/search.py
        description = "Search the document index ..."
        parameters = {"type": "object", "properties": {"query": {"type": "string"}},
                      "required": ["query"], "additionalProperties": False}
        needs = ("searcher",)                         # what it takes from the ToolContext
        batched = True                                # execute_batch does better than one call at a time

        @classmethod
        def build(cls, ctx: ToolContext) -> "SearchTool": ...
        def execute(self, args: dict) -> Observation: ...

    make_tool("search", ToolContext(searcher=s))      # built-ins are imported on first use

The contract (what the loop, the CLI and the chat teachers rely on):
  ``name``         the registered name: what a call names and what a trajectory records
  ``description``  one or two sentences the policy reads (chat teachers get it natively)
  ``parameters``   a JSON-schema object (OpenAI function calling): ``properties``, ``required``,
                   ``additionalProperties: false``; ``schema()`` wraps it as ``{"type": "function", ...}``.
                   Arguments are checked against it (``coa.tools.schema.problems``) before ``execute`` sees them
  ``execute(args) -> Observation``
                   arguments that passed the schema → the text the policy reads and its provenance (a
                   JSON-able dict: ``doc_ids`` for search and open). A failure the policy caused or can fix
                   (an unknown document, code that raised) is an ``Observation`` with ``error`` set, never an
                   exception; an exception means the environment is broken (index unreadable, server down)
                   and stops the run, as a search error does today
  ``execute_batch(list[args]) -> list[Observation]``
                   the same for many calls, in order (default: one at a time; search runs one searcher call)
  ``needs``, ``build(ctx)``
                   the resources it takes from the ``ToolContext`` (``searcher``, ``store``, ``tokenizer``) and
                   how it is made from it; its own settings are a dataclass (``Settings``) in ``ctx.settings``
  ``close()``      release what it holds

The policy never sees an exception from a call: ``Toolbox.prepare`` turns bad JSON, an unknown tool, arguments
that break the schema and an exhausted ``ToolBudget`` into an ``Observation`` whose text says so (as the
search budget message does, ``coa.formats.FormatPreset.budget_observation``) and whose ``error`` names it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

from coa.errors import BadInput
from coa.formats import FormatPreset, get_format

__all__ = [
    "Observation",
    "Tool",
    "ToolBudget",
    "ToolContext",
    "TOOLS",
    "register",
    "tool_class",
    "make_tool",
    "known_tools",
    "load_builtins",
    "ERRORS",
]

# What ``Observation.error`` may say: the call was refused before running (first four), or it ran and failed.
ERRORS = {
    "bad_json": "the arguments are not one JSON object",
    "unknown_tool": "no enabled tool has that name",
    "bad_arguments": "the arguments break the tool's schema",
    "budget": "the total or the tool's call budget is spent",
    "empty_query": "search: the query is empty",
    "not_found": "open: no document has that id or title",
    "bad_page": "open: the document has fewer pages",
    "exception": "python: the code raised (or exited non-zero)",
    "wall_time": "python: stopped at the wall-time limit",
    "cpu_time": "python: stopped at the CPU-time limit",
    "memory": "python: the memory limit was reached",
    "output": "python: stopped at the output limit",
}


@dataclass(frozen=True)
class Observation:
    """What a call returns to the policy: ``text`` (the body; the format preset wraps it), ``provenance``
    (JSON-able: ``doc_ids`` for search and open) and ``error`` ("" when the call ran cleanly, else a key
    of ``ERRORS``)."""

    text: str
    provenance: dict = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class ToolContext:
    """What tools are built from: the resources of one environment, made once by whoever runs the loop.

    ``settings`` maps a tool's name to its settings dataclass (or a dict of its fields)."""

    fmt: FormatPreset = field(default_factory=lambda: get_format("search_r1"))
    topk: int = 3  # documents per search
    searcher: Any = None  # a coa.search.Searcher
    store: Any = None  # a coa.search.DocumentStore
    tokenizer: Any = None  # the student's tokenizer, if any (open pages count its tokens)
    settings: Mapping[str, Any] = field(default_factory=dict)

    def need(self, resource: str, tool: str) -> Any:
        value = getattr(self, resource, None)
        if value is None:
            raise BadInput(f"tool {tool!r} needs a {resource}, and none was given (search.index=DIR)")
        return value

    def settings_of(self, tool: str, cls: type) -> Any:
        value = self.settings.get(tool)
        return value if isinstance(value, cls) else cls(**(value or {}))


class Tool:
    """The base class of a tool (the contract is in this module's docstring)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    parameters: ClassVar[dict] = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
    needs: ClassVar[tuple[str, ...]] = ()
    batched: ClassVar[bool] = False

    @classmethod
    def build(cls, ctx: ToolContext) -> "Tool":
        return cls()

    @classmethod
    def schema(cls) -> dict:
        """The OpenAI function-calling declaration (what a chat teacher is offered)."""
        return {
            "type": "function",
            "function": {"name": cls.name, "description": cls.description, "parameters": cls.parameters},
        }

    def execute(self, args: dict) -> Observation:
        raise NotImplementedError

    def execute_batch(self, calls: Sequence[dict]) -> list[Observation]:
        return [self.execute(args) for args in calls]

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class ToolBudget:
    """Calls allowed per trajectory: ``max_calls`` of every tool together (``search.max_actions`` today),
    and for a tool named in ``per_tool`` at most that many of it. A refused call is not counted."""

    max_calls: int = 3
    per_tool: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in {
            "max_calls": self.max_calls,
            **{f"per_tool.{k}": v for k, v in self.per_tool.items()},
        }.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"tool budget {name} must be an integer >= 0, got {value!r}")

    def refusal(self, name: str, used: Mapping[str, int]) -> str | None:
        """The message the policy reads when a call of ``name`` is over budget (``used``: calls run so far
        per tool), or None."""
        if sum(used.values()) >= self.max_calls:
            return f"Reached the limit of {self.max_calls} tool calls; answer with what you have."
        cap = self.per_tool.get(name)
        if cap is not None and used.get(name, 0) >= cap:
            return f"Reached the limit of {cap} {name} calls; use another tool or answer."
        return None


TOOLS: dict[str, type[Tool]] = {}
# where each built-in tool lives: imported on first use (python's sandbox, open's fuzzy titles)
_MODULES = {"search": "coa.tools.search", "open": "coa.tools.open_doc", "python": "coa.tools.python"}


def register(name: str):
    """Class decorator: ``@register("open")`` makes the tool callable by that name."""

    def add(cls: type[Tool]) -> type[Tool]:
        if not (isinstance(cls, type) and issubclass(cls, Tool)):
            raise TypeError(f"@register({name!r}) decorates a coa.tools.Tool subclass, got {cls!r}")
        cls.name = name
        TOOLS[name] = cls
        return cls

    return add


def known_tools() -> list[str]:
    return sorted(set(TOOLS) | set(_MODULES))


UNKNOWN_TOOL = "(unknown tool)"


def tool_label(name: str) -> str:
    """What a count of calls files a call under: its tool's name, or ``UNKNOWN_TOOL`` for a name no tool is
    registered by (a policy may call anything; one bucket keeps reports from listing every invented name)."""
    return name if name in TOOLS or name in _MODULES else UNKNOWN_TOOL  # known_tools() without sorting per call


def tool_class(name: str) -> type[Tool]:
    if name not in TOOLS and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in TOOLS:
        raise BadInput(f"unknown tool {name!r}; known: {', '.join(known_tools())}")
    return TOOLS[name]


def load_builtins() -> list[str]:
    """Import every built-in tool (registering it); every registered tool's name."""
    for module in _MODULES.values():
        importlib.import_module(module)
    return sorted(TOOLS)


def make_tool(name: str, ctx: ToolContext | None = None) -> Tool:
    return tool_class(name).build(ctx or ToolContext())


from coa.tools.toolbox import Call, Toolbox  # noqa: E402 - the toolbox is built on the contract above

__all__ += ["Call", "Toolbox"]
