"""The one search environment of synthesis, RL and evaluation: ``params.yaml``'s top-level ``search``.

    search:
      index: runs/index        # coa.search index folder (built from the embedded corpus if missing)
      retriever: bm25          # bm25 | dense | fusion, over that index
      backend: ""              # bm25s | tantivy | elasticsearch | faiss: checked against the index (empty: any)
      retriever_url: ""        # a Search-R1 /retrieve server instead of the in-process index
      topk: 3                  # documents per search
      max_actions: 3           # searches per trajectory (one more gets the budget message)
      max_tokens: 320          # model-written tokens per trajectory

Two more keys, not in ``params.yaml`` (their defaults are the search-only run): ``tools`` lists the enabled
tools (``coa.tools``: ``[search]``, or e.g. ``[search, open, python]``), and ``max_calls`` caps one tool's calls
per trajectory beside ``max_actions``, the cap of all calls together (e.g. ``{python: 2}``). ``toolbox()``
builds them for the agent loop.

Every config that runs the agent loop has a ``search: SearchEnvConfig`` field filled from this one
section (``coa.config`` refuses a section that sets its own), so the teacher's data, the RL rollouts and
the evaluation see the same retriever, top-k and budgets.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from coa import paths
from coa.agent import Budget
from coa.formats import FormatPreset
from coa.model import base_tokenizer
from coa.search import BACKENDS, RETRIEVERS, DocumentStore
from coa.search.snippets import SnippetSearcher
from coa.tools import ToolContext, known_tools, make_tool
from coa.tools.open_doc import OpenSettings
from coa.tools.sandbox import SandboxSettings
from coa.tools.toolbox import Toolbox

DEFAULT_INDEX = paths.INDEX


@dataclass
class SearchEnvConfig:
    index: str = field(
        default=DEFAULT_INDEX,
        metadata={"help": "coa.search index folder; the default one is built from the embedded corpus if missing"},
    )
    retriever: str = field(default="bm25", metadata={"help": "bm25 | dense | fusion (in-process index)"})
    backend: str = field(
        default="",
        metadata={
            "help": f"the index's backend ({' | '.join(BACKENDS)}), checked when "
            "it is opened; empty = the one it was built with"
        },
    )
    retriever_url: str = field(default="", metadata={"help": "a Search-R1 /retrieve server instead of the index"})
    topk: int = field(default=3, metadata={"help": "documents per search"})
    max_actions: int = field(
        default=3, metadata={"help": "searches per trajectory (one more gets the budget message; the paper: 10)"}
    )
    max_tokens: int = field(
        default=320, metadata={"help": "model-written tokens per trajectory (all calls together; the paper: 8192)"}
    )

    snippet_tokens: int = field(
        default=0,
        metadata={
            "help": "cut each retrieved passage to its title and first N tokens of text (the student's tokenizer; "
            "coa/search/snippets.py): shorter observations, and something for `open` to add; 0 = whole passages"
        },
    )
    tools: list[str] = field(
        default_factory=lambda: ["search"],
        metadata={
            "help": "the enabled tools (coa.tools: search, open, python, ...); search "
            "keeps its own tags, the others use the format's generic call"
        },
    )
    max_calls: dict[str, int] = field(
        default_factory=dict,
        metadata={
            "help": "calls per trajectory of one tool, beside max_actions (all tools together), e.g. {python: 2}"
        },
    )
    open: OpenSettings = field(default_factory=OpenSettings, metadata={"help": "the open tool's pages"})
    python: SandboxSettings = field(
        default_factory=SandboxSettings, metadata={"help": "the python tool's sandbox limits"}
    )

    def __post_init__(self) -> None:
        self._check_tools()
        if self.backend and self.backend not in BACKENDS:
            raise ValueError(f"search.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"search.retriever must be one of {', '.join(RETRIEVERS)}, got {self.retriever!r}")
        for name in ("topk", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"search.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_actions < 0:
            raise ValueError(f"search.max_actions must be >= 0, got {self.max_actions}")
        if self.snippet_tokens < 0:
            raise ValueError(f"search.snippet_tokens must be >= 0 (0 = whole passages), got {self.snippet_tokens}")

    def _check_tools(self) -> None:
        known = known_tools()
        unknown = [t for t in self.tools if t not in known]
        if unknown or not self.tools or len(set(self.tools)) < len(self.tools):
            raise ValueError(
                f"search.tools must list registered tools, each once ({', '.join(known)}), got {self.tools!r}"
            )
        for name, cap in self.max_calls.items():
            if name not in self.tools:
                raise ValueError(
                    f"search.max_calls: {name!r} is not an enabled tool (search.tools: {', '.join(self.tools)})"
                )
            if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
                raise ValueError(f"search.max_calls.{name} must be an integer >= 0, got {cap!r}")

    @property
    def budget(self) -> Budget:
        return Budget(
            max_actions=self.max_actions, max_tokens=self.max_tokens, topk=self.topk, per_tool=dict(self.max_calls)
        )

    def loop_tools(self, fmt: FormatPreset, searcher=None, tokenizer=None) -> Toolbox | None:
        """What the agent loop gets as ``tools``: None when search is the only tool (the loop's own search path,
        byte for byte today's trajectories), else the toolbox of every enabled tool."""
        return None if self.tools == ["search"] else self.toolbox(fmt, searcher=searcher, tokenizer=tokenizer)

    def toolbox(self, fmt: FormatPreset, searcher=None, tokenizer=None, settings=None) -> Toolbox:
        """The enabled tools for the agent loop (``drive(..., tools=box)``), in the format preset ``fmt``:
        ``searcher`` (built from this section when search or open needs it and none is given), open's document
        store from the index, ``tokenizer`` for open's pages, ``settings`` ``{tool: settings}`` (default: this
        section's ``open`` and ``python``)."""
        settings = {"open": self.open, "python": self.python} if settings is None else settings
        ctx = ToolContext(fmt=fmt, topk=self.topk, tokenizer=tokenizer, settings=settings)
        if {"search", "open"} & set(self.tools):
            ctx.searcher = searcher if searcher is not None else self.searcher()
        if "open" in self.tools:
            ctx.store = getattr(ctx.searcher, "store", None) or DocumentStore(self.index)
        return Toolbox([make_tool(name, ctx) for name in self.tools], self.budget.tool_budget)

    @property
    def name(self) -> str:
        """What a trajectory's ``retriever`` column records."""
        return f"{'http' if self.retriever_url else self.retriever}:k={self.topk}"

    def searcher(self, warm: bool = True):
        """The searcher this environment names (the default index is built first if missing)."""
        from coa.search import build_index, make_searcher  # heavy: bm25s and numba, only when a searcher is built
        from coa.search.corpus import DEFAULT_CORPUS  # heavy: as above

        if not self.retriever_url and not (Path(self.index) / "index.json").exists():
            if self.index != DEFAULT_INDEX:
                raise FileNotFoundError(f"search.index={self.index}: not a coa.search index (no index.json)")
            print(f"building the default index {self.index} from {DEFAULT_CORPUS}", file=sys.stderr)
            build_index(DEFAULT_CORPUS, self.index, show_progress=False)
        searcher = make_searcher(
            index=self.index,
            retriever_url=self.retriever_url or None,
            kind=self.retriever,
            backend=self.backend or None,
        )
        if warm and not self.retriever_url:
            searcher.search(["warm up"], 1)  # load the memory-mapped index now, not inside the first trajectory
        if self.snippet_tokens:
            searcher = SnippetSearcher(searcher, self.snippet_tokens, base_tokenizer())
        return searcher
