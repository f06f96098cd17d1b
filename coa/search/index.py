"""Index folders: build one from a corpus stream with a backend, open one, get a ``Searcher`` over it.

An index folder holds
  ``index.json``    backend name and format version, its settings, corpus path, document count, skipped lines
  ``corpus.arrow``  the documents, memory-mapped (``DocumentStore``)
  ``<backend>/``    the backend's own files (for a remote engine, nothing: index.json holds URL and index name)
  ``dense.npy``     optional exact MiniLM embeddings (``--dense``): retrievers ``dense`` and ``fusion``

Retrievers: ``bm25`` = the index's lexical backend, ``dense`` = a dense backend (``faiss``) or ``dense.npy``,
``fusion`` = reciprocal-rank fusion of the two.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from coa.io import (
    OWNER_FILE,
    NotOurs,
    atomic_output,
    clear_replaced,
    locked_beside,
    mark_folder,
    replaceable,
    written_by,
)
from coa.search import dense
from coa.search.backends import BACKENDS, DEFAULT_BACKEND, RowSearch, load_backend, read_json
from coa.search.corpus import read_corpus
from coa.search.store import DocumentStore, write_store
from coa.search.types import Doc

RETRIEVERS = ("bm25", "dense", "fusion")
META = "index.json"
TOOL = "coa.search build"  # the owner its marker names: only folders it marked are replaced unasked


def build_index(
    corpus_path: str | Path,
    out_dir: str | Path,
    dense: bool = False,
    show_progress: bool = True,
    *,
    backend: str = DEFAULT_BACKEND,
    skip_bad: bool = False,
    force: bool = False,
    **options,
) -> Path:
    """Index a FlashRAG corpus into ``out_dir`` with ``backend`` (options go to the backend's ``build``).

    Written into a temporary folder beside ``out_dir`` and renamed onto it when complete, so a failed or
    killed build leaves the previous index usable. A non-empty ``out_dir`` that an earlier build did not
    mark as its own is refused unless ``force``. ``skip_bad`` skips (and counts in index.json) corpus lines
    that are not documents. One build into ``out_dir`` at a time: a second is refused (``OutputBusy``).
    """
    out_dir = Path(out_dir)
    with locked_beside(out_dir):  # a second build into out_dir is refused: its rename would drop this one's
        refuse_foreign(out_dir, force)
        clear_replaced(out_dir, lambda old: written_by(old, TOOL))  # old indexes a killed replace left behind
        with atomic_output(out_dir, folder=True) as tmp:
            _build_into(Path(corpus_path), tmp, dense, show_progress, backend, skip_bad, options)
            mark_folder(tmp, TOOL)
    return out_dir


def refuse_foreign(out_dir: Path, force: bool) -> None:
    """A build replaces ``out_dir`` whole: without ``force`` only an empty folder or one a build marked.
    An ``index.json`` alone proves nothing (a web app has one)."""
    if force or replaceable(out_dir, TOOL):
        return
    missing = OWNER_FILE if (out_dir / META).is_file() else META
    raise NotOurs(
        f"{out_dir} exists and is not a coa.search index (no {missing}): a build would replace it; "
        f"choose another --out, or pass --force to replace it"
    )


def _build_into(
    corpus_path: Path, out: Path, with_dense: bool, show_progress: bool, name: str, skip_bad: bool, options: dict
) -> None:
    module = load_backend(name)
    started, skipped = time.time(), Counter()
    n_docs = write_store(read_corpus(corpus_path, skip_bad, skipped, progress=show_progress), out)
    store = DocumentStore(out)
    (out / name).mkdir()
    settings = module.build(store, out / name, show_progress=show_progress, **options)
    if with_dense:
        dense.write_embeddings(store, out, show_progress)
    meta = {
        "backend": name,
        "format_version": module.VERSION,
        "settings": settings,
        "corpus": str(corpus_path),
        "n_docs": n_docs,
        "skipped_lines": dict(skipped),
        "dense_model": dense.MODEL if with_dense else None,
        "build_seconds": round(time.time() - started, 2),
    }
    (out / META).write_text(json.dumps(meta, indent=2))


class Index:
    """An index folder opened for search; ``backend`` (if given) must be the one it was built with."""

    def __init__(self, path: str | Path, backend_name: str | None = None):
        self.path = Path(path)
        meta_file = self.path / META
        if not meta_file.is_file():
            raise FileNotFoundError(
                f"{self.path}: not a coa.search index (no {META}); "
                f"build one with `python -m coa.search build --out {self.path}`"
            )
        self.meta = read_json(meta_file, self.path)
        self.backend = self._check(self.meta, backend_name)
        self.store = DocumentStore(self.path)

    def _check(self, meta: dict, wanted: str | None):
        built, version = meta.get("backend"), meta.get("format_version")
        rebuild = f"rebuild it: python -m coa.search build --backend {wanted or DEFAULT_BACKEND} --out {self.path}"
        if built is None or version is None:
            raise ValueError(
                f"{self.path}: {META} names no backend and format version (an index from before "
                f"backends were versioned); {rebuild}"
            )
        if wanted and wanted != built:
            raise ValueError(
                f"{self.path}: built by backend {built!r} (format {version}), "
                f"but backend {wanted!r} was asked for; {rebuild}"
            )
        if built not in BACKENDS:
            raise ValueError(
                f"{self.path}: built by backend {built!r}, which this toolkit does not know "
                f"(known: {', '.join(BACKENDS)})"
            )
        module = load_backend(built)
        if version != module.VERSION:
            raise ValueError(
                f"{self.path}: built by backend {built!r} format {version}; this toolkit reads "
                f"{built!r} format {module.VERSION}; {rebuild}"
            )
        return module

    def __len__(self) -> int:
        return len(self.store)

    def _backend_search(self, kind: str, retriever: str) -> RowSearch:
        if self.backend.KIND != kind:
            raise ValueError(
                f"{self.path}: retriever {retriever!r} needs a {kind} index; this one was built by "
                f"{self.meta['backend']!r} ({self.backend.KIND})"
            )
        return self.backend.open(self.path / self.meta["backend"], self.meta["settings"])

    def _dense_search(self) -> RowSearch:
        if self.backend.KIND == "dense":
            return self._backend_search("dense", "dense")
        return dense.ExactSearch(self.path)

    def searcher(self, kind: str = "bm25") -> "StoreSearcher":
        if kind not in RETRIEVERS:
            raise ValueError(f"unknown retriever {kind!r}; known: {', '.join(RETRIEVERS)}")
        if kind == "bm25":
            return StoreSearcher(kind, self.store, self._backend_search("lexical", kind))
        if kind == "dense":
            return StoreSearcher(kind, self.store, self._dense_search())
        return StoreSearcher(kind, self.store, Fusion(self._backend_search("lexical", kind), self._dense_search()))


class StoreSearcher:
    """A ``Searcher``: a backend's rows turned into ``Doc``s by the document store."""

    def __init__(self, name: str, store: DocumentStore, rows: RowSearch):
        self.name, self.store, self.rows = name, store, rows

    def search(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        if not queries:
            return []
        return [self.store.docs(rows, scores) for rows, scores in self.rows(list(queries), k)]


class Fusion:
    """Reciprocal-rank fusion of two ``RowSearch``es (score = Σ 1/(rrf_k + rank)); itself a ``RowSearch``."""

    def __init__(self, first: RowSearch, second: RowSearch, depth: int = 50, rrf_k: int = 60):
        self.first, self.second, self.depth, self.rrf_k = first, second, depth, rrf_k

    def __call__(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        depth = max(k, self.depth)
        out = []
        for (a, _), (b, _) in zip(self.first(queries, depth), self.second(queries, depth)):
            rows = np.concatenate([a, b])
            ranks = np.concatenate([np.arange(len(a)), np.arange(len(b))])
            unique, inverse = np.unique(rows, return_inverse=True)
            fused = np.bincount(inverse, weights=1.0 / (self.rrf_k + ranks + 1))
            best = np.argsort(-fused, kind="stable")[:k]
            out.append((unique[best], fused[best]))
        return out


def load_searcher(index_dir: str | Path, kind: str = "bm25", backend: str | None = None) -> StoreSearcher:
    """A ``Searcher`` over an index folder (``backend``, if given, must be the one it was built with)."""
    return Index(index_dir, backend).searcher(kind)
