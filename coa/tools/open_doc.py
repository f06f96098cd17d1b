"""``open(doc, page)``: read a whole document of the index's document store, one page of N tokens at a time.

A document is an article: the passages that share a title, in the store's order. On a passage corpus
(wiki-18: articles cut into 100-word passages) opening any passage, or its title, gives the whole article;
on the embedded HotpotQA corpus a title has one paragraph. ``doc`` is a passage id, or a title (exactly,
else ignoring case, surrounding quotes and spaces). Pages are windows of ``open.window_tokens`` tokens:
whitespace-separated words (an approximation: English runs ~1.3 BPE tokens a word), or the student's
tokens when the context has a tokenizer (a fast tokenizer: its offsets cut the text).

    Maria Golovin (page 1 of 1)
    Maria Golovin is a 1958 opera by Gian Carlo Menotti ...

An unknown ``doc`` is an observation (error ``not_found``) naming the nearest titles (rapidfuzz, over
every title: built once, on the first miss); a page past the end is one too (``bad_page``). Provenance:
the ids of the passages the page shows, the title, the page and the number of pages.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz, process, utils

from coa.search.store import DocumentStore, title_of
from coa.tools import Observation, Tool, ToolContext, register

ARTICLES_KEPT = 32  # articles whose pages are cut already (a policy reads on, page after page)
MAX_PAGE = 100_000  # far past any article (25M tokens at 256 a page); bounds what a refusal echoes
WORD = re.compile(r"\S+")
HEAD = re.compile(r"(?P<title>.+) \(page (?P<page>\d+) of (?P<total>\d+)\)")  # a page's first line
MORE = re.compile(r"\n\[continued on page \d+ of \d+\]$")  # its last line, when pages follow


def read_page(body: str) -> tuple[str, str]:
    """(title, text) of a page ``execute`` returned (the result's body, without the response tags); ("", "")
    for anything else (an error message)."""
    head, _, text = body.strip().partition("\n")
    found = HEAD.fullmatch(head)
    return (found["title"], MORE.sub("", text)) if found else ("", "")


@dataclass
class OpenSettings:
    """The ``open`` tool's pages."""

    window_tokens: int = field(default=256, metadata={"help": "tokens a page (words, or the student's tokens)"})
    nearest: int = field(default=3, metadata={"help": "titles suggested when a document is not found"})

    def __post_init__(self) -> None:
        for name in ("window_tokens", "nearest"):
            if getattr(self, name) < 1:
                raise ValueError(f"open.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class Article:
    title: str
    text: str
    pages: list[tuple[int, int]]  # character span of each page
    passages: list[tuple[int, int, str]]  # character span and id of each passage


@register("open")
class OpenTool(Tool):
    description = (
        "Open a document by its title (as search shows it) or a passage id, and read it page by page. "
        "Use it when a search result is cut short or you need more of the same document."
    )
    parameters = {
        "type": "object",
        "properties": {
            "doc": {"type": "string", "description": "the document's title, or a passage id"},
            "page": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "description": "page number (default 1)"},
        },
        "required": ["doc"],
        "additionalProperties": False,
    }
    needs = ("store",)

    def __init__(self, store: DocumentStore, settings: OpenSettings | None = None, tokenizer: Any = None):
        self.store, self.settings, self.tokenizer = store, settings or OpenSettings(), tokenizer
        self._articles: OrderedDict[str, Article] = OrderedDict()
        self._titles: list[str] | None = None
        self._folded: dict[str, str] | None = None

    @classmethod
    def build(cls, ctx: ToolContext) -> "OpenTool":
        return cls(ctx.need("store", "open"), ctx.settings_of("open", OpenSettings), ctx.tokenizer)

    # ---- which document -------------------------------------------------------------------------
    def titles(self) -> list[str]:
        if self._titles is None:
            self._titles = sorted({title_of(c) for c in self.store.contents.to_pylist()})
        return self._titles

    def resolve(self, doc: str) -> str | None:
        """The title ``doc`` names (a passage id, a title, or a title in other case or quotes), or None."""
        contents = self.store.get(doc)
        if contents is not None:
            return title_of(contents)
        if self.store.rows_with_title(doc):
            return doc
        if self._folded is None:
            self._folded = {t.casefold(): t for t in reversed(self.titles())}
        return self._folded.get(doc.strip().strip("\"'“”").strip().casefold())

    def nearest(self, doc: str) -> list[str]:
        found = process.extract(
            doc, self.titles(), scorer=fuzz.WRatio, processor=utils.default_process, limit=self.settings.nearest
        )
        return [title for title, _, _ in found]

    # ---- its pages ------------------------------------------------------------------------------
    def token_spans(self, text: str) -> list[tuple[int, int]]:
        if self.tokenizer is None:
            return [m.span() for m in WORD.finditer(text)]
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [(a, b) for a, b in encoded["offset_mapping"] if b > a]

    def article(self, title: str) -> Article:
        if title in self._articles:
            self._articles.move_to_end(title)
            return self._articles[title]
        rows = self.store.rows_with_title(title)
        passages, parts, at = [], [], 0
        for d in self.store.docs(rows, [0.0] * len(rows)):
            text = d.text.strip()
            passages.append((at, at + len(text), d.id))
            parts.append(text)
            at += len(text) + 2
        text = "\n\n".join(parts)
        spans, n = self.token_spans(text), self.settings.window_tokens
        pages = [(spans[i][0], spans[min(i + n, len(spans)) - 1][1]) for i in range(0, len(spans), n)] or [(0, 0)]
        self._articles[title] = article = Article(title, text, pages, passages)
        if len(self._articles) > ARTICLES_KEPT:
            self._articles.popitem(last=False)
        return article

    def execute(self, args: dict) -> Observation:
        doc, page = args["doc"], int(args.get("page", 1))
        title = self.resolve(doc)
        if title is None:
            near = self.nearest(doc)
            return Observation(
                f"No document has the id or title {doc!r}." + (f" Nearest titles: {'; '.join(near)}." if near else ""),
                {"nearest": near},
                error="not_found",
            )
        article = self.article(title)
        total = len(article.pages)
        if page > total:
            return Observation(
                f"{title!r} has {total} page{'s' if total > 1 else ''}; there is no page {page}.",
                {"title": title, "pages": total},
                error="bad_page",
            )
        start, end = article.pages[page - 1]
        ids = [pid for a, b, pid in article.passages if a < end and b > start] or [article.passages[0][2]]
        text = f"{title} (page {page} of {total})\n{article.text[start:end]}"
        if page < total:
            text += f"\n[continued on page {page + 1} of {total}]"
        return Observation(text, {"doc_ids": ids, "title": title, "page": page, "pages": total})
