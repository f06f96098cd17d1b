"""Issue 35, ownership: ``data_cards.export`` writes into ``out`` only when it is new, empty or an earlier
export of the same format wrote it; a person's ``train.parquet`` is never overwritten unasked."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from coa.io import OWNER_FILE
from data_cards import export


@pytest.fixture
def question_file(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(
        "".join(json.dumps({"id": str(i), "question": f"Q{i}?", "golden_answers": [f"a{i}"]}) + "\n" for i in range(4))
    )
    return path


def verl(question_file, out, *extra):
    return export.main(["to=verl", f"input={question_file}", f"out={out}", *extra])


def test_export_refuses_to_overwrite_a_train_parquet_it_did_not_write(tmp_path, question_file, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "train.parquet").write_bytes(b"my own table")
    assert verl(question_file, out) == 2
    assert capsys.readouterr().err == (
        f"export: {out}: folder is not empty and data_cards.export to=verl did "
        f"not write it (no {OWNER_FILE}); pick a new or empty folder, or overwrite=true "
        "to write into it (files of the same name are replaced, nothing else is "
        "deleted)\n"
    )
    assert [p.name for p in out.iterdir()] == ["train.parquet"] and (
        out / "train.parquet"
    ).read_bytes() == b"my own table"


def test_export_rewrites_its_own_folder_and_records_every_split(tmp_path, question_file):
    out = tmp_path / "verl"
    assert verl(question_file, out) == 0 and verl(question_file, out) == 0
    assert verl(question_file, out, "split=test") == 0
    assert json.loads((out / OWNER_FILE).read_text()) == {
        "tool": "data_cards.export to=verl",
        "files": ["test.parquet", "tool_config.yaml", "train.parquet"],
    }
    assert export.main(["to=questions", f"input={out / 'test.parquet'}", f"out={out}"]) == 2  # another format's


def test_overwrite_writes_into_a_foreign_folder_and_keeps_the_rest(tmp_path, question_file):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "train.parquet").write_bytes(b"my own table")
    (out / "notes.md").write_text("kept")
    assert verl(question_file, out, "overwrite=true") == 0
    assert pq.read_table(out / "train.parquet").num_rows == 4 and (out / "notes.md").read_text() == "kept"


def test_bad_input_is_named_before_the_folder_is_judged(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "train.parquet").write_bytes(b"my own table")
    assert export.main(["to=verl", f"input={tmp_path / 'missing.jsonl'}", f"out={out}"]) == 2
    assert capsys.readouterr().err == f"export: question file not found: {tmp_path / 'missing.jsonl'}\n"
