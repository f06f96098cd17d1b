"""Retrieval recall on the 1,979 HotpotQA dev questions: BM25 vs dense vs fusion.

    python -m coa.search build --dense --out runs/index_dense      # once (~10 min of CPU encoding)
    python bench/recall.py --index runs/index_dense

Recall@k "any" = at least one of the two gold paragraphs in the top k; "both" = both of them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coa.questions import DEFAULT_QUESTIONS, load_questions  # noqa: E402
from coa.search import load_searcher  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="runs/index_dense")
    ap.add_argument("--kinds", default="bm25,dense,fusion")
    args = ap.parse_args()
    questions = load_questions(DEFAULT_QUESTIONS)
    texts = [q["question"] for q in questions]
    golds = [set(q["metadata"]["gold_paragraph_ids"]) for q in questions]
    print(f"{'retriever':<10}" + "".join(f"{f'@{k} any':>9}{f'@{k} both':>10}" for k in (1, 5, 10)) + f"{'s':>7}")
    for kind in args.kinds.split(","):
        searcher = load_searcher(args.index, kind)
        start = time.perf_counter()
        results = searcher.search(texts, 10)
        seconds = time.perf_counter() - start
        row = f"{kind:<10}"
        for k in (1, 5, 10):
            top = [{d.id for d in r[:k]} for r in results]
            any_ = sum(bool(t & g) for t, g in zip(top, golds)) / len(golds)
            both = sum(g <= t for t, g in zip(top, golds)) / len(golds)
            row += f"{any_:>9.3f}{both:>10.3f}"
        print(row + f"{seconds:>7.1f}")


if __name__ == "__main__":
    main()
