"""Issue 35, ownership: ``curate.run`` writes into ``out`` only when it is new, empty or this step's own
(``.autocoa-owner.json``); a person's ``metrics.json`` / ``scores.parquet`` are never overwritten unasked."""

from __future__ import annotations

import json

import pytest

from coa.io import OWNER_FILE
from coa.trajectory import write_trajectories
from curate.run import main
from tests.curate.helpers import EVAL_SETS, searched, traj


@pytest.fixture
def shard(questions, tmp_path):
    return write_trajectories(
        tmp_path / "in" / "part-000.parquet", [traj(q, searched("x y", q["golden_answers"][0])) for q in questions[:3]]
    )


def score(shard, out, *extra):
    return main(["step=score", f"in={shard.parent}", f"out={out}", f"eval_sets=[{','.join(EVAL_SETS)}]", *extra])


def a_person_s_folder(out):
    out.mkdir()
    (out / "metrics.json").write_text('{"mine": true}\n')
    (out / "scores.parquet").write_bytes(b"my own table")
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_score_refuses_a_folder_it_did_not_write_and_keeps_its_files(shard, tmp_path, capsys):
    out = tmp_path / "mine"
    before = a_person_s_folder(out)
    assert score(shard, out) == 2
    assert capsys.readouterr().err == (
        f"curate: {out}: folder is not empty and curate.run step=score did not write "
        f"it (no {OWNER_FILE}); pick a new or empty folder, or overwrite=true to write "
        "into it (files of the same name are replaced, nothing else is deleted)\n"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_step_reruns_into_its_own_folder_and_overwrite_claims_another(shard, tmp_path):
    out = tmp_path / "score"
    assert score(shard, out) == 0 and score(shard, out) == 0
    assert json.loads((out / OWNER_FILE).read_text()) == {
        "tool": "curate.run step=score",
        "files": ["metrics.json", "scores.parquet"],
    }
    mine = tmp_path / "mine"
    a_person_s_folder(mine)
    (mine / "notes.md").write_text("kept")
    assert score(shard, mine, "overwrite=true") == 0
    assert (mine / "notes.md").read_text() == "kept" and json.loads((mine / "metrics.json").read_text())["rows"] == 3


def test_another_step_s_folder_is_not_this_step_s(shard, tmp_path, capsys):
    out = tmp_path / "score"
    assert score(shard, out) == 0
    assert main(["step=analyze", f"in={out}", f"trajectories=[{shard.parent}]", f"out={out}"]) == 2
    assert "curate.run step=analyze did not write it" in capsys.readouterr().err
