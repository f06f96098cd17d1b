"""``python -m coa.search build|serve|query`` (defaults: the embedded HotpotQA corpus).

  python -m coa.search build --corpus data/raw/hotpotqa/hotpotqa_union_corpus.jsonl.gz --out runs/index
  python -m coa.search build --backend tantivy --out runs/index_tantivy
  python -m coa.search build --backend elasticsearch --url http://127.0.0.1:9200 --out runs/index_es
  python -m coa.search serve --index runs/index --port 8000
  python -m coa.search query --index runs/index "Who wrote Maria Golovin?"

Keys are given as ``--key value`` or ``key=value`` (``python -m coa.search build --help`` lists them;
``--print-config`` prints the resolved settings). A build is written beside ``out`` and renamed onto
it when complete, so a crash never leaves half an index; a folder an earlier build did not mark as its own
(``.autocoa-owner.json``; an ``index.json`` alone is not enough) is never replaced without ``--force``. Bad
input exits 2 with one line naming file, line and field.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field

from coa.config import cli
from coa.errors import entry_point
from coa.procs import require_free_port
from coa.search.backends import BACKENDS, DEFAULT_BACKEND
from coa.search.corpus import DEFAULT_CORPUS
from coa.search.index import RETRIEVERS, build_index, load_searcher
from coa.search.server import MAX_TOPK, Limits

DEFAULT_INDEX = "runs/index"
LIMITS = Limits()


def check_choice(key: str, value: str, choices: tuple, optional: bool = False) -> None:
    if not (optional and not value) and value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}, got {value!r}")


@dataclass
class BuildConfig:
    """``build``: index a FlashRAG corpus (``id`` + ``contents``, or ``id``, ``title``, ``text``)."""

    corpus: str = field(default=str(DEFAULT_CORPUS), metadata={"help": "corpus jsonl(.gz) or parquet"})
    out: str = field(default=DEFAULT_INDEX, metadata={"help": "index folder to write (replaced when complete)"})
    dense: bool = field(default=False, metadata={"help": "also store all-MiniLM-L6-v2 embeddings (slow on CPU)"})
    backend: str = field(default=DEFAULT_BACKEND, metadata={"help": " | ".join(BACKENDS)})
    url: str = field(default="", metadata={"help": "elasticsearch: the server's URL (recorded in index.json)"})
    skip_bad: bool = field(default=False, metadata={"help": "skip and count corpus lines that are not documents"})
    force: bool = field(
        default=False, metadata={"help": "replace --out even if no build wrote it (its files are deleted)"}
    )

    def __post_init__(self) -> None:
        check_choice("backend", self.backend, BACKENDS)
        if self.backend == "elasticsearch" and not self.url:
            raise ValueError("backend elasticsearch needs --url http://HOST:PORT")

    def options(self) -> dict:
        return {"url": self.url} if self.url else {}


@dataclass
class SearchServerConfig:
    """``serve``: the Search-R1 compatible ``/retrieve`` API on HOST:PORT."""

    index: str = field(default=DEFAULT_INDEX, metadata={"help": "index folder (coa.search build)"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind (loopback unless told otherwise)"})
    port: int = field(default=8000, metadata={"help": "TCP port, 1-65535"})
    retriever: str = field(default="bm25", metadata={"help": " | ".join(RETRIEVERS)})
    backend: str = field(
        default="", metadata={"help": "the backend the index must have been built with (any if empty)"}
    )
    max_body_bytes: int = field(default=LIMITS.max_body_bytes, metadata={"help": "larger request bodies get 413"})
    max_batch: int = field(default=LIMITS.max_batch, metadata={"help": "queries per request (more: 422)"})
    max_query_chars: int = field(default=LIMITS.max_query_chars, metadata={"help": "characters per query (more: 422)"})

    def __post_init__(self) -> None:
        check_choice("retriever", self.retriever, RETRIEVERS)
        check_choice("backend", self.backend, BACKENDS, optional=True)
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1-65535, got {self.port}")
        for key in ("max_body_bytes", "max_batch", "max_query_chars"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")

    def limits(self) -> Limits:
        return Limits(self.max_body_bytes, self.max_batch, self.max_query_chars)


@dataclass
class QueryConfig:
    """``query``: print the top-k documents for each question."""

    question: list = field(default_factory=list, metadata={"help": "question(s); also given as plain words"})
    index: str = field(default=DEFAULT_INDEX, metadata={"help": "index folder (coa.search build)"})
    k: int = field(default=3, metadata={"help": f"documents per question, 1-{MAX_TOPK}"})
    retriever: str = field(default="bm25", metadata={"help": " | ".join(RETRIEVERS)})
    backend: str = field(
        default="", metadata={"help": "the backend the index must have been built with (any if empty)"}
    )

    def __post_init__(self) -> None:
        check_choice("retriever", self.retriever, RETRIEVERS)
        check_choice("backend", self.backend, BACKENDS, optional=True)
        if not 1 <= self.k <= MAX_TOPK:
            raise ValueError(f"k must be 1-{MAX_TOPK}, got {self.k}")
        if not self.question:
            raise ValueError('query needs a question: python -m coa.search query "Who wrote Maria Golovin?"')


COMMANDS = {"build": BuildConfig, "serve": SearchServerConfig, "query": QueryConfig}
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


@entry_point("python -m coa.search")
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        asked = argv[:1] in (["--help"], ["-h"], ["help"])
        print(__doc__ + "commands: build, serve, query (each with --help)", file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    command, cls = argv[0], COMMANDS[argv[0]]
    doc = f"python -m coa.search {command}: {cls.__doc__.split(': ', 1)[1]}"
    run(command, cli(cls, None, as_key_values(cls, argv[1:]), doc))
    return 0


def run(command: str, cfg) -> None:
    if command == "build":
        out = build_index(
            cfg.corpus,
            cfg.out,
            dense=cfg.dense,
            backend=cfg.backend,
            skip_bad=cfg.skip_bad,
            force=cfg.force,
            **cfg.options(),
        )
        print(json.dumps(json.loads((out / "index.json").read_text())))
    elif command == "serve":
        from coa.search.server import serve  # heavy: fastapi and uvicorn load only for serve

        require_free_port(cfg.host, cfg.port, "--port N")  # before the "serving" line: a port in use is one line
        print(f"serving {cfg.index} ({cfg.retriever}) on http://{cfg.host}:{cfg.port}", file=sys.stderr)
        serve(cfg.index, cfg.host, cfg.port, cfg.retriever, cfg.backend or None, cfg.limits())
    else:
        searcher = load_searcher(cfg.index, cfg.retriever, cfg.backend or None)
        for question in cfg.question:
            for doc in searcher.search([question], cfg.k)[0]:
                print(json.dumps({"id": doc.id, "score": round(doc.score, 4), "contents": doc.contents[:300]}))


if __name__ == "__main__":
    sys.exit(main())
