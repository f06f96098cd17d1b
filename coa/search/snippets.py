"""Snippets instead of whole passages (``search.snippet_tokens``): each retrieved passage keeps its title line
and the first N tokens of its text, so an observation costs at most ``k × (title + N)`` tokens and the ``open``
tool has something to add on corpora of whole paragraphs. Off (0) by default.

    searcher = SnippetSearcher(make_searcher(index=...), 64, tokenizer)   # tokenizer: the student's
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from coa.search.types import Doc

ELLIPSIS = " …"


def snippet(doc: Doc, n_tokens: int, tokenizer) -> Doc:
    """``doc`` with its text cut to its first ``n_tokens`` tokens (the title line is kept whole); a text
    that fits is returned unchanged, a cut one ends with " …"."""
    title, sep, text = doc.contents.partition("\n")
    if not sep:  # no title line: the whole contents is the text
        title, text = "", doc.contents
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= n_tokens:
        return doc
    cut = tokenizer.decode(ids[:n_tokens]).rstrip()
    return replace(doc, contents=f"{title}{sep}{cut}{ELLIPSIS}")


class SnippetSearcher:
    """Any searcher, its passages cut to snippets; everything else (``store``, ``name``) is the inner one's."""

    def __init__(self, inner, n_tokens: int, tokenizer):
        if n_tokens < 1:
            raise ValueError(f"snippet_tokens must be >= 1 to cut (0 = whole passages), got {n_tokens}")
        self.inner, self.n_tokens, self.tokenizer = inner, n_tokens, tokenizer

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def search(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        return [[snippet(d, self.n_tokens, self.tokenizer) for d in docs] for docs in self.inner.search(queries, k)]
