"""Compressed dense search: FAISS IVF-PQ over all-MiniLM-L6-v2 embeddings (PyPI ``faiss-cpu``).

Each passage costs ``m`` bytes of PQ code plus an 8-byte id (56 bytes at the default m=48, against 1,536
for the float32 embedding), so wiki-18's 21M passages fit in ~1.2 GB of memory. The embeddings come from
``embeddings=FILE.npy`` (float32, one row per passage in corpus order, L2-normalised; memory-mapped) or are
encoded batch by batch while building. Training uses the first ``train_size`` vectors.

Re-ranking: 48-byte codes cannot order close neighbours (recall@10 0.47 at 1M synthetic vectors,
``docs/retrieval_scale.md``), so the build also writes the embeddings in float16 to ``vectors.f16.npy``
(768 bytes a passage, on disk: 16 GB at 21M, memory-mapped, never loaded whole) and a search takes the
``rerank`` best candidates by PQ distance and orders them by their exact inner product (0 = PQ order).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Sequence

import faiss
import numpy as np
from tqdm import tqdm

from coa.search import dense
from coa.search.backends import damaged, file_problem, unreadable

VERSION = 2  # 2: float16 vectors beside the codes, for re-ranking
KIND = "dense"
FILE = "ivfpq.faiss"
VECTORS = "vectors.f16.npy"


def shape_for(n: int, m: int) -> tuple[int, int, int]:
    """(nlist, m, nbits) for n training vectors: ~4·√n lists with ≥ 39 points each; 8-bit codes, fewer on
    corpora under 256 passages (k-means needs at least as many points as the 2^nbits centroids)."""
    nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))
    return nlist, m, int(np.clip(np.log2(max(n, 2)), 1, 8))


def vector_batches(store, embeddings: str, rows: int = 65_536) -> Iterator[np.ndarray]:
    """The passages' embeddings in row order: slices of a memory-mapped file, or encoded from the store."""
    if embeddings:
        matrix = np.load(embeddings, mmap_mode="r")
        if matrix.shape != (len(store), dense.DIM):
            raise ValueError(
                f"{embeddings}: shape {matrix.shape}, expected ({len(store)}, {dense.DIM}) "
                f"(one MiniLM embedding per passage)"
            )
        for start in range(0, len(matrix), rows):
            yield np.ascontiguousarray(matrix[start : start + rows], dtype=np.float32)
        return
    encoder = dense.model()
    for batch in store.batches():
        yield dense.encode(batch.column("contents").to_pylist(), encoder)


def build(
    store,
    folder: Path,
    show_progress: bool = True,
    embeddings: str = "",
    m: int = 48,
    train_size: int = 100_000,
    nprobe: int = 32,
    threads: int = 1,
    rerank: int = 100,
) -> dict:
    # OpenMP threads spin while they wait: 2 threads on a busy 2-core box trained 5x slower than 1
    faiss.omp_set_num_threads(threads)
    nlist, m, nbits = shape_for(min(len(store), train_size), m)
    index = faiss.index_factory(dense.DIM, f"IVF{nlist},PQ{m}x{nbits}", faiss.METRIC_INNER_PRODUCT)
    index.do_polysemous_training = False  # on by default: 30x the training time, only helps Hamming search
    pending, trained, written = [], 0, 0
    exact = np.lib.format.open_memmap(folder / VECTORS, mode="w+", dtype=np.float16, shape=(len(store), dense.DIM))
    with tqdm(total=len(store), desc="faiss", unit=" vec", unit_scale=True, disable=not show_progress) as bar:
        for vectors in vector_batches(store, embeddings):
            exact[written : written + len(vectors)] = vectors
            written += len(vectors)
            if not index.is_trained:
                pending.append(vectors)
                trained += len(vectors)
                if trained < min(train_size, len(store)):
                    continue
                vectors = np.concatenate(pending)
                index.train(vectors[:train_size])
            index.add(vectors)
            bar.update(len(vectors))
    exact.flush()
    del exact
    faiss.write_index(index, str(folder / FILE))
    return {
        "factory": f"IVF{nlist},PQ{m}x{nbits}",
        "metric": "inner_product",
        "nprobe": nprobe,
        "rerank": rerank,
        "model": dense.MODEL,
        "train_size": min(train_size, len(store)),
    }


def reranked(queries: np.ndarray, rows: np.ndarray, exact: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each query's candidate ``rows`` (-1 = none) ordered by their exact inner product with it; the best ``k``."""
    out = []
    for query, candidates in zip(queries, rows):
        candidates = candidates[candidates >= 0].astype(np.int64)
        order = np.sort(candidates)  # ascending reads from the memory-mapped file
        scores = exact[order].astype(np.float32) @ query
        best = np.argsort(-scores, kind="stable")[:k]
        out.append((order[best], scores[best]))
    return out


def read_problem(path: Path, error: RuntimeError) -> str:
    """What ``faiss.read_index``'s error means for ``path``, in words (its message is a C++ assertion)."""
    problem = file_problem(path)
    if problem:
        return problem
    step = re.search(r"faiss::(\w+)\(", str(error))
    return (
        f"truncated or corrupt ({path.stat().st_size:,} bytes; faiss stopped reading it in "
        f"{step.group(1) if step else 'read_index'})"
    )


class _Search:
    def __init__(self, folder: Path, nprobe: int, rerank: int):
        try:
            self.index = faiss.read_index(str(folder / FILE), faiss.IO_FLAG_MMAP)  # codes stay on disk until touched
        except RuntimeError as e:  # "Error in void faiss::read_ivf_header(...) at index_read.cpp:...: read error"
            raise damaged(folder / FILE, read_problem(folder / FILE, e), folder.parent, "faiss") from e
        try:
            self.exact = np.load(folder / VECTORS, mmap_mode="r") if rerank else None
        except Exception as e:  # numpy's message names no file
            raise unreadable(folder, (VECTORS,), e, "faiss") from e
        self.index.nprobe = nprobe
        self.rerank = rerank
        faiss.omp_set_num_threads(1)  # single queries: more threads only add spin-waiting
        self.encoder = dense.model()

    def __call__(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        vectors = dense.encode(queries, self.encoder)
        scores, rows = self.index.search(vectors, max(k, self.rerank))
        if self.rerank:
            return reranked(vectors, rows, self.exact, k)
        return [(r[r >= 0].astype(np.int64), s[r >= 0]) for r, s in zip(rows, scores)]  # -1: fewer than k found


def open(folder: Path, settings: dict) -> _Search:  # noqa: A001 - the backend contract's name
    return _Search(folder, settings["nprobe"], settings.get("rerank", 0))
