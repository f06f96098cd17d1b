"""Outputs that are complete or absent: written to a temporary path beside the target, then renamed.

    with atomic_output("runs/train/sft2", folder=True) as tmp:   # a folder: checkpoint, index, ...
        write_everything_into(tmp)
    write_json("runs/x/metrics.json", metrics)                   # a file

A crash (exception, kill) before the rename leaves the previous output untouched and no half-written
target; the temporary is removed on an exception (a killed process leaves ``.NAME.tmp-PID`` beside the
target, which the next write of the same target clears). The temporary sits in the target's folder
so the rename stays on one filesystem (``os.replace`` is atomic there). A rename that fails removes the
temporary too; a file never replaces a folder (that would delete the folder's contents).

No command deletes or overwrites what it did not create. The marker file ``OWNER_FILE`` names the tool
that wrote a folder and the files it wrote there; a file name alone (``index.json``) proves nothing.
  - a tool writing files into a folder a person names (``out=``, ``dest=``) calls ``claim_folder`` first,
    which refuses a non-empty folder the tool did not write, and records what it wrote with
    ``record_folder``, so the next run deletes only those files; ``owned_files`` does both around a block;
  - a tool replacing a folder whole (an index, a checkpoint) asks ``replaceable`` first, marks the new
    folder with ``mark_folder`` before it is renamed into place, and clears old copies of its own that a
    killed ``replace`` left behind with ``clear_replaced``.
A refusal is ``NotOurs``: one line naming the folder and the setting that overrides.

A folder of rows has one writer at a time: ``lock_folder`` holds its ``LOCK_FILE`` (``OutputBusy`` while
another process holds it). Whatever deletes or replaces rows in such a folder does it holding that lock, so
a refused run has deleted nothing.

JSON has no NaN or Infinity: ``write_json`` writes a non-finite number as null, never as invalid JSON.
"""

from __future__ import annotations

import fcntl
import json
import math
import numbers
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from coa.errors import BadInput


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


OWNER_FILE = ".autocoa-owner.json"


def _stale(folder: Path, name: str = "*") -> list[Path]:
    """Temporaries (of ``name``, default any) in ``folder`` left by processes that died before renaming."""
    return [p for p in folder.glob(f".{name}.tmp-*") if not _alive(p.name.rsplit("-", 1)[-1])]


def clear_stale(folder: str | Path) -> None:
    """Remove every temporary in ``folder`` whose writer died (e.g. a killed shard writer's)."""
    for stale in _stale(Path(folder)):
        _remove(stale)


def _alive(pid: str) -> bool:
    """Whether another running process owns that temporary (it may still be writing it)."""
    try:
        number = int(pid)
        os.kill(number, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return number != os.getpid()


def replace(source: str | Path, target: str | Path) -> Path:
    """Move ``source`` onto ``target`` (file or folder). ``rename`` cannot replace a non-empty folder, so
    an old folder is first moved aside: a crash in between leaves no target (never a mixed one)."""
    source, target = Path(source), Path(target)
    if target.is_dir() and not target.is_symlink() and not source.is_dir():
        raise IsADirectoryError(f"{target}: is a folder; a file is not written over it")
    if target.is_dir() and not target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        _remove(old)
        os.replace(target, old)
        os.replace(source, target)
        _remove(old)
    else:
        os.replace(source, target)
    return target


@contextmanager
def atomic_output(target: str | Path, folder: bool = False) -> Iterator[Path]:
    """A temporary path to write; renamed onto ``target`` when the block ends without an exception."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale(target.parent, target.name):
        _remove(stale)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    _remove(tmp)
    if folder:
        tmp.mkdir()
    try:
        yield tmp
        replace(tmp, target)
    except BaseException:
        _remove(tmp)  # also when the rename itself failed: no temporary is left behind
        raise


def write_text(path: str | Path, text: str, mode: int = 0o666) -> Path:
    """``mode`` (before the umask) is the file's from its creation: 0o600 keeps a secret unreadable to
    others at every moment, also when it replaces a file that was readable."""
    with atomic_output(path) as tmp:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
    return Path(path)


def write_json(path: str | Path, obj: Any, mode: int = 0o666, **dumps_kwargs: Any) -> Path:
    """``obj`` as JSON (indented); a NaN or infinity in it is written as null: a summary or metrics file is
    always JSON any reader parses (``json.dumps`` alone would write the non-standard ``NaN``)."""
    text = json.dumps(_finite(obj), **{"indent": 2, **dumps_kwargs, "allow_nan": False})
    return write_text(path, text + "\n", mode)


def _finite(obj: Any) -> Any:
    if isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# ---- folders of rows: one writer at a time -------------------------------------------------------------

LOCK_FILE = ".lock"


class OutputBusy(BadInput, RuntimeError):
    """Another process writes the output folder: bad input (one line, exit 2), also a ``RuntimeError``."""


def lock_folder(folder: str | Path) -> IO:
    """Hold ``folder``'s exclusive writer lock until the returned file is closed (the OS releases it when the
    process dies, even by ``kill -9``); ``OutputBusy`` while another process holds it."""
    lock = open(Path(folder) / LOCK_FILE, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise OutputBusy(  # any writer of rows holds it (synth.run, evaluate.run, ...): the lock names no tool
            f"out={folder} is being written by another process (it holds {Path(folder) / LOCK_FILE}): wait for "
            "it to finish, or pick another out="
        ) from None
    return lock


@contextmanager
def locked_beside(target: str | Path, setting: str = "") -> Iterator[None]:
    """One writer at a time for ``target``, a folder a command writes into or replaces whole (an index, a
    split): the block holds the lock file ``.NAME.lock`` beside it (removed after); ``OutputBusy`` at once
    while another process holds it, naming the folder by ``setting`` (``--out``; default: the folder)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.with_name(f".{target.name}.lock")
    lock = open(path, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # the holder before us removed the file once done: a lock on that removed file locks nothing
        if not path.exists() or os.stat(path).st_ino != os.fstat(lock.fileno()).st_ino:
            raise BlockingIOError
    except BlockingIOError:
        lock.close()
        named = f"{setting} {target}" if setting else str(target)
        raise OutputBusy(
            f"{named} is being written by another process (it holds {path}): wait for it to finish, or pick "
            f"another {setting or 'folder'}"
        ) from None
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        lock.close()


# ---- folders a person names (dest=, out=) ----------------------------------------------------------


class NotOurs(BadInput, FileExistsError):
    """A folder a command would replace or write into but did not write: refused in one line naming the
    folder and the setting that overrides (bad input, exit 2; still a ``FileExistsError`` for callers)."""


def claim_folder(folder: str | Path, tool: str, override: str, overwrite: bool = False) -> list[str]:
    """May ``tool`` write into ``folder``? Yes if it is missing or empty, or ``tool`` wrote it before (its
    ``OWNER_FILE``); a non-empty folder of anything else only with ``overwrite`` (the flag ``override``
    names). Returns the files ``tool`` recorded there last time: the only ones it may delete."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder}: is a file, not a folder")
    owner = folder / OWNER_FILE
    if owner.is_file():
        recorded = json.loads(owner.read_text())
        if recorded.get("tool") == tool:
            return [f for f in recorded.get("files", []) if _inside(folder, f)]
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise NotOurs(
            f"{folder.resolve()}: folder is not empty and {tool} did not write it (no {OWNER_FILE}); "
            f"pick a new or empty folder, or {override} to write into it (files of the same name "
            "are replaced, nothing else is deleted)"
        )
    return []


def _inside(folder: Path, name: str) -> bool:
    """A recorded name that points outside ``folder`` (an edited marker) is never deleted."""
    return not Path(name).is_absolute() and ".." not in Path(name).parts


def record_folder(folder: str | Path, tool: str, files: list[str]) -> Path:
    """Mark ``folder`` as written by ``tool``, listing the files (relative paths) it wrote there."""
    return write_json(Path(folder) / OWNER_FILE, {"tool": tool, "files": sorted(files)})


def written_by(folder: str | Path, tool: str) -> bool:
    """Whether ``folder``'s ``OWNER_FILE`` names ``tool`` (an unreadable marker names no one)."""
    try:
        return json.loads((Path(folder) / OWNER_FILE).read_text()).get("tool") == tool
    except (OSError, ValueError, AttributeError):
        return False


def replaceable(folder: str | Path, tool: str) -> bool:
    """May ``tool`` replace ``folder`` whole unasked: missing, an empty folder, or one ``tool`` marked."""
    folder = Path(folder)
    if not folder.exists():
        return True
    return folder.is_dir() and (not any(folder.iterdir()) or written_by(folder, tool))


def mark_folder(folder: str | Path, tool: str) -> Path:
    """Mark a folder ``tool`` wrote whole (before it is renamed into place): the marker lists every file."""
    folder = Path(folder)
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != OWNER_FILE]
    return record_folder(folder, tool, files)


def clear_replaced(target: str | Path, owned: Callable[[Path], bool]) -> None:
    """Remove the old copies of ``target`` that ``replace`` moved aside (``.NAME.old-PID``) and whose
    process died before deleting them, if ``owned(copy)`` says they are the caller's."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    prefix = f".{target.name}.old-"
    for old in target.parent.iterdir():
        if old.name.startswith(prefix) and not _alive(old.name[len(prefix) :]) and owned(old):
            _remove(old)


@contextmanager
def owned_files(folder: str | Path, tool: str, override: str, overwrite: bool = False) -> Iterator[Path]:
    """Write files into ``folder`` as ``tool``: ``claim_folder`` on entry; on leaving (also after a failure
    part-way) ``record_folder`` lists the files the block wrote and those recorded before that remain.
    Only files directly in ``folder`` are tracked (the command-line writers write no subfolders). One writer
    at a time (``locked_beside``): a second is refused as busy, not as a foreign folder."""
    folder = Path(folder)
    with locked_beside(folder):
        recorded = claim_folder(folder, tool, override, overwrite)
        ours_before = written_by(folder, tool)
        before = _stamps(folder)
        try:
            yield folder
        finally:
            after = _stamps(folder)
            written = {name for name, stamp in after.items() if before.get(name) != stamp}
            if written or ours_before:
                record_folder(folder, tool, sorted(written | (set(recorded) & set(after))))


def _temporary(name: str) -> bool:
    return name.startswith(".") and ".tmp-" in name


def _stamps(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Each file's inode, mtime and size: an atomic write gives a replaced file a new inode."""
    if not folder.is_dir():
        return {}
    stamps = {}
    for path in folder.iterdir():
        if path.is_file() and path.name != OWNER_FILE and not _temporary(path.name):
            stat = path.stat()
            stamps[path.name] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    return stamps
