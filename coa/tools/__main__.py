"""``python -m coa.tools list|call``: the registered tools, and one call exactly as the policy would see it.

  python -m coa.tools list                  # each tool: name, description, argument schema
  python -m coa.tools list --json           # the function declarations a chat teacher is offered
  python -m coa.tools call search '{"query": "Maria Golovin composer"}' search.index=runs/index
  python -m coa.tools call open '{"doc": "Maria Golovin", "page": 1}' open.window_tokens=100
  python -m coa.tools call python '{"code": "print(6 * 7)"}' python.wall_s=5

``call`` prints the observation's text on stdout (what the format preset wraps in its result tags) and its
error and provenance as one JSON line on stderr. Bad input (arguments that are not JSON or break the tool's
schema, an unknown tool or key, a missing index, no sandbox for ``python``) exits 2 with one line. Settings
are key=value on the command line only (``python -m coa.tools call --help`` lists them); their defaults are
``params.yaml``'s defaults.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from coa import paths
from coa.config import cli
from coa.errors import BadInput, entry_point
from coa.formats import PRESETS, get_format
from coa.search import DocumentStore, make_searcher
from coa.tools import TOOLS, ToolContext, load_builtins, tool_class
from coa.tools.open_doc import OpenSettings
from coa.tools.sandbox import SandboxSettings
from coa.tools.toolbox import Toolbox, check_arguments

PROG = "python -m coa.tools"


@dataclass
class SearchSettings:
    """Where search and open read: an index folder (or a /retrieve server, search only)."""

    index: str = field(default=paths.INDEX, metadata={"help": "coa.search index folder"})
    retriever: str = field(default="bm25", metadata={"help": "bm25 | dense | fusion over that index"})
    backend: str = field(
        default="", metadata={"help": "the backend the index must have been built with (any if empty)"}
    )
    retriever_url: str = field(default="", metadata={"help": "a Search-R1 /retrieve server instead of the index"})
    topk: int = field(default=3, metadata={"help": "documents per search"})

    def __post_init__(self) -> None:
        if self.topk < 1:
            raise ValueError(f"search.topk must be >= 1 (documents per search), got {self.topk}")


@dataclass
class CallConfig:
    """``call NAME 'JSON_ARGS'``: run one call of a tool and print what the policy would read."""

    format: str = field(
        default="search_r1",
        metadata={"help": f"format preset ({' | '.join(PRESETS)}): how search renders its documents"},
    )
    search: SearchSettings = field(default_factory=SearchSettings)
    open: OpenSettings = field(default_factory=OpenSettings)
    python: SandboxSettings = field(default_factory=SandboxSettings)

    def __post_init__(self) -> None:
        get_format(self.format)


def list_tools(as_json: bool) -> None:
    names = load_builtins()
    if as_json:
        print(json.dumps([TOOLS[n].schema() for n in names], indent=2, ensure_ascii=False))
        return
    for name in names:
        cls = TOOLS[name]
        print(f"{name}: {cls.description}")
        print("  " + json.dumps(cls.parameters, ensure_ascii=False))


def context(cfg: CallConfig, needs: tuple[str, ...]) -> ToolContext:
    """Only what the tool needs: a searcher for search, the document store for open, nothing for python."""
    s = cfg.search
    searcher = store = None
    if "searcher" in needs:
        searcher = make_searcher(s.index, s.retriever_url or None, s.retriever, s.backend or None)
    if "store" in needs:
        store = getattr(searcher, "store", None) or DocumentStore(s.index)
    return ToolContext(
        fmt=get_format(cfg.format),
        topk=s.topk,
        searcher=searcher,
        store=store,
        settings={"open": cfg.open, "python": cfg.python},
    )


def settings(argv: list[str]) -> CallConfig:
    return cli(
        CallConfig, None, argv, f"{PROG} call NAME 'JSON_ARGS' [key=value ...]: {CallConfig.__doc__.split(': ', 1)[1]}"
    )


def call(name: str, arguments: str, cfg: CallConfig) -> None:
    cls = tool_class(name)
    checked = check_arguments(cls, arguments)
    if not isinstance(checked, dict):
        raise BadInput(checked.text)
    tool = cls.build(context(cfg, cls.needs))
    try:
        observation = Toolbox([tool]).call(name, checked)
    finally:
        tool.close()
    print(observation.text)
    print(
        json.dumps({"error": observation.error, "provenance": observation.provenance}, ensure_ascii=False),
        file=sys.stderr,
    )


@entry_point(PROG)
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["list"]:
        list_tools("--json" in argv[1:])
        return 0
    if argv[:1] == ["call"]:
        if any(a in ("-h", "--help") for a in argv[1:]) or argv[1:2] == ["help"]:
            settings(["--help"])
        if len(argv) < 3 or "=" in argv[1]:
            raise BadInput(
                f"call needs a tool name and its JSON arguments: {PROG} call search "
                '\'{"query": "..."}\' [key=value ...]'
            )
        cfg = settings(argv[3:])
        load_builtins()
        call(argv[1], argv[2], cfg)
        return 0
    asked = argv[:1] in (["--help"], ["-h"], ["help"])
    print(__doc__ + "commands: list, call (call --help lists the settings)", file=sys.stdout if asked else sys.stderr)
    return 0 if asked else 2


if __name__ == "__main__":
    sys.exit(main())
