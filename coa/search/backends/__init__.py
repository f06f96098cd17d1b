"""Search backends: one module each in this folder, registered by name in ``BACKENDS``.

A backend module ``coa/search/backends/NAME.py`` defines

  ``VERSION: int``      its on-disk format; written to ``index.json``, and an index of another version is refused
  ``KIND``              ``"lexical"`` (serves retriever ``bm25``) or ``"dense"`` (serves retriever ``dense``)
  ``build(store, folder, show_progress, **options) -> dict``
                        index the ``DocumentStore``'s documents (``store.batches()``, in row order) into
                        ``folder`` (an empty directory inside the index being built); returns the settings
                        to record in ``index.json`` (a remote engine records its URL and index name here)
  ``open(folder, settings) -> RowSearch``
                        a search function over the built index

``RowSearch(queries, k)`` returns, for each query, ``(rows, scores)`` as numpy arrays, best first, at most
``k``, only documents that match (a lexical backend never returns score-0 rows). Rows are positions in the
``DocumentStore``, which turns them into ``Doc``s: backends never hold or return document text.

Adding a backend = writing its module and adding its name to ``BACKENDS``.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Callable, Sequence

import numpy as np

from coa.errors import BadInput

BACKENDS = ("bm25s", "tantivy", "elasticsearch", "faiss")
DEFAULT_BACKEND = "bm25s"
KINDS = ("lexical", "dense")

RowSearch = Callable[[Sequence[str], int], list[tuple[np.ndarray, np.ndarray]]]


def load_backend(name: str) -> ModuleType:
    """The backend module called ``name`` (imported on first use: each has its own optional dependency)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown search backend {name!r}; known: {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(f"coa.search.backends.{name}")
    except ImportError as e:  # the environment is input the user can fix: one line, exit 2
        raise BadInput(f"search backend {name!r} needs a package that is not installed ({e.name}): "
                       f"pip install 'autocoa-toolkit[search]'") from e


def matching(rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop rows that do not match (score ≤ 0), e.g. the filler a top-k scorer returns past the matches."""
    keep = scores > 0
    return rows[keep], scores[keep]
