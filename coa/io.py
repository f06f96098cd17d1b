"""Outputs that are complete or absent: written to a temporary path beside the target, then renamed.

    with atomic_output("runs/train/sft2", folder=True) as tmp:   # a folder: checkpoint, index, ...
        write_everything_into(tmp)
    write_json("runs/x/metrics.json", metrics)                   # a file

A crash (exception, kill) before the rename leaves the previous output untouched and no half-written
target; the temporary is removed on an exception (a killed process leaves ``.NAME.tmp-PID`` beside the
target, which the next write of the same target clears). The temporary sits in the target's folder
so the rename stays on one filesystem (``os.replace`` is atomic there).
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


def _stale(target: Path) -> list[Path]:
    """Temporaries of earlier writes of ``target`` by processes that died before renaming."""
    return [p for p in target.parent.glob(f".{target.name}.tmp-*") if not _alive(p.name.rsplit("-", 1)[-1])]


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
    for stale in _stale(target):
        _remove(stale)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    _remove(tmp)
    if folder:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    replace(tmp, target)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
    return Path(path)


def write_json(path: str | Path, obj: Any, **dumps_kwargs: Any) -> Path:
    return write_text(path, json.dumps(obj, **{"indent": 2, **dumps_kwargs}) + "\n")
