"""The documents of an index: ``corpus.arrow`` (``id``, ``contents``), an Arrow IPC file, memory-mapped.

The one way code reads documents: backends return row numbers, the store turns them into ``Doc``s.

    store = DocumentStore("runs/index")
    store.docs([12, 7], [3.1, 2.5])    # → [Doc, Doc]
    store.get("hp8")                   # id → contents (or None)
    store.rows_with_title("Maria Golovin")
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from coa.errors import BadInput
from coa.search.backends import rebuild_hint
from coa.search.corpus import SCHEMA
from coa.search.types import Doc

FILE = "corpus.arrow"
MAGIC = b"ARROW1"  # an Arrow IPC file starts and ends with it (the footer, written last, holds the batch index)


def write_store(batches: Iterable[pa.RecordBatch], folder: Path) -> int:
    """Write the batches to ``folder/corpus.arrow`` as they come; the number of documents."""
    n = 0
    with pa.OSFile(str(folder / FILE), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
        for batch in batches:
            writer.write_batch(batch)
            n += batch.num_rows
    return n


def arrow_problem(path: Path, error: BaseException) -> str:
    """What is wrong with an unreadable ``corpus.arrow``, in words (pyarrow's message names no file)."""
    size = path.stat().st_size
    if size == 0:
        return "empty (truncated to 0 bytes)"
    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
        f.seek(max(size - len(MAGIC), 0))
        tail = f.read()
    if head != MAGIC:
        return "corrupt (not an Arrow IPC file: it does not start with ARROW1)"
    if tail != MAGIC:
        return f"truncated ({size:,} bytes; an Arrow file ends with its footer and ARROW1, this one stops short)"
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return f"corrupt ({first})"


def title_of(contents: str) -> str:
    """FlashRAG's ``"Title"\\ntext`` → ``Title``."""
    return contents.split("\n", 1)[0].strip('"')


class DocumentStore:
    def __init__(self, folder: str | Path):
        self.path = Path(folder) / FILE
        if not self.path.is_file():
            raise FileNotFoundError(
                f"{self.path}: missing (the index folder has no documents); {rebuild_hint(Path(folder))}"
            )
        try:
            self._file = pa.ipc.open_file(pa.memory_map(str(self.path)))
            table = self._file.read_all()  # zero-copy over the memory map
            self.ids, self.contents = table.column("id"), table.column("contents")
        except (pa.ArrowException, KeyError, OSError) as e:  # "Not an Arrow file", "File is too small: 0"
            raise BadInput(f"{self.path}: {arrow_problem(self.path, e)}; {rebuild_hint(Path(folder))}") from e
        # row → (record batch, offset): ChunkedArray.take concatenates every chunk first, a copy of the whole
        # column per search (120 ms a query at 1M passages); a lookup touches only the rows asked for
        self._batch_starts = np.cumsum([0] + [len(chunk) for chunk in self.ids.chunks])
        self._row_of_id: dict[str, int] | None = None
        self._rows_of_title: dict[str, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def docs(self, rows: Sequence[int], scores: Sequence[float]) -> list[Doc]:
        if not len(rows):
            return []
        rows = np.asarray(rows, dtype=np.int64)
        if rows.min() < 0 or rows.max() >= len(self):
            raise IndexError(f"{self.path}: rows {rows.tolist()} outside 0..{len(self) - 1}")
        batches = np.searchsorted(self._batch_starts, rows, side="right") - 1
        offsets = rows - self._batch_starts[batches]
        return [
            Doc(id=self.ids.chunk(b)[o].as_py(), contents=self.contents.chunk(b)[o].as_py(), score=float(s))
            for b, o, s in zip(batches.tolist(), offsets.tolist(), scores)
        ]

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The documents in row order, one record batch at a time (what backends index)."""
        for i in range(self._file.num_record_batches):
            yield self._file.get_batch(i)

    # Lookups by id and title build their dict on first use (fine for corpora of ~1M; the search path never needs it)
    def get(self, doc_id: str) -> str | None:
        if self._row_of_id is None:
            self._row_of_id = {doc_id: row for row, doc_id in enumerate(self.ids.to_pylist())}
        row = self._row_of_id.get(doc_id)
        return None if row is None else self.contents[row].as_py()

    def rows_with_title(self, title: str) -> list[int]:
        if self._rows_of_title is None:
            self._rows_of_title = {}
            for row, contents in enumerate(self.contents.to_pylist()):
                self._rows_of_title.setdefault(title_of(contents), []).append(row)
        return self._rows_of_title.get(title, [])
