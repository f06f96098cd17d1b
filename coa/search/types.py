"""What a searcher returns and the one protocol every backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class Doc:
    """A retrieved passage. ``contents`` is FlashRAG's ``"Title"\\ntext`` form."""

    id: str
    contents: str
    score: float = 0.0

    @property
    def title(self) -> str:
        head = self.contents.split("\n", 1)[0]
        return head.strip('"')

    @property
    def text(self) -> str:
        parts = self.contents.split("\n", 1)
        return parts[1] if len(parts) > 1 else parts[0]


class Searcher(Protocol):
    """``search(queries, k)`` → for each query, up to k documents, best first.

    Implemented by BM25 (bm25s), dense (MiniLM), fused, and the HTTP client of the
    Search-R1 ``/retrieve`` API; the retrieval server wraps any of them.
    """

    name: str

    def search(self, queries: Sequence[str], k: int) -> list[list[Doc]]: ...
