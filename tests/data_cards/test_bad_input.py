"""``data_cards.publish`` and ``export`` on bad input and in folders they do not own: nothing of the
person's is deleted or overwritten without ``overwrite=true`` (and never deleted), bad input is one line
and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import coa.config
from coa.io import OWNER_FILE
from data_cards import export, publish
from tests.data_cards.conftest import ROOT


@pytest.fixture(autouse=True)
def _no_params(monkeypatch):
    monkeypatch.setattr(coa.config, "PARAMS_FILE", "none")
    monkeypatch.delenv("COA_DEBUG", raising=False)


@pytest.fixture
def sets(empty_sets):
    """Empty sets: publish writes the card (README.md) and nothing else, in a fraction of a second."""
    return empty_sets


def publish_args(sets, dest, *more) -> list[str]:
    return [
        "repo_id=tester/sets",
        f"sets_dir={sets}",
        f"curate_dir={sets.parent}",
        f"index={sets.parent / 'none'}",
        f"dest={dest}",
        *more,
    ]


def a_project(folder):
    """What a person keeps in a folder: a README and a package (publish writes a README.md too)."""
    (folder / "pkg").mkdir(parents=True)
    (folder / "README.md").write_text("my project\n")
    (folder / "pkg" / "code.py").write_text("x = 1\n")
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def contents(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_publish_refuses_a_folder_it_did_not_write_and_deletes_nothing(sets, tmp_path, capsys, monkeypatch):
    project = tmp_path / "project"
    before = a_project(project)
    monkeypatch.chdir(project)  # the reported case: dest=.
    assert publish.main(publish_args(sets, ".")) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and err.startswith(f"publish: {project}: folder is not empty and data_cards.publish did not write it")
        and "overwrite=true" in err
    )
    assert contents(project) == before


def test_a_failing_publish_into_a_foreign_folder_leaves_it_as_it_was(sets, tmp_path, capsys):
    project = tmp_path / "project"
    before = a_project(project)
    (sets / "cot.parquet").unlink()
    assert publish.main(publish_args(sets, project, "overwrite=true")) == 2
    assert f"{sets / 'cot.parquet'}: set not found" in capsys.readouterr().err
    assert contents(project) == before


def test_overwrite_replaces_same_names_only_and_a_republish_deletes_only_its_own_files(sets, tmp_path):
    project = tmp_path / "project"
    a_project(project)
    assert publish.main(publish_args(sets, project, "overwrite=true")) == 0
    assert (project / "README.md").read_text().startswith("---")  # the card replaced the same name
    assert (project / "pkg" / "code.py").read_text() == "x = 1\n" and (project / OWNER_FILE).is_file()
    (project / "notes.txt").write_text("added later\n")
    (project / "plots").mkdir()
    (project / "plots" / "mine.png").write_bytes(b"png")  # inside a folder publish manages, but not its file
    assert publish.main(publish_args(sets, project)) == 0  # its own folder now: no flag needed
    assert {"pkg/code.py", "notes.txt", "plots/mine.png", "README.md"} <= set(contents(project))


def test_a_corrupt_set_is_named(sets, tmp_path, capsys):
    (sets / "coa.parquet").write_bytes(b"PAR1 truncated")
    assert publish.main(publish_args(sets, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"publish: {sets / 'coa.parquet'}: not a readable parquet file")
    assert not (tmp_path / "out").exists()


def test_an_unreachable_endpoint_is_one_line(sets, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "COA_DEBUG"))}
    env.update(
        HF_ENDPOINT="http://127.0.0.1:9",
        HF_TOKEN="hf_" + "x" * 30,
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=str(ROOT),
        COA_PARAMS="none",
        HF_HOME=str(tmp_path / "hf"),
    )
    argv = [sys.executable, "-m", "data_cards.publish", *publish_args(sets, "")]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("publish: http://127.0.0.1:9 is not reachable") and "HF_ENDPOINT" in proc.stderr
    assert env["HF_TOKEN"] not in proc.stdout + proc.stderr


def test_export_of_a_corrupt_set_is_one_line_and_exit_2(sets, tmp_path, capsys):
    (sets / "pairs.parquet").write_bytes(b"junk")
    assert export.main(["to=trl_preference", f"sets_dir={sets}", f"out={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"export: {sets / 'pairs.parquet'}: not a readable parquet file")
