"""``search(query)``: the top-k documents of the index (``coa.search``), the toolkit's first tool.

The observation's text is what today's search observation holds inside the preset's result tags, byte for
byte: ``ctx.fmt.wrap_observation(text) == ctx.fmt.observation(docs)`` (the documents in the preset's
``doc_template``, or its failure text when nothing matched). Provenance: the documents' ids, best first. A blank
query is an observation with error ``empty_query`` (it is not searched). Calls are batched: one searcher call for every query of a batch.
"""

from __future__ import annotations

from typing import Sequence

from coa.formats import FormatPreset
from coa.search.types import Doc, Searcher
from coa.tools import Observation, Tool, ToolContext, register


def observation_body(fmt: FormatPreset, docs: Sequence[Doc]) -> str:
    """The text ``fmt.observation(docs)`` wraps in the preset's result tags."""
    full = fmt.observation(docs)
    head = fmt.observation_opening
    tail = f"{fmt.inner_pad}{fmt.result_close}{fmt.obs_after}"
    return full[len(head) : len(full) - len(tail)]


# a blank query matches nothing: say so, rather than the preset's "no documents" text with no error
EMPTY_QUERY = "The query is empty: search for a few words."


@register("search")
class SearchTool(Tool):
    description = (
        "Search the document collection. Returns the best-matching passages, each with its title; "
        "open a title to read the whole document."
    )
    parameters = {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "what to search for, in a few words"}},
        "required": ["query"],
        "additionalProperties": False,
    }
    needs = ("searcher",)
    batched = True

    def __init__(self, searcher: Searcher, topk: int = 3, fmt: FormatPreset | None = None):
        self.searcher, self.topk = searcher, topk
        self.fmt = fmt or ToolContext().fmt

    @classmethod
    def build(cls, ctx: ToolContext) -> "SearchTool":
        return cls(ctx.need("searcher", "search"), ctx.topk, ctx.fmt)

    def execute(self, args: dict) -> Observation:
        return self.execute_batch([args])[0]

    def execute_batch(self, calls: Sequence[dict]) -> list[Observation]:
        asked = [args["query"] for args in calls if args["query"].strip()]
        found = iter(self.searcher.search(asked, self.topk) if asked else [])
        out = []
        for args in calls:
            if not args["query"].strip():
                out.append(Observation(EMPTY_QUERY, {"doc_ids": []}, error="empty_query"))
                continue
            docs = next(found)
            out.append(Observation(observation_body(self.fmt, docs), {"doc_ids": [d.id for d in docs]}))
        return out
