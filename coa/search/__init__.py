"""The search environment: corpora, indexes (BM25/dense/fusion), the retrieval server and its client."""
from coa.search.client import RetrieverClient
from coa.search.corpus import DEFAULT_CORPUS, load_corpus
from coa.search.index import BM25Searcher, DenseSearcher, FusionSearcher, Index, build_index, load_searcher
from coa.search.types import Doc, Searcher

__all__ = ["Doc", "Searcher", "Index", "BM25Searcher", "DenseSearcher", "FusionSearcher", "RetrieverClient",
           "build_index", "load_searcher", "load_corpus", "DEFAULT_CORPUS", "make_searcher"]


def make_searcher(index: str | None = None, retriever_url: str | None = None, kind: str = "bm25"):
    """One searcher from config: the retrieval server if a URL is given, else the index in-process."""
    if retriever_url:
        return RetrieverClient(retriever_url)
    if not index:
        raise ValueError("give index=DIR (a coa.search index) or retriever_url=URL")
    return load_searcher(index, kind)
