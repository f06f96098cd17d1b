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

A backend's ``open`` that cannot read its files raises ``unreadable(...)``: one line naming the first file that
is missing, truncated or corrupt (``file_problem``) and the command that rebuilds the index.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
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
        raise BadInput(
            f"search backend {name!r} needs a package that is not installed ({e.name}): "
            f"pip install 'autocoa-toolkit[search]'"
        ) from e


def matching(rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop rows that do not match (score ≤ 0), e.g. the filler a top-k scorer returns past the matches."""
    keep = scores > 0
    return rows[keep], scores[keep]


# ---- damaged index files: name the file, say what is wrong, say how to rebuild --------------------------
def rebuild_hint(index_dir: Path, backend: str | None = None) -> str:
    return (
        f"rebuild the index: python -m coa.search build{f' --backend {backend}' if backend else ''} --out {index_dir}"
    )


def damaged(path: Path, problem: str, index_dir: Path, backend: str | None = None) -> BadInput:
    return BadInput(f"{path}: {problem}; {rebuild_hint(index_dir, backend)}")


def npy_problem(path: Path) -> str | None:
    """What is wrong with a ``.npy`` array file (empty, truncated, not a .npy file), or None. Reads the header only."""
    size = path.stat().st_size
    if size == 0:
        return "empty (truncated to 0 bytes)"
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
        except ValueError:
            return "corrupt (not a NumPy .npy file: its first bytes are not the .npy signature)"
        try:
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
        except ValueError as e:
            return f"truncated or corrupt ({size:,} bytes; its .npy header cannot be read: {e})"
        start = f.tell()
    if dtype.hasobject:
        return "corrupt (its header declares Python objects, never what an index stores)"
    expected = start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return f"truncated ({size:,} of {expected:,} bytes)" if size < expected else None


def json_problem(path: Path) -> str | None:
    data = path.read_bytes()
    if not data:
        return "empty (truncated to 0 bytes)"
    try:
        json.loads(data)
    except ValueError as e:
        return f"truncated or corrupt JSON ({e})"
    return None


def file_problem(path: Path) -> str | None:
    """What is wrong with one file of an index (missing, unreadable, empty, truncated, corrupt), or None."""
    try:
        if not path.is_file():
            return "missing"
        if path.suffix == ".npy":
            return npy_problem(path)
        if path.suffix == ".json":
            return json_problem(path)
        return "empty (truncated to 0 bytes)" if path.stat().st_size == 0 else None
    except OSError as e:
        return f"unreadable ({e.strerror or e})"


def read_json(path: Path, index_dir: Path) -> dict:
    """A JSON object file of an index (``index.json``); a damaged one is named with how to rebuild."""
    try:
        data = json.loads(path.read_bytes())
    except ValueError as e:  # json's message names no file
        raise damaged(path, json_problem(path) or f"corrupt ({e})", index_dir) from e
    if not isinstance(data, dict):
        raise damaged(path, f"corrupt (a JSON {type(data).__name__}, not an object)", index_dir)
    return data


def unreadable(folder: Path, files: Sequence[str], error: BaseException, backend: str) -> BadInput:
    """The error when ``backend`` could not open its ``folder``: the first of its ``files`` that is damaged,
    else the folder and the library's own message (first line)."""
    index_dir = folder.parent
    for name in files:
        problem = file_problem(folder / name)
        if problem:
            return damaged(folder / name, problem, index_dir, backend)
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return damaged(folder, f"{backend} cannot read this index ({first})", index_dir, backend)
