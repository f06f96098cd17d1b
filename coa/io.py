"""Outputs that are complete or absent: written to a temporary path beside the target, then renamed.

    with atomic_output("runs/train/sft2", folder=True) as tmp:   # a folder: checkpoint, index, ...
        write_everything_into(tmp)
    write_json("runs/x/metrics.json", metrics)                   # a file

A crash (exception, kill) before the rename leaves the previous output untouched and no half-written
target; the temporary is removed on an exception (a killed process leaves ``.NAME.tmp-PID`` beside the
target, which the next write of the same target clears). The temporary sits in the target's folder
so the rename stays on one filesystem (``os.replace`` is atomic there). A rename that fails removes the
temporary too; a file never replaces a folder (that would delete the folder's contents).

No command deletes or overwrites what it did not create: a tool writing into a folder a person names
calls ``claim_folder`` first, which refuses a non-empty folder the tool did not write, and records what
it wrote with ``record_folder`` (the marker file ``OWNER_FILE``), so the next run deletes only those files.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


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
    return write_text(path, json.dumps(obj, **{"indent": 2, **dumps_kwargs}) + "\n", mode)


# ---- folders a person names (dest=, out=) ----------------------------------------------------------

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
        raise FileExistsError(f"{folder.resolve()}: folder is not empty and {tool} did not write it (no {OWNER_FILE}); "
                              f"pick a new or empty folder, or {override} to write into it (files of the same name "
                              "are replaced, nothing else is deleted)")
    return []


def _inside(folder: Path, name: str) -> bool:
    """A recorded name that points outside ``folder`` (an edited marker) is never deleted."""
    return not Path(name).is_absolute() and ".." not in Path(name).parts


def record_folder(folder: str | Path, tool: str, files: list[str]) -> Path:
    """Mark ``folder`` as written by ``tool``, listing the files (relative paths) it wrote there."""
    return write_json(Path(folder) / OWNER_FILE, {"tool": tool, "files": sorted(files)})
