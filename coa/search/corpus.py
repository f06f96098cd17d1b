"""Corpora in FlashRAG jsonl form: ``{"id", "contents"}`` or ``{"id", "title", "text"}``, gzip or not.

Read as a stream of Arrow record batches, never whole: every line is checked and a bad one raises
``ValueError("FILE:LINE: what is wrong")``, or with ``skip_bad=True`` is skipped and counted.
Ids are unique, non-empty strings: an integer id is a bad line (ids are strings everywhere, as in questions'
evidence, so ``7`` and ``"7"`` never both name a document).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from coa.errors import reading

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "data/raw/hotpotqa/hotpotqa_union_corpus.jsonl.gz"
SCHEMA = pa.schema([("id", pa.string()), ("contents", pa.string())])
BATCH_ROWS = 10_000


class BadLine(ValueError):
    """One corpus line that cannot be a document; ``str()`` is ``FILE:LINE: reason detail``."""

    def __init__(self, where: str, reason: str, detail: str = ""):
        super().__init__(f"{where}: {reason}{detail}"[:300])  # never echo a whole huge line
        self.reason = reason


def open_text(path: str | Path):
    path = Path(path)
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of a jsonl(.gz); a truncated or corrupt gzip raises ``BadLine`` at its line."""
    opener = gzip.open if path.suffix == ".gz" else open
    lineno = 0
    with opener(path, "rb") as f:
        try:
            for lineno, line in enumerate(f, start=1):
                yield lineno, line
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise BadLine(f"{path}:{lineno + 1}", "truncated or corrupt gzip stream", f" ({e})") from None


def _records(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON) for jsonl; (row number, dict) for parquet."""
    if path.suffix == ".parquet":
        row = 0
        with reading(path):  # a file that is no parquet (or a cut one) is named, as a bad jsonl line is
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
                for record in batch.to_pylist():
                    row += 1
                    yield row, record
        return
    for lineno, raw in _raw_lines(path):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield lineno, BadLine(f"{path}:{lineno}", "not UTF-8", f" (byte {e.start})")
            continue
        try:
            yield lineno, json.loads(text)
        except json.JSONDecodeError as e:
            yield lineno, BadLine(f"{path}:{lineno}", "not valid JSON", f" ({e.msg})")


def _document(record: object, where: str) -> tuple[str, str]:
    """(id, contents) of one record, or ``BadLine`` naming ``where`` and the field."""
    if isinstance(record, BadLine):
        raise record
    if not isinstance(record, dict):
        raise BadLine(where, "not a JSON object", f" (a {type(record).__name__})")
    doc_id = record.get("id")
    if not isinstance(doc_id, str) or not doc_id:
        fix = f" (write it as the string {json.dumps(str(doc_id))})" if type(doc_id) is int else ""
        raise BadLine(where, "field 'id' must be a non-empty string", f", got {doc_id!r}{fix}")
    if isinstance(record.get("contents"), str):
        text = record["contents"]
    elif isinstance(record.get("title"), str) and isinstance(record.get("text"), str):
        text = f'"{record["title"]}"\n{record["text"]}'
    else:
        raise BadLine(where, "needs field 'contents' or fields 'title' and 'text' (strings)")
    if not text.strip():
        raise BadLine(where, "field 'contents' is empty")
    return doc_id, text


def read_corpus(
    path: str | Path, skip_bad: bool = False, skipped: Counter | None = None, progress: bool = False
) -> Iterator[pa.RecordBatch]:
    """Record batches (``id``, ``contents``) of a corpus, validated line by line.

    ``skip_bad``: skip bad lines instead of raising; ``skipped`` then counts them by reason.
    Duplicate ids are bad lines too (the first one wins).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such corpus file")
    seen: set[str] = set()  # ~75 bytes per id: 1.6 GB at 21M passages
    ids, contents = [], []
    with _progress(path, progress) as bar:  # closed (its line ended) before an error is printed
        for lineno, record in _records(path):
            where = f"{path}:{lineno}"
            try:
                doc_id, text = _document(record, where)
                if doc_id in seen:
                    raise BadLine(where, "duplicate id", f" {doc_id!r} (ids must be unique)")
            except BadLine as e:
                if not skip_bad:
                    raise
                if skipped is not None:
                    skipped[e.reason] += 1
                continue
            seen.add(doc_id)
            ids.append(doc_id)
            contents.append(text)
            if len(ids) == BATCH_ROWS:
                bar.update(len(ids))
                yield pa.record_batch([ids, contents], schema=SCHEMA)
                ids, contents = [], []
        if ids:
            bar.update(len(ids))
            yield pa.record_batch([ids, contents], schema=SCHEMA)
    if not seen:
        raise ValueError(f"{path}: the corpus has no documents")


def _progress(path: Path, show: bool):
    from tqdm import tqdm

    return tqdm(desc=f"reading {path.name}", unit=" docs", unit_scale=True, disable=not show)


def load_corpus(path: str | Path, skip_bad: bool = False) -> pa.Table:
    """The whole corpus as an Arrow table (``id``, ``contents``): for small corpora and tests."""
    return pa.Table.from_batches(list(read_corpus(path, skip_bad)), schema=SCHEMA)
