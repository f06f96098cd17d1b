"""Core bad input and faults: the one error reporter every entry point uses, writes that fail half-way,
folders a person names, question files that are not what they claim."""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from coa.errors import BadInput, entry_point, reading
from coa.io import OWNER_FILE, atomic_output, claim_folder, record_folder, write_json, write_text

ROOT = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {
        **{k: v for k, v in os.environ.items() if k != "COA_DEBUG"},
        "PYTHONPATH": str(ROOT),
        "COA_PARAMS": "none",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=120
    )


# ---- the shared reporter ----------------------------------------------------------------------------


@entry_point("tool")
def _main(error: BaseException | None) -> int:
    if error is not None:
        raise error
    return 0


def test_bad_input_is_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.delenv("COA_DEBUG", raising=False)
    assert _main(None) == 0
    assert _main(ValueError("x.parquet: column 'id'\n  is missing")) == 2
    assert capsys.readouterr().err == "tool: x.parquet: column 'id' is missing\n"
    assert _main(FileNotFoundError(2, "No such file or directory", "in.jsonl")) == 2
    assert "in.jsonl" in capsys.readouterr().err
    with pytest.raises(KeyError):  # a bug is not bad input: it keeps its traceback
        _main(KeyError("segments"))


def test_coa_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("COA_DEBUG", "1")
    with pytest.raises(ValueError, match="bad"):
        _main(ValueError("bad"))


def test_reading_names_the_file_whatever_the_reader_raises(tmp_path):
    import polars as pl

    broken = tmp_path / "scores.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(BadInput, match=rf"^{broken}: not a readable parquet file \(parquet: "):
        with reading(broken):
            pl.read_parquet_schema(broken)  # polars' ComputeError names no file


# ---- writes that fail leave nothing behind ------------------------------------------------------------


def test_a_file_is_never_written_over_a_folder(tmp_path):
    folder = tmp_path / "metrics.json"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        write_json(folder, {"v": 1})
    assert (folder / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary left


def test_a_failed_rename_leaves_no_temporary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("ckpt").write_text("a file where a folder goes")
    with pytest.raises(NotADirectoryError):
        with atomic_output("ckpt", folder=True) as tmp:
            (tmp / "weights").write_text("w")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_private_file_is_private_from_its_creation(tmp_path):
    path = tmp_path / "secret.json"
    path.write_text("{}")
    path.chmod(0o644)
    write_text(path, '{"key": "s"}', mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and json.loads(path.read_text()) == {"key": "s"}


# ---- folders a person names ----------------------------------------------------------------------------


def test_a_foreign_folder_is_refused_and_named_with_its_override(tmp_path):
    (tmp_path / "README.md").write_text("mine")
    with pytest.raises(
        FileExistsError,
        match=rf"^{tmp_path}: folder is not empty and my.tool did not write it "
        rf"\(no {OWNER_FILE}\); pick a new or empty folder, or overwrite=true",
    ):
        claim_folder(tmp_path, "my.tool", "overwrite=true")
    assert claim_folder(tmp_path, "my.tool", "overwrite=true", overwrite=True) == []  # nothing of it to delete
    assert claim_folder(tmp_path / "new", "my.tool", "overwrite=true") == []


def test_a_folder_the_tool_wrote_lists_only_its_own_files(tmp_path):
    record_folder(tmp_path, "my.tool", ["a/x.parquet", "../escape.txt", "/etc/passwd"])
    (tmp_path / "README.md").write_text("mine")
    assert claim_folder(tmp_path, "my.tool", "overwrite=true") == ["a/x.parquet"]
    with pytest.raises(FileExistsError):  # another tool's marker does not make the folder this one's
        claim_folder(tmp_path, "other.tool", "force=true")


# ---- question files (coa.questions, read by synth, evaluate and the split) ----------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b'{"id": "1", "question": "q?", "golden_answers": ["a"]}\n[1, 2]\n',
            r"q\.jsonl:2: expected a JSON object with 'id', 'question', 'golden_answers', got list \[1, 2\]",
        ),
        (
            b'{"id": "1", "question": "q?", "golden_answers": ["a"]}\n\xff\xfe\n',
            r"q\.jsonl:2: not UTF-8 text \(invalid start byte at byte 0\)",
        ),
        (b'{"id": "1", "question": "q?"}\n', r"q\.jsonl:1: field 'golden_answers' must be a non-empty list of strings"),
    ],
)
def test_questions_split_names_file_and_line_with_exit_2(tmp_path, content, message):
    (tmp_path / "q.jsonl").write_bytes(content)
    proc = run_module("coa.questions", "split", "questions=q.jsonl", "out=split", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("coa.questions: q.jsonl:") and re.search(message, proc.stderr)
    assert not (tmp_path / "split").exists()


def test_a_cut_gzip_question_file_names_the_line(tmp_path):
    from coa.questions import load_questions

    rows = "".join(
        json.dumps({"id": str(i), "question": f"q{i}?", "golden_answers": ["a"]}) + "\n" for i in range(2000)
    )
    data = gzip.compress(rows.encode())
    (tmp_path / "q.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"q\.jsonl\.gz:\d+: unreadable \((EOFError|BadGzipFile)"):
        load_questions(tmp_path / "q.jsonl.gz")
