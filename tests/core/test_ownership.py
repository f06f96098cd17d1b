"""Issue 35, ownership: no command deletes or overwrites what it did not create. ``coa.search build`` and
``coa.questions split`` through their real command lines; the core's marker helpers beside them."""

from __future__ import annotations

import json
import shutil

import pytest

from coa.io import OWNER_FILE, NotOurs, clear_replaced, owned_files, replaceable, written_by
from coa.questions import main as questions_main
from coa.search import build_index, load_searcher
from coa.search.__main__ import main as search_main

DEAD_PID = 999999999  # above any pid_max: no such process


def a_web_app(folder):
    """A person's project that happens to hold an index.json."""
    (folder / "src").mkdir(parents=True)
    (folder / "index.json").write_text('{"name": "my-app"}\n')
    (folder / "README.md").write_text("# my app\n")
    (folder / "src" / "app.js").write_text("console.log(1)\n")
    return {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()}


def contents(folder):
    return {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"d{i}", "contents": f'"Doc {i}"\n{w}'}) + "\n"
            for i, w in enumerate(["apple", "banana", "cherry"])
        )
    )
    return path


def build(corpus, out, *flags):
    return search_main(["build", "--corpus", str(corpus), "--out", str(out), *flags])


# ---- 1: coa.search build --out ------------------------------------------------------------------------


def test_build_refuses_a_folder_whose_only_claim_is_an_index_json(tmp_path, corpus, capsys):
    app = tmp_path / "app"
    before = a_web_app(app)
    assert build(corpus, app) == 2
    assert capsys.readouterr().err == (
        f"python -m coa.search: {app} exists and is not a coa.search index (no "
        f"{OWNER_FILE}): a build would replace it; choose another --out, or pass "
        "--force to replace it\n"
    )
    assert contents(app) == before


def test_build_replaces_its_own_index_and_marks_it(tmp_path, corpus):
    out = tmp_path / "idx"
    assert build(corpus, out) == 0 and written_by(out, "coa.search build")
    assert build(corpus, out) == 0  # its own index: replaced without --force
    assert load_searcher(out).search(["banana"], 1)[0][0].id == "d1"
    marker = json.loads((out / OWNER_FILE).read_text())
    assert {"index.json", "corpus.arrow"} <= set(marker["files"])


def test_force_replaces_a_foreign_folder_and_makes_it_an_index(tmp_path, corpus):
    app = tmp_path / "app"
    a_web_app(app)
    assert build(corpus, app, "--force") == 0
    assert not (app / "src").exists() and written_by(app, "coa.search build")


def test_an_old_index_a_dead_build_left_is_removed_by_the_next_build(tmp_path, corpus):
    out = tmp_path / "idx"
    build_index(corpus, out, show_progress=False)
    ours = tmp_path / f".idx.old-{DEAD_PID}"  # what replace() leaves when deleting the old index fails
    shutil.copytree(out, ours)
    foreign = tmp_path / f".idx.old-{DEAD_PID - 1}"  # same name pattern, not ours: kept
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    build_index(corpus, out, show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [foreign.name, "c.jsonl", "idx"]


def test_a_failed_delete_of_the_old_index_is_cleared_by_the_next_build(tmp_path, corpus, monkeypatch):
    import coa.io

    out = tmp_path / "idx"
    build_index(corpus, out, show_progress=False)
    real_remove = coa.io._remove

    def remove_fails_on_old_copies(path):
        if ".old-" in path.name and path.exists():
            raise PermissionError(f"{path}: cannot delete")
        real_remove(path)

    monkeypatch.setattr(coa.io, "_remove", remove_fails_on_old_copies)
    with pytest.raises(PermissionError):
        build_index(corpus, out, show_progress=False)
    monkeypatch.undo()
    left = next(tmp_path.glob(".idx.old-*"))
    left.rename(tmp_path / f".idx.old-{DEAD_PID}")  # its process has ended
    build_index(corpus, out, show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "idx"]


# ---- 3, 4: coa.questions split out= ---------------------------------------------------------------------


@pytest.fixture
def question_file(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(
        "".join(json.dumps({"id": str(i), "question": f"Q{i}?", "golden_answers": [f"a{i}"]}) + "\n" for i in range(10))
    )
    return path


def split(question_file, out, *args):
    return questions_main(["split", f"questions={question_file}", f"out={out}", "heldout=3", *args])


def test_split_refuses_to_overwrite_a_train_jsonl_it_did_not_write(tmp_path, question_file, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "train.jsonl").write_text('{"my": "data"}\n')
    assert split(question_file, out) == 2
    assert capsys.readouterr().err == (
        f"coa.questions: {out}: folder is not empty and coa.questions split did not "
        f"write it (no {OWNER_FILE}); pick a new or empty folder, or overwrite=true to "
        "write into it (files of the same name are replaced, nothing else is deleted)\n"
    )
    assert contents(out) == {"train.jsonl": '{"my": "data"}\n'}


def test_split_rewrites_its_own_folder_and_overwrite_claims_another(tmp_path, question_file):
    out = tmp_path / "split"
    assert split(question_file, out) == 0 and split(question_file, out, "seed=1") == 0
    assert json.loads((out / OWNER_FILE).read_text())["files"] == ["heldout.jsonl", "split.json", "train.jsonl"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.md").write_text("kept")
    assert split(question_file, mine, "overwrite=true") == 0
    assert (mine / "notes.md").read_text() == "kept" and len((mine / "train.jsonl").read_text().splitlines()) == 7


@pytest.mark.parametrize(
    "setting, message",
    [
        ("heldout=-5", "heldout must be >= 1 (the held-out evaluation questions), got -5"),
        ("heldout=0", "heldout must be >= 1 (the held-out evaluation questions), got 0"),
        ("train=-5", "train must be >= 0 (0 = all questions not held out), got -5"),
    ],
)
def test_split_refuses_negative_or_empty_parts_before_writing(tmp_path, question_file, setting, message, capsys):
    out = tmp_path / "split"
    assert split(question_file, out, setting) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_split_refuses_a_question_file_that_leaves_a_part_empty(tmp_path, question_file, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = tmp_path / "split"
    assert questions_main(["split", f"questions={empty}", f"out={out}"]) == 2
    assert capsys.readouterr().err == f"coa.questions: {empty}: holds no questions; there is nothing to split\n"
    assert split(question_file, out, "heldout=10") == 2
    assert capsys.readouterr().err == (
        f"coa.questions: heldout=10 leaves no training questions: {question_file} holds 10; set heldout below 10\n"
    )
    assert not out.exists()


# ---- the core's helpers ---------------------------------------------------------------------------------


def test_a_refusal_is_bad_input_and_still_a_file_exists_error(tmp_path):
    (tmp_path / "README.md").write_text("mine")
    with pytest.raises(NotOurs) as refused:
        with owned_files(tmp_path, "my.tool", "overwrite=true"):
            pass
    assert isinstance(refused.value, ValueError) and isinstance(refused.value, FileExistsError)


def test_owned_files_records_what_the_block_wrote_also_when_it_fails(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="crash"):
        with owned_files(out, "my.tool", "overwrite=true") as folder:
            folder.mkdir()
            (folder / "a.parquet").write_text("a")
            raise RuntimeError("crash")
    assert written_by(out, "my.tool")  # the re-run is allowed: the folder holds only its files
    with owned_files(out, "my.tool", "overwrite=true") as folder:
        (folder / "b.parquet").write_text("b")
    assert json.loads((out / OWNER_FILE).read_text())["files"] == ["a.parquet", "b.parquet"]


def test_a_marker_names_its_tool_and_an_unreadable_one_names_no_one(tmp_path):
    assert replaceable(tmp_path / "missing", "t") and replaceable(tmp_path, "t")  # missing, empty
    (tmp_path / OWNER_FILE).write_text("{not json")
    assert not written_by(tmp_path, "t") and not replaceable(tmp_path, "t")
    (tmp_path / OWNER_FILE).write_text(json.dumps({"tool": "t", "files": []}))
    assert replaceable(tmp_path, "t") and not replaceable(tmp_path, "other")


def test_clear_replaced_keeps_copies_of_live_processes_and_of_others(tmp_path):
    import os

    alive = tmp_path / f".x.old-{os.getppid()}"
    dead = tmp_path / f".x.old-{DEAD_PID}"
    for copy in (alive, dead):
        copy.mkdir()
    clear_replaced(tmp_path / "x", lambda old: False)
    assert alive.exists() and dead.exists()
    clear_replaced(tmp_path / "x", lambda old: True)
    assert alive.exists() and not dead.exists()
