"""BM25 in memory-mapped arrays with ``bm25s`` (English Snowball stemmer, its English stopwords, numba scorer).

Fast on up to a few million passages; its build holds every passage's tokens as Python lists, which is
where it stops fitting (see docs/retrieval_scale.md).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import bm25s
import numpy as np

from coa.search.backends import matching, unreadable

VERSION = 1
KIND = "lexical"
STOPWORDS = "en"
STEMMER = "english"
# what ``BM25.save`` writes and ``BM25.load(mmap=True)`` reads: named when one is missing, truncated or corrupt
FILES = ("params.index.json", "vocab.index.json", "data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy")


def stemmer():
    import Stemmer

    return Stemmer.Stemmer(STEMMER)


def build(store, folder: Path, show_progress: bool = True) -> dict:
    contents = [text for batch in store.batches() for text in batch.column("contents").to_pylist()]
    tokens = bm25s.tokenize(contents, stopwords=STOPWORDS, stemmer=stemmer(), show_progress=show_progress)
    del contents
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=show_progress)
    retriever.save(str(folder))
    return {"stopwords": STOPWORDS, "stemmer": STEMMER, "k1": retriever.k1, "b": retriever.b}


def numba_retrieval():
    """bm25s's compiled retrieval that ``_Search`` calls (one query thread: ``n_threads=0``)."""
    from bm25s.numba import retrieve_utils

    return retrieve_utils._retrieve_internal_jitted_serial


@functools.cache  # once a process: a searcher opened again finds the cache already set
def cache_numba_retrieval() -> None:
    """Keep the compiled retrieval on disk (numba's cache: ``__pycache__`` beside bm25s, else ~/.cache/numba, or
    NUMBA_CACHE_DIR). bm25s compiles it without ``cache=True``, so every process that searched compiled it again
    on its first query, seconds that each evaluation, RL stage and synthesis run paid; its callees are linked
    into the cached code."""
    numba_retrieval().enable_caching()


class _Search:
    def __init__(self, folder: Path):
        try:
            self.bm25 = bm25s.BM25.load(str(folder), mmap=True)
        except Exception as e:  # numpy's and json's messages name no file ("pickled (object) data", "mmap length")
            raise unreadable(folder, FILES, e, "bm25s") from e
        self.stem = stemmer()
        self.n_docs = int(self.bm25.scores["num_docs"])
        self.fallback = next(iter(self.bm25.vocab_dict))  # stands in for a query with no known term
        try:  # numba's scorer is ~50x faster than the numpy one on batches
            self.bm25.backend = "numba"
            self.bm25.activate_numba_scorer()
            cache_numba_retrieval()
        except ImportError:
            self.bm25.backend = "numpy"

    def __call__(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        tokens = bm25s.tokenize(
            list(queries), stopwords=STOPWORDS, stemmer=self.stem, return_ids=False, show_progress=False
        )
        vocab = self.bm25.vocab_dict
        known = [[t for t in q if t in vocab] for q in tokens]
        rows, scores = self.bm25.retrieve(
            [q or [self.fallback] for q in known], k=min(k, self.n_docs), show_progress=False, n_threads=0
        )
        # the fallback's hits have no meaning: a query without known terms gets nothing
        return [matching(r, s) if q else (r[:0], s[:0]) for r, s, q in zip(np.asarray(rows), np.asarray(scores), known)]


def open(folder: Path, settings: dict) -> _Search:  # noqa: A001 - the backend contract's name
    return _Search(folder)
