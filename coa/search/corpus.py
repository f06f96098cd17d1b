"""Corpora in FlashRAG jsonl form: ``{"id", "contents"}`` or ``{"id", "title", "text"}``, gzip or not."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "data/raw/hotpotqa/hotpotqa_union_corpus.jsonl.gz"


def open_text(path: str | Path):
    path = Path(path)
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def load_corpus(path: str | Path) -> pa.Table:
    """Read a corpus into an arrow table with columns ``id`` and ``contents`` (strings).

    Raises ``ValueError`` naming the file, line and field of the first bad record.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        rows = table.to_pylist()
    else:
        rows = []
        with open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    ids, contents = [], []
    for lineno, row in enumerate(rows, start=1):
        if "id" not in row:
            raise ValueError(f"{path}:{lineno}: missing field 'id'")
        if "contents" in row and isinstance(row["contents"], str):
            text = row["contents"]
        elif "title" in row and "text" in row:
            text = f'"{row["title"]}"\n{row["text"]}'
        else:
            raise ValueError(f"{path}:{lineno}: needs field 'contents' or fields 'title' and 'text'")
        if not text.strip():
            raise ValueError(f"{path}:{lineno}: field 'contents' is empty")
        ids.append(str(row["id"]))
        contents.append(text)
    if not ids:
        raise ValueError(f"{path}: the corpus is empty")
    return pa.table({"id": ids, "contents": contents})
