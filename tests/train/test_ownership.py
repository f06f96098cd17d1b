"""Issue 35, ownership: ``train.run`` replaces ``runs_dir/<stage>`` only when it wrote that folder (its
checkpoint marker, or the core's owner marker); a person's folder there is refused before any training."""

from __future__ import annotations

import json
import shutil

import pytest

from coa.io import OWNER_FILE, record_folder
from coa.model import MARKER
from train.run import command

DEAD_PID = 999999999  # above any pid_max: no such process


def stage_args(tiny_dir, empty_sets, runs, stage="sft1"):
    """A stage outside the chain: saves its start unchanged (a real replace of its output, no training)."""
    return [
        f"stage={stage}",
        f"model={tiny_dir}",
        f"sets_dir={empty_sets}",
        f"runs_dir={runs}",
        f"base_model={tiny_dir}",
        "chain=[sft3]",
    ]


def a_person_s_folder(folder):
    (folder / "mydata").mkdir(parents=True)
    (folder / "NOTES.md").write_text("my notes\n")
    (folder / "mydata" / "x.csv").write_text("a,b\n1,2\n")
    return {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()}


def test_a_foreign_folder_at_the_stage_output_is_refused_and_kept(tiny_dir, empty_sets, tmp_path, capsys):
    runs = tmp_path / "runs"
    before = a_person_s_folder(runs / "sft2")
    assert command(stage_args(tiny_dir, empty_sets, runs, "sft2")) == 2
    assert capsys.readouterr().err == (
        f"train: {runs / 'sft2'}: folder is not empty and train.run did not write it (no {MARKER}): a stage "
        "replaces its output folder whole; move it away, or set runs_dir= to another folder\n"
    )
    assert {
        p.relative_to(runs / "sft2").as_posix(): p.read_text() for p in (runs / "sft2").rglob("*") if p.is_file()
    } == before
    assert sorted(p.name for p in runs.iterdir()) == ["sft2"]  # nothing trained, nothing written


def test_rl_checks_both_outputs_before_writing_rl1(tiny_dir, empty_sets, tmp_path, capsys):
    runs = tmp_path / "runs"
    a_person_s_folder(runs / "rl2")
    assert command(stage_args(tiny_dir, empty_sets, runs, "rl")) == 2
    assert f"{runs / 'rl2'}: folder is not empty and train.run did not write it" in capsys.readouterr().err
    assert not (runs / "rl1").exists()


@pytest.mark.slow
def test_its_own_checkpoint_is_replaced_and_so_is_a_folder_it_marked(tiny_dir, empty_sets, tmp_path):
    runs = tmp_path / "runs"
    assert command(stage_args(tiny_dir, empty_sets, runs)) == 0
    assert (runs / "sft1" / MARKER).is_file()
    assert command(stage_args(tiny_dir, empty_sets, runs)) == 0  # the re-run replaces its own output
    shutil.rmtree(runs / "sft1")
    record_folder(runs / "sft1", "train.run", [])
    assert command(stage_args(tiny_dir, empty_sets, runs)) == 0


def test_another_tool_s_marker_or_a_forged_completion_marker_is_not_ours(tiny_dir, empty_sets, tmp_path, capsys):
    runs = tmp_path / "runs"
    record_folder(runs / "sft1", "coa.search build", ["index.json"])
    assert command(stage_args(tiny_dir, empty_sets, runs)) == 2
    (runs / "sft1" / OWNER_FILE).unlink()
    (runs / "sft1" / MARKER).write_text("done\n")  # a file name alone is not a marker
    assert command(stage_args(tiny_dir, empty_sets, runs)) == 2
    assert capsys.readouterr().err.count("train.run did not write it") == 2


def test_an_old_checkpoint_a_dead_replace_left_is_cleared(tiny_dir, empty_sets, tmp_path):
    runs = tmp_path / "runs"
    assert command(stage_args(tiny_dir, empty_sets, runs)) == 0
    shutil.copytree(runs / "sft1", runs / f".sft1.old-{DEAD_PID}")
    foreign = runs / f".sft1.old-{DEAD_PID - 1}"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert command(stage_args(tiny_dir, empty_sets, runs)) == 0
    assert sorted(p.name for p in runs.iterdir()) == [foreign.name, "sft1"]
    assert json.loads((runs / "sft1" / "metrics.json").read_text())["steps"] == 0
