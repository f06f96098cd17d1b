"""What made an output's rows: a fingerprint recorded beside every resumable output.

    fp = {"model": model_identity(folder), "engine": "vllm", "prompt": {...}, "environment": {...},
          "sampling": {"temperature": 0.0}}
    claim_rows(out, fp, "evaluate", overwrite=cfg.overwrite)   # before any work: another configuration is refused
    ShardWriter(out, fingerprint=fp)                           # records it when it makes the folder

Resuming by row id (question, mode, sample, branch) is only right when the rows already in ``out`` came
from the same model, engine, prompt, environment and sampling. The row writer records ``FINGERPRINT_FILE`` in a new
output (``record_fingerprint``); on a re-run ``claim_rows`` resumes when the fingerprint is the same and refuses (``BadInput``, exit
2) when it differs, naming the keys that differ and the two ways out: a new ``out=``, or ``overwrite=true``,
which deletes the rows this writer made there (its shards and summary) and starts again.

A model is identified by the content of its weights (``model_identity``), not its path: retraining into
the same folder changes it, moving a checkpoint does not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from coa.errors import BadInput
from coa.io import lock_folder, write_json

FINGERPRINT_FILE = "fingerprint.json"
ROW_FILES = ("*.parquet", "summary.json")  # what a row writer (coa.trajectory shards) creates in its folder

_weights_digests: dict[tuple, str] = {}  # (path, size, mtime) -> digest: a process hashes a checkpoint once


def digest(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable value (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _weights_digests:
        with open(path, "rb") as f:
            _weights_digests[key] = hashlib.file_digest(f, "sha256").hexdigest()[:16]
    return _weights_digests[key]


def model_identity(model: str | Path) -> dict:
    """``{"weights": digest}`` of a model folder's weight files (safetensors, else .bin); an API model
    (not a folder) is known only by its name."""
    folder = Path(model)
    if not folder.is_dir():
        return {"name": str(model)}
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not weights:
        return {"name": folder.name, "weights": None}
    return {"weights": digest({w.name: file_digest(w) for w in weights})}


def index_identity(index: str | Path) -> dict:
    """A search index by its ``index.json`` (backend, format, settings, corpus statistics); a path that is
    no index folder (a retriever URL's environment, an index built on first use) by its name."""
    meta = Path(index) / "index.json"
    if not meta.is_file():
        return {"path": str(index)}
    return {"index": digest(json.loads(meta.read_text()))}


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out |= flatten(value, f"{prefix}{key}.")
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): obj}


def differences(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every leaf that differs (missing leaves read as absent)."""
    a, b = flatten(old), flatten(new)
    return [
        f"{k}: {a.get(k, 'absent')} -> {b.get(k, 'absent')}"
        for k in sorted(set(a) | set(b))
        if a.get(k, "absent") != b.get(k, "absent")
    ]


def has_rows(out: Path) -> bool:
    return out.is_dir() and any(out.glob("*.parquet"))


def remove_rows(out: Path) -> None:
    """Delete what a row writer created in ``out`` (its shards, summary and fingerprint), nothing else,
    holding the folder's writer lock: the rows of a run still writing there are never deleted (``OutputBusy``,
    before any file is touched)."""
    with lock_folder(out):
        for pattern in (*ROW_FILES, FINGERPRINT_FILE):
            for path in out.glob(pattern):
                path.unlink()


def record_fingerprint(out: str | Path, fingerprint: dict) -> None:
    """Write ``fingerprint`` into the claimed folder ``out``, whose lock the caller holds, before its first
    row. Another run may have recorded its own there since ``claim_rows`` (while this one loaded its model):
    refused then, so that the two runs' rows never mix."""
    path = Path(out) / FINGERPRINT_FILE
    if not path.is_file():
        write_json(path, fingerprint, indent=2, sort_keys=True)
        return
    recorded = json.loads(path.read_text())
    if recorded != fingerprint:
        raise BadInput(
            f"{out}: another run recorded other settings there while this one started ("
            + "; ".join(differences(recorded, fingerprint))
            + "); write to a new out=… or run again"
        )


def check_resume(folder: str | Path, fingerprint: dict, writer: str) -> None:
    """Resuming ``folder``'s checkpoints is only right for the fingerprint that made them: refuse otherwise."""
    path = Path(folder) / FINGERPRINT_FILE
    recorded = json.loads(path.read_text()) if path.is_file() else None
    if recorded != fingerprint:
        what = (
            "no fingerprint"
            if recorded is None
            else "another configuration (" + "; ".join(differences(recorded, fingerprint)) + ")"
        )
        raise BadInput(
            f"{writer}: resume=true, but the checkpoints in {folder} were made with {what}; run "
            "without resume=true to start over"
        )


def claim_rows(out: str | Path, fingerprint: dict, writer: str, overwrite: bool = False) -> None:
    """Check that ``out`` may take rows of ``fingerprint`` before any work starts: a new output or one with
    the same fingerprint (resume) may; one made otherwise is refused, or with ``overwrite`` emptied of what
    the writer made. Nothing is created here: the row writer records the fingerprint when it makes the
    folder (``record_fingerprint``), so a run that fails first leaves nothing behind."""
    out = Path(out)
    path = out / FINGERPRINT_FILE
    recorded = json.loads(path.read_text()) if path.is_file() else None
    if recorded == fingerprint:
        return
    if recorded is not None or has_rows(out):
        if not overwrite:
            what = (
                "rows without a fingerprint (written before fingerprints, or by another tool)"
                if recorded is None
                else "rows made otherwise (" + "; ".join(differences(recorded, fingerprint)) + ")"
            )
            raise BadInput(
                f"{writer}: {out} holds {what}; resuming would mix them with this run's: write to a "
                "new out=… or pass overwrite=true to replace them"
            )
        remove_rows(out)
