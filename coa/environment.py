"""The one search environment of synthesis, RL and evaluation: ``params.yaml``'s top-level ``search``.

    search:
      index: runs/index        # coa.search index folder (built from the embedded corpus if missing)
      retriever: bm25          # bm25 | dense | fusion, over that index
      backend: ""              # bm25s | tantivy | elasticsearch | faiss: checked against the index (empty: any)
      retriever_url: ""        # a Search-R1 /retrieve server instead of the in-process index
      topk: 3                  # documents per search
      max_actions: 3           # searches per trajectory (one more gets the budget message)
      max_tokens: 320          # model-written tokens per trajectory

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
from coa.search import BACKENDS, RETRIEVERS

DEFAULT_INDEX = paths.INDEX


@dataclass
class SearchEnvConfig:
    index: str = field(default=DEFAULT_INDEX, metadata={"help": "coa.search index folder; the default one is built "
                                                                "from the embedded corpus if missing"})
    retriever: str = field(default="bm25", metadata={"help": "bm25 | dense | fusion (in-process index)"})
    backend: str = field(default="", metadata={"help": f"the index's backend ({' | '.join(BACKENDS)}), checked when "
                                                      "it is opened; empty = the one it was built with"})
    retriever_url: str = field(default="", metadata={"help": "a Search-R1 /retrieve server instead of the index"})
    topk: int = field(default=3, metadata={"help": "documents per search"})
    max_actions: int = field(default=3, metadata={"help": "searches per trajectory (one more gets the budget "
                                                          "message; the paper: 10)"})
    max_tokens: int = field(default=320, metadata={"help": "model-written tokens per trajectory (all calls together; "
                                                           "the paper: 8192)"})

    def __post_init__(self) -> None:
        if self.backend and self.backend not in BACKENDS:
            raise ValueError(f"search.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"search.retriever must be one of {', '.join(RETRIEVERS)}, got {self.retriever!r}")
        for name in ("topk", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"search.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_actions < 0:
            raise ValueError(f"search.max_actions must be >= 0, got {self.max_actions}")

    @property
    def budget(self) -> Budget:
        return Budget(max_actions=self.max_actions, max_tokens=self.max_tokens, topk=self.topk)

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
        searcher = make_searcher(index=self.index, retriever_url=self.retriever_url or None, kind=self.retriever,
                                 backend=self.backend or None)
        if warm and not self.retriever_url:
            searcher.search(["warm up"], 1)  # load the memory-mapped index now, not inside the first trajectory
        return searcher
