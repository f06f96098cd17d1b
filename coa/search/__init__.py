"""The search environment: corpora, document store, index backends, the retrieval server and its client."""

from coa.search.backends import BACKENDS
from coa.search.client import RetrieverClient
from coa.search.corpus import DEFAULT_CORPUS, load_corpus, read_corpus
from coa.search.index import RETRIEVERS, Index, build_index, load_searcher
from coa.search.store import DocumentStore
from coa.search.types import Doc, Searcher

__all__ = [
    "Doc",
    "Searcher",
    "Index",
    "DocumentStore",
    "RetrieverClient",
    "BACKENDS",
    "RETRIEVERS",
    "build_index",
    "load_searcher",
    "load_corpus",
    "read_corpus",
    "DEFAULT_CORPUS",
    "make_searcher",
]


def make_searcher(
    index: str | None = None, retriever_url: str | None = None, kind: str = "bm25", backend: str | None = None
):
    """One searcher from config: the retrieval server if a URL is given, else the index in-process
    (``backend``, if given, must be the one the index was built with)."""
    if retriever_url:
        return RetrieverClient(retriever_url)
    if not index:
        raise ValueError("give index=DIR (a coa.search index) or retriever_url=URL")
    return load_searcher(index, kind, backend)
