"""Append-only output: a folder of parquet shards in ``TRAJECTORY_SCHEMA``.

Each shard is written whole with ``write_trajectories`` (temp file + rename), so a reader never sees
half a file and a ``kill -9`` loses at most the rows not yet flushed; they are generated again on
the next run. Resuming reads the ids already present and skips those jobs; rows an engine failure ended
are generated again (``ShardWriter.drop`` first takes them out of their shards, each rewritten whole). One
writer per folder: its lock (``coa.io.lock_folder``, released by the OS when the process dies, even by
``kill -9``) refuses a second (``coa.io.OutputBusy``, bad input: one line, exit 2). Holding it, the writer checks
that the folder's fingerprint is still its own before the first row. A run that fails before writing a row
leaves no folder it created, parents included (a wrong ``search.index``, say).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from coa.errors import reading
from coa.fingerprint import FINGERPRINT_FILE, record_fingerprint
from coa.io import LOCK_FILE, atomic_output, clear_stale, lock_folder
from coa.trajectory import Trajectory, write_trajectories


def done_ids(out: str | Path) -> set[str]:
    """Ids of the rows already written (only the ``id`` column is read)."""
    return set(done_rows(out))


def done_rows(out: str | Path) -> dict[str, str]:
    """Id → finish reason of the rows already written (only those two columns are read)."""
    rows: dict[str, str] = {}
    for f in sorted(Path(out).glob("*.parquet")):
        with reading(f):
            table = pq.read_table(f, columns=["id", "finish_reason"])
        rows.update(zip(table.column("id").to_pylist(), table.column("finish_reason").to_pylist()))
    return rows


class ShardWriter:
    def __init__(
        self, out: str | Path, rows_per_shard: int = 64, flush_s: float = 30.0, fingerprint: dict | None = None
    ):
        self.out = Path(out)
        self.fingerprint = fingerprint  # recorded in the folder (coa.fingerprint) once it is locked
        self.rows_per_shard, self.flush_s = rows_per_shard, flush_s
        self.buffer: list[Trajectory] = []
        self.written = 0
        self.shards: list[Path] = []
        self._run = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self._last_flush = time.monotonic()
        self._lock = None
        self._made: Path | None = None  # the first folder of ``out``'s path this writer made (None: out existed)

    def __enter__(self) -> "ShardWriter":
        if not self.out.exists():
            self._made = self.out
            while not self._made.parent.exists():
                self._made = self._made.parent
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = lock_folder(self.out)
        try:
            clear_stale(self.out)  # temporaries of a writer killed mid-write
            if self.fingerprint is not None:
                record_fingerprint(self.out, self.fingerprint)
        except BaseException:
            self._lock.close()
            raise
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.flush()
        if self._lock is not None:
            self._lock.close()
        if exc_type is not None and self._made is not None and not self.shards:
            (self.out / LOCK_FILE).unlink(missing_ok=True)
            (self.out / FINGERPRINT_FILE).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # only while empty: out, then its parents up to the first it made
                for folder in (self.out, *self.out.parents):
                    folder.rmdir()
                    if folder == self._made:
                        break

    def drop(self, ids: set[str]) -> int:
        """Take the rows with these ids out of the folder's shards (each shard rewritten whole, or removed
        when nothing is left): they are about to be generated again. Returns how many were dropped."""
        dropped = 0
        wanted = pa.array(sorted(ids), type=pa.string())
        for f in sorted(self.out.glob("*.parquet")):
            with reading(f):
                table = pq.read_table(f)
            keep = pc.invert(pc.is_in(table["id"], value_set=wanted))
            kept = table.filter(keep)
            if kept.num_rows == table.num_rows:
                continue
            dropped += table.num_rows - kept.num_rows
            if kept.num_rows:
                with atomic_output(f) as tmp:
                    pq.write_table(kept, tmp)
            else:
                f.unlink()
        return dropped

    def add(self, trajectory: Trajectory) -> None:
        self.buffer.append(trajectory)
        if len(self.buffer) >= self.rows_per_shard or time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self.buffer:
            return
        path = self.out / f"part-{self._run}-{len(self.shards):05d}.parquet"
        write_trajectories(path, self.buffer)
        self.shards.append(path)
        self.written += len(self.buffer)
        self.buffer = []
