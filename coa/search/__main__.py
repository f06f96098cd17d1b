"""``python -m coa.search build|serve|query`` (defaults: the embedded HotpotQA corpus).

  python -m coa.search build --corpus data/raw/hotpotqa/hotpotqa_union_corpus.jsonl.gz --out runs/index
  python -m coa.search serve --index runs/index --port 8000
  python -m coa.search query --index runs/index "Who wrote Maria Golovin?"
"""
from __future__ import annotations

import argparse
import json
import sys

from coa.search.corpus import DEFAULT_CORPUS

DEFAULT_INDEX = "runs/index"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coa.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="index a FlashRAG corpus")
    b.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    b.add_argument("--out", default=DEFAULT_INDEX)
    b.add_argument("--dense", action="store_true", help="also store all-MiniLM-L6-v2 embeddings")
    s = sub.add_parser("serve", help="serve /retrieve on HOST:PORT")
    s.add_argument("--index", default=DEFAULT_INDEX)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--retriever", default="bm25", choices=["bm25", "dense", "fusion"])
    q = sub.add_parser("query", help="print the top-k documents for a question")
    q.add_argument("question", nargs="+")
    q.add_argument("--index", default=DEFAULT_INDEX)
    q.add_argument("-k", type=int, default=3)
    q.add_argument("--retriever", default="bm25", choices=["bm25", "dense", "fusion"])
    args = parser.parse_args(argv)

    if args.cmd == "build":
        from coa.search.index import build_index

        out = build_index(args.corpus, args.out, dense=args.dense)
        print(json.dumps(json.loads((out / "index.json").read_text())))
    elif args.cmd == "serve":
        from coa.search.server import serve

        print(f"serving {args.index} ({args.retriever}) on http://{args.host}:{args.port}", file=sys.stderr)
        serve(args.index, args.host, args.port, args.retriever)
    else:
        from coa.search.index import load_searcher

        searcher = load_searcher(args.index, args.retriever)
        for question in args.question:
            for doc in searcher.search([question], args.k)[0]:
                print(json.dumps({"id": doc.id, "score": round(doc.score, 4), "contents": doc.contents[:300]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
