"""Append-only output: a folder of parquet shards in ``TRAJECTORY_SCHEMA``.

Each shard is written whole with ``write_trajectories`` (temp file + rename), so a reader never sees
half a file and a ``kill -9`` loses at most the rows not yet flushed; they are generated again on
the next run. Resuming reads the ids already present and skips those jobs. One writer per folder:
an exclusive lock (released by the OS when the process dies, even by ``kill -9``) refuses a second.
A run that fails before writing a row leaves no folder it created (a wrong ``search.index``, say).
"""
from __future__ import annotations

import contextlib
import fcntl
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq

from coa.errors import reading
from coa.io import clear_stale
from coa.trajectory import Trajectory, write_trajectories


def done_ids(out: str | Path) -> set[str]:
    """Ids of the rows already written (only the ``id`` column is read)."""
    ids: set[str] = set()
    for f in sorted(Path(out).glob("*.parquet")):
        with reading(f):
            ids.update(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    return ids


class ShardWriter:
    def __init__(self, out: str | Path, rows_per_shard: int = 64, flush_s: float = 30.0):
        self.out = Path(out)
        self.rows_per_shard, self.flush_s = rows_per_shard, flush_s
        self.buffer: list[Trajectory] = []
        self.written = 0
        self.shards: list[Path] = []
        self._run = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self._last_flush = time.monotonic()
        self._lock = None
        self._created = False

    def __enter__(self) -> "ShardWriter":
        self._created = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.out / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(f"{self.out} is being written by another process; wait for it or pick another out=")
        clear_stale(self.out)  # temporaries of a writer killed mid-write
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.flush()
        if self._lock is not None:
            self._lock.close()
        if exc_type is not None and self._created and not self.shards:
            (self.out / ".lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # only while empty
                self.out.rmdir()

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
