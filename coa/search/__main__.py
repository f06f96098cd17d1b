"""``python -m coa.search build|serve|query`` (defaults: the embedded HotpotQA corpus).

  python -m coa.search build --corpus data/raw/hotpotqa/hotpotqa_union_corpus.jsonl.gz --out runs/index
  python -m coa.search serve --index runs/index --port 8000
  python -m coa.search query --index runs/index "Who wrote Maria Golovin?"

Keys are given as ``--key value`` or ``key=value`` (``python -m coa.search build --help`` lists them;
``--print-config`` prints the resolved settings). A build is written beside ``out`` and renamed onto
it when complete, so a crash never leaves half an index.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field

from coa.config import cli
from coa.search.corpus import DEFAULT_CORPUS

DEFAULT_INDEX = "runs/index"
RETRIEVERS = ("bm25", "dense", "fusion")


@dataclass
class BuildConfig:
    """``build``: index a FlashRAG corpus (``id`` + ``contents``, or ``id``, ``title``, ``text``)."""

    corpus: str = field(default=str(DEFAULT_CORPUS), metadata={"help": "corpus jsonl(.gz) or parquet"})
    out: str = field(default=DEFAULT_INDEX, metadata={"help": "index folder to write (replaced when complete)"})
    dense: bool = field(default=False, metadata={"help": "also store all-MiniLM-L6-v2 embeddings (slow on CPU)"})


@dataclass
class ServeConfig:
    """``serve``: the Search-R1 compatible ``/retrieve`` API on HOST:PORT."""

    index: str = field(default=DEFAULT_INDEX, metadata={"help": "index folder (coa.search build)"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind (loopback unless told otherwise)"})
    port: int = field(default=8000, metadata={"help": "TCP port"})
    retriever: str = field(default="bm25", metadata={"help": "bm25 | dense | fusion"})

    def __post_init__(self) -> None:
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {', '.join(RETRIEVERS)}, got {self.retriever!r}")


@dataclass
class QueryConfig:
    """``query``: print the top-k documents for each question."""

    question: list = field(default_factory=list, metadata={"help": "question(s); also given as plain words"})
    index: str = field(default=DEFAULT_INDEX, metadata={"help": "index folder (coa.search build)"})
    k: int = field(default=3, metadata={"help": "documents per question"})
    retriever: str = field(default="bm25", metadata={"help": "bm25 | dense | fusion"})

    def __post_init__(self) -> None:
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {', '.join(RETRIEVERS)}, got {self.retriever!r}")
        if not self.question:
            raise ValueError("query needs a question: python -m coa.search query \"Who wrote Maria Golovin?\"")


COMMANDS = {"build": BuildConfig, "serve": ServeConfig, "query": QueryConfig}
_KEY = re.compile(r"[A-Za-z_][\w.]*=")
_SWITCHES = {"--help", "-h", "help", "--print-config"}


def as_key_values(cls, args: list[str]) -> list[str]:
    """``--key value``, ``--key=value``, ``-k 5`` and bare ``--flag`` (booleans) as ``key=value``;
    other words (a question) go to ``question``."""
    flags = {name for name, f in cls.__dataclass_fields__.items() if f.type in (bool, "bool")}
    out, words, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg in _SWITCHES or _KEY.match(arg):
            out.append(arg)
        elif arg.startswith("-") and len(arg) > 1 and not arg[1:2].isdigit():
            name, eq, value = arg.lstrip("-").partition("=")
            name = name.replace("-", "_")
            if not eq and name in flags:
                value = "true"
            elif not eq:
                if i + 1 >= len(args):
                    raise SystemExit(f"python -m coa.search: {arg} needs a value")
                i, value = i + 1, args[i + 1]
            out.append(f"{name}={value}")
        else:
            words.append(arg)
        i += 1
    if words:
        out.append("question=" + json.dumps(words))  # a JSON list is YAML: questions keep their commas
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        asked = argv[:1] in (["--help"], ["-h"], ["help"])
        print(__doc__ + "commands: build, serve, query (each with --help)", file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    command, cls = argv[0], COMMANDS[argv[0]]
    doc = f"python -m coa.search {command}: {cls.__doc__.split(': ', 1)[1]}"
    cfg = cli(cls, None, as_key_values(cls, argv[1:]), doc)

    if command == "build":
        from coa.search.index import build_index

        out = build_index(cfg.corpus, cfg.out, dense=cfg.dense)
        print(json.dumps(json.loads((out / "index.json").read_text())))
    elif command == "serve":
        from coa.search.server import serve

        print(f"serving {cfg.index} ({cfg.retriever}) on http://{cfg.host}:{cfg.port}", file=sys.stderr)
        serve(cfg.index, cfg.host, cfg.port, cfg.retriever)
    else:
        from coa.search.index import load_searcher

        searcher = load_searcher(cfg.index, cfg.retriever)
        for question in cfg.question:
            for doc in searcher.search([question], cfg.k)[0]:
                print(json.dumps({"id": doc.id, "score": round(doc.score, 4), "contents": doc.contents[:300]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
