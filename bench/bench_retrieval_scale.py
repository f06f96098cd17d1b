"""Retrieval at growing corpus sizes on a synthetic wiki-18-shaped corpus, each (size, backend) in its own process.

    python bench/bench_retrieval_scale.py --sizes 100000,300000 --backends bm25s,tantivy
    python bench/bench_retrieval_scale.py --faiss 1000000        # IVF-PQ recall@10 vs exact, index bytes
    python bench/bench_retrieval_scale.py --faiss-minilm         # the same on real MiniLM embeddings (19K)

Corpus: wiki-18 is ~21M passages of 100 words with a title; the generator writes passages of 100 words
drawn from a Zipf(1.1) vocabulary of 500K synthetic words (wiki-18's running text is Zipfian with a
vocabulary of several million types), titles of 1–3 words, ids "1".."N" as in wiki-18.
Printed per (size, backend): build seconds, peak RSS of the build+query process, index size on disk,
queries/s at batch 1 and 64 (top-3, in-process), p50/p99 latency of single queries over HTTP (keep-alive).
FAISS: synthetic 384-d vectors with a low intrinsic dimension as sentence embeddings have (a mixture of
4,096 Gaussian clusters in a 64-d latent space with a decaying spectrum, randomly rotated into 384-d, plus
small isotropic noise, L2-normalised; NOT real MiniLM embeddings), recall@10 of IVF-PQ against exact
inner-product search for 500 held-out queries drawn from the same distribution.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS, PASSAGE_WORDS = 500_000, 100


def vocabulary(rng: np.random.Generator) -> np.ndarray:
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    lengths = rng.integers(3, 11, WORDS)
    return np.array(["".join(rng.choice(letters, n)) for n in lengths])


def write_corpus(path: Path, n: int, seed: int = 0) -> None:
    """n wiki-18-shaped passages as FlashRAG jsonl (``id``, ``contents`` = ``"Title"\\ntext``); gzip (level 1)
    when ``path`` ends in .gz: wiki-18's 21M passages are ~17 GB of plain jsonl."""
    rng = np.random.default_rng(seed)
    words = vocabulary(rng)
    # Zipf(1.1) over the finite vocabulary (inverse CDF): numpy's unbounded zipf puts a quarter of its draws
    # past 500K, which clipping to the last word made the corpus's most frequent term
    cdf = np.cumsum(np.arange(1, WORDS + 1, dtype=np.float64) ** -1.1)
    cdf /= cdf[-1]
    with gzip.open(path, "wt", compresslevel=1) if path.suffix == ".gz" else open(path, "w") as f:
        for start in range(0, n, 10_000):
            rows = min(10_000, n - start)
            ids = np.minimum(np.searchsorted(cdf, rng.random((rows, PASSAGE_WORDS + 3))), WORDS - 1)
            for i, row in enumerate(words[ids]):
                title, text = " ".join(row[: 1 + i % 3]).title(), " ".join(row[3:])
                f.write(json.dumps({"id": str(start + i + 1), "contents": f'"{title}"\n{text}'}) + "\n")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class PeakMemory:
    """Peak anonymous resident memory (the heap: what must fit in RAM), sampled every 0.2 s from
    /proc/self/status. ``ru_maxrss`` also counts the memory-mapped corpus and index pages a run touched,
    which the kernel drops under pressure; at 21M passages those are tens of GB."""

    def __init__(self):
        self.peak_anon_kb, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            with open("/proc/self/status") as f:
                anon = next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
            self.peak_anon_kb = max(self.peak_anon_kb, anon)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak_anon_kb / 2**20, 2)


def measure_one(corpus: Path, out: Path, backend: str, queries: list[str]) -> dict:
    """Build, then query in-process and over HTTP; runs in its own process so peak RSS is this run's."""
    import httpx

    from coa.procs import Server, free_port, retrieval_server_cmd
    from coa.search import build_index, load_searcher

    memory = PeakMemory()
    started = time.perf_counter()
    build_index(corpus, out, backend=backend, show_progress=False, force=True)
    row = {"build_s": round(time.perf_counter() - started, 1)}
    searcher = load_searcher(out)
    searcher.search(queries[:4], 3)  # load / JIT
    for batch in (1, 64):
        chunks = [queries[i : i + batch] for i in range(0, len(queries), batch)]
        started = time.perf_counter()
        for chunk in chunks:
            searcher.search(chunk, 3)
        row[f"qps_b{batch}"] = round(len(queries) / (time.perf_counter() - started), 1)
    row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    row["peak_anon_gb"] = memory.stop()
    row["disk_gb"] = round(folder_bytes(out) / 2**30, 3)
    port = free_port()
    server = Server(retrieval_server_cmd(out, port), f"http://127.0.0.1:{port}/health").start(timeout=300)
    try:
        latencies = []
        with httpx.Client(timeout=60) as client:  # one keep-alive connection, as an agent loop would hold
            for q in queries[:200]:
                t = time.perf_counter()
                client.post(f"http://127.0.0.1:{port}/retrieve", json={"queries": [q], "topk": 3}).raise_for_status()
                latencies.append(time.perf_counter() - t)
    finally:
        server.stop()
    row["http_p50_ms"], row["http_p99_ms"] = (round(1000 * float(np.percentile(latencies, p)), 1) for p in (50, 99))
    return row


def sample_queries(corpus: Path, n: int = 256, seed: int = 1, content_rank: int = 1000) -> list[str]:
    """Queries of 4–8 words taken from passages (so each has at least one matching passage), content words
    only: real questions reach a BM25 engine after stopword removal and are made of names and content words,
    so words among the ``content_rank`` most frequent of the Zipf vocabulary (71% of the running text) are
    left out. Drawing them uniformly instead makes every query score a large share of the corpus and
    throughput fall as 1/N (the first measurement, docs/retrieval_scale.md)."""
    from coa.search.corpus import open_text

    rank = {}
    for i, word in enumerate(vocabulary(np.random.default_rng(0))):  # write_corpus's vocabulary (seed 0)
        rank.setdefault(word, i)
    rng = np.random.default_rng(seed)
    lines = []
    with open_text(corpus) as f:
        for i, line in enumerate(f):
            if i >= 20_000:
                break
            words = [w for w in json.loads(line)["contents"].split("\n", 1)[1].split() if rank[w] >= content_rank]
            if len(words) >= 4:
                lines.append(words)
    picks = rng.choice(len(lines), n, replace=False)
    return [" ".join(rng.choice(lines[i], min(len(lines[i]), rng.integers(4, 9)), replace=False)) for i in picks]


def synthetic_vectors(
    n: int, n_queries: int = 500, dim: int = 384, latent: int = 64, clusters: int = 4096, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(passages, queries): 384-d vectors with a low intrinsic dimension, L2-normalised (see the docstring)."""
    rng = np.random.default_rng(seed)
    spectrum = (1.0 / np.sqrt(np.arange(1, latent + 1))).astype(np.float32)
    centers = rng.standard_normal((clusters, latent)).astype(np.float32) * spectrum
    rotation = np.linalg.qr(rng.standard_normal((dim, latent)))[0].T.astype(np.float32)  # latent → dim, orthonormal
    vectors = np.empty((n + n_queries, dim), np.float32)
    for start in range(0, len(vectors), 100_000):
        rows = min(100_000, len(vectors) - start)
        z = centers[rng.integers(0, clusters, rows)] + 0.5 * spectrum * rng.standard_normal(
            (rows, latent), dtype=np.float32
        )
        part = z @ rotation + 0.02 * rng.standard_normal((rows, dim), dtype=np.float32)
        vectors[start : start + rows] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return vectors[:n], vectors[n:]


def minilm_vectors() -> tuple[np.ndarray, np.ndarray]:
    """(passages, queries): real all-MiniLM-L6-v2 embeddings of the embedded HotpotQA corpus (19,099
    paragraphs) and its 1,979 questions, the distribution the synthetic vectors stand in for at scale."""
    from coa.questions import DEFAULT_QUESTIONS, load_questions
    from coa.search import DEFAULT_CORPUS, dense
    from coa.search.corpus import load_corpus

    encoder = dense.model()
    passages = load_corpus(DEFAULT_CORPUS).column("contents").to_pylist()
    questions = [q["question"] for q in load_questions(DEFAULT_QUESTIONS)]
    return dense.encode(passages, encoder), dense.encode(questions, encoder)


def ivfpq_recall(base: np.ndarray, queries: np.ndarray, seed: int = 0) -> dict:
    """recall@10 of the faiss backend's IVF-PQ (its own shape for the training size) against exact
    inner-product search, without and with the backend's float16 re-ranking."""
    import faiss

    from coa.search.backends.faiss import reranked, shape_for

    faiss.omp_set_num_threads(2)
    rng = np.random.default_rng(seed)
    n, dim = base.shape
    exact = faiss.IndexFlatIP(dim)
    exact.add(base)
    _, truth = exact.search(queries, 10)
    train = min(n, 100_000)
    nlist, m, nbits = shape_for(train, 48)
    index = faiss.index_factory(dim, f"IVF{nlist},PQ{m}x{nbits}", faiss.METRIC_INNER_PRODUCT)
    index.do_polysemous_training = False
    started = time.perf_counter()
    index.train(base[rng.choice(n, train, replace=False)])
    index.add(base)
    row = {
        "n": n,
        "queries": len(queries),
        "factory": f"IVF{nlist},PQ{m}x{nbits}",
        "build_s": round(time.perf_counter() - started, 1),
        "index_bytes": len(faiss.serialize_index(index)),
    }
    for nprobe in (8, 32, 128):
        index.nprobe = nprobe
        _, found = index.search(queries, 10)
        row[f"recall10_nprobe{nprobe}"] = round(
            float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])), 3
        )
    # the backend's re-ranking: the PQ top-R candidates re-scored with the float16 vectors (on disk there)
    stored = base.astype(np.float16)
    index.nprobe = 32
    for depth in (100, 400):
        started = time.perf_counter()
        _, candidates = index.search(queries, depth)
        found = [rows for rows, _ in reranked(queries, candidates, stored, 10)]
        row[f"recall10_nprobe32_rerank{depth}"] = round(
            float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])), 3
        )
        row[f"ms_per_query_rerank{depth}"] = round(1000 * (time.perf_counter() - started) / len(queries), 2)
    row["bytes_per_vector"] = round(row["index_bytes"] / n, 1)
    row["projected_21M_gb"] = round(row["bytes_per_vector"] * 21_000_000 / 2**30, 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,300000")
    ap.add_argument("--backends", default="bm25s,tantivy")
    ap.add_argument("--work", default="bench/out/scale")
    ap.add_argument("--keep-indexes", action="store_true", help="keep each index after measuring it (disk)")
    ap.add_argument("--gzip", action="store_true", help="write the synthetic corpora as .jsonl.gz (disk)")
    ap.add_argument("--faiss", type=int, default=0, help="measure IVF-PQ recall on this many synthetic vectors instead")
    ap.add_argument(
        "--faiss-minilm",
        action="store_true",
        help="IVF-PQ recall on real MiniLM embeddings of the embedded corpus, and on as many synthetic vectors",
    )
    ap.add_argument("--one", nargs=3, metavar=("CORPUS", "OUT", "BACKEND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.faiss:
        print(json.dumps(ivfpq_recall(*synthetic_vectors(args.faiss))))
        return
    if args.faiss_minilm:
        passages, questions = minilm_vectors()
        print(json.dumps({"vectors": "minilm", **ivfpq_recall(passages, questions)}))
        print(json.dumps({"vectors": "synthetic", **ivfpq_recall(*synthetic_vectors(len(passages), len(questions)))}))
        return
    if args.one:
        corpus = Path(args.one[0])
        print(json.dumps(measure_one(corpus, Path(args.one[1]), args.one[2], sample_queries(corpus))))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(
        "| passages | backend | build s | peak RSS GB | peak anon GB | disk GB | q/s b1 | q/s b64 | HTTP p50 ms | "
        "HTTP p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in map(int, args.sizes.split(",")):
        corpus = work / f"synthetic_{size}.jsonl{'.gz' if args.gzip else ''}"
        if not corpus.exists():
            write_corpus(corpus, size)
        for backend in args.backends.split(","):
            index = work / f"idx_{backend}_{size}"
            done = subprocess.run(
                [sys.executable, __file__, "--one", str(corpus), str(index), backend], capture_output=True, text=True
            )
            if not args.keep_indexes:
                shutil.rmtree(index, ignore_errors=True)
            if done.returncode:
                print(f"| {size:,} | {backend} | failed: {done.stderr.strip().splitlines()[-1][:120]} ||||||||")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            with open(work / "results.jsonl", "a") as f:  # every measured field, the table prints the main ones
                f.write(json.dumps({"passages": size, "backend": backend, **r}) + "\n")
            print(
                f"| {size:,} | {backend} | {r['build_s']} | {r['peak_rss_gb']} | {r['peak_anon_gb']} | {r['disk_gb']} | {r['qps_b1']} | "
                f"{r['qps_b64']} | {r['http_p50_ms']} | {r['http_p99_ms']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
