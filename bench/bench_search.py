"""Retrieval throughput on the embedded HotpotQA corpus, all measured in one run.

    python bench/bench_search.py [--index runs/index] [--seconds 5]

Queries/s of (a) the retrieval server over loopback at batch 1 (one query per request, 16 requests
in flight on keep-alive connections) and batch 64 (64 queries per request), and through the toolkit's
``RetrieverClient`` (httpx) at batch 1, (b) in-process bm25s (our BM25Searcher) at the
same batch sizes, (c) rank_bm25 (BM25Okapi, the common pure-Python baseline) on the same tokens.
Prints ratios against in-process bm25s and against rank_bm25.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coa.procs import Server, free_port, retrieval_server_cmd  # noqa: E402
from coa.questions import DEFAULT_QUESTIONS, load_questions  # noqa: E402
from coa.search import DEFAULT_CORPUS, build_index, load_searcher  # noqa: E402


def timed(fn, seconds: float) -> float:
    """Run ``fn`` (returns #queries done) repeatedly for ~seconds; queries per second."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += fn()
    return done / (time.perf_counter() - start)


def bench_in_process(searcher, questions, batch: int, seconds: float) -> float:
    pos = [0]

    def step():
        qs = [questions[(pos[0] + i) % len(questions)] for i in range(batch)]
        pos[0] += batch
        searcher.search(qs, 3)
        return batch

    return timed(step, seconds)


def threaded_rate(worker, in_flight: int, seconds: float) -> float:
    """Queries/s of ``in_flight`` threads, each running ``worker(w, deadline)`` → the queries it sent."""
    start = time.perf_counter()
    deadline = start + seconds
    done = [0] * in_flight

    def run(w: int) -> None:
        done[w] = worker(w, deadline)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


def bench_server(url: str, questions, batch: int, seconds: float, in_flight: int = 16) -> float:
    """``in_flight`` threads, each with one keep-alive connection (``http.client``: the stdlib's client costs
    little CPU, so the 2 cores measure the server; httpx's AsyncClient held the first measurement at ~300
    requests/s even for ``/health``)."""
    host, port = url.removeprefix("http://").split(":")

    def worker(w: int, deadline: float) -> int:
        connection, i, done = http.client.HTTPConnection(host, int(port), timeout=60), w * batch, 0
        while time.perf_counter() < deadline:
            body = json.dumps({"queries": [questions[(i + j) % len(questions)] for j in range(batch)], "topk": 3})
            connection.request("POST", "/retrieve", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"/retrieve answered {response.status}")
            done, i = done + batch, i + in_flight * batch
        connection.close()
        return done

    return threaded_rate(worker, in_flight, seconds)


def bench_client(url: str, questions, seconds: float, in_flight: int = 16) -> float:
    """The toolkit's own ``RetrieverClient`` (httpx, retries) at batch 1 from ``in_flight`` threads: what an
    agent loop that searches through ``search.retriever_url`` pays per query."""
    from coa.search.client import RetrieverClient

    client = RetrieverClient(url)

    def worker(w: int, deadline: float) -> int:
        done = 0
        while time.perf_counter() < deadline:
            client.search([questions[(w + done * in_flight) % len(questions)]], 3)
            done += 1
        return done

    return threaded_rate(worker, in_flight, seconds)


def bench_rank_bm25(index_dir: Path, questions, seconds: float) -> float:
    import bm25s
    from rank_bm25 import BM25Okapi

    from coa.search.backends.bm25s import STOPWORDS, stemmer

    searcher = load_searcher(index_dir)
    contents = searcher.store.contents.to_pylist()
    stem = stemmer()
    corpus_tokens = bm25s.tokenize(contents, stopwords=STOPWORDS, stemmer=stem, return_ids=False, show_progress=False)
    okapi = BM25Okapi(corpus_tokens)
    q_tokens = bm25s.tokenize(questions, stopwords=STOPWORDS, stemmer=stem, return_ids=False, show_progress=False)
    pos = [0]

    def step():
        okapi.get_top_n(q_tokens[pos[0] % len(q_tokens)], contents, n=3)
        pos[0] += 1
        return 1

    return timed(step, seconds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="runs/index")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    index_dir = Path(args.index)
    if not (index_dir / "index.json").exists():
        build_index(DEFAULT_CORPUS, index_dir, show_progress=False)
    questions = [q["question"] for q in load_questions(DEFAULT_QUESTIONS)]
    searcher = load_searcher(index_dir)
    searcher.search(questions[:8], 3)  # JIT warm-up

    results = {}
    for batch in (1, 64):
        results[f"bm25s in-process, batch {batch}"] = bench_in_process(searcher, questions, batch, args.seconds)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Server(retrieval_server_cmd(index_dir, port), f"{url}/health").start(timeout=120)
    try:
        for batch in (1, 64):
            results[f"server, batch {batch}"] = bench_server(url, questions, batch, args.seconds)
        results["RetrieverClient, batch 1"] = bench_client(url, questions, args.seconds)
    finally:
        server.stop()
    results["rank_bm25, batch 1"] = bench_rank_bm25(index_dir, questions, args.seconds)

    base_okapi = results["rank_bm25, batch 1"]
    print(f"{'system':<28}{'queries/s':>12}{'vs bm25s same batch':>22}{'vs rank_bm25':>15}")
    for name, qps in results.items():
        batch = name.rsplit(" ", 1)[-1]
        same = results.get(f"bm25s in-process, batch {batch}")
        print(f"{name:<28}{qps:>12.0f}{qps / same:>22.2f}{qps / base_okapi:>15.1f}")


if __name__ == "__main__":
    main()
