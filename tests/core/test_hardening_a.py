"""Issue 48, part A: a refused run deletes nothing.

The rule, enforced in the one place every entry point passes: rows are deleted only holding their folder's
writer lock (``coa.fingerprint.remove_rows``), and a row writer re-checks the fingerprint once it holds it.
Each probe of the issue is reproduced with the real command."""

from __future__ import annotations

import json

import pytest

import coa.config
from coa.errors import BadInput
from coa.fingerprint import FINGERPRINT_FILE, claim_rows
from coa.io import OutputBusy
from coa.trajectory import Trajectory
from synth.shards import ShardWriter


@pytest.fixture(autouse=True)
def no_params_file(monkeypatch):
    monkeypatch.setenv("COA_PARAMS", "none")
    monkeypatch.setattr(coa.config, "PARAMS_FILE", "none")


# ---- a refused overwrite deletes nothing -----------------------------------------------------------------


def snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def written_rows(out, fingerprint: dict, n: int) -> None:
    """What a run leaves: shards of ``n`` rows, its fingerprint and a summary."""
    with ShardWriter(out, rows_per_shard=2, fingerprint=fingerprint) as writer:
        for i in range(n):
            writer.add(Trajectory(question_id=f"q{i}", question="?", golden_answers=["a"], prompt="p"))
    (out / "summary.json").write_text('{"rows": %d}\n' % n)


def test_claim_rows_with_overwrite_deletes_nothing_while_a_writer_holds_the_folder(tmp_path):
    out = tmp_path / "out"
    written_rows(out, {"sampling": {"temperature": 0.7}}, 4)
    before = snapshot(out)
    with ShardWriter(out, fingerprint={"sampling": {"temperature": 0.7}}):  # the resumed run, still writing
        with pytest.raises(OutputBusy, match="being written by another process"):
            claim_rows(out, {"sampling": {"temperature": 0.1}}, "synth", overwrite=True)
        assert snapshot(out) == before
    claim_rows(out, {"sampling": {"temperature": 0.1}}, "synth", overwrite=True)  # once it is done: replaced
    assert not list(out.glob("*.parquet")) and not (out / FINGERPRINT_FILE).exists()


def test_a_writer_refuses_a_fingerprint_recorded_since_its_claim(tmp_path):
    """Two runs claim the same empty ``out`` (each before loading its model): the one that locks second
    finds the other's fingerprint and refuses, so their rows never mix."""
    out = tmp_path / "out"
    claim_rows(out, {"sampling": {"temperature": 0.7}}, "evaluate")
    claim_rows(out, {"sampling": {"temperature": 0.1}}, "evaluate")
    written_rows(out, {"sampling": {"temperature": 0.7}}, 2)
    before = snapshot(out)
    with pytest.raises(BadInput, match=r"another run recorded other settings .*sampling.temperature: 0.7 -> 0.1"):
        ShardWriter(out, fingerprint={"sampling": {"temperature": 0.1}}).__enter__()
    assert snapshot(out) == before
    ShardWriter(out).__enter__()  # and the lock was let go


def test_evaluate_overwrite_while_another_evaluation_writes_deletes_nothing(tmp_path, capsys):
    """The probe: ``evaluate.run overwrite=true`` into an output another evaluation is writing was refused
    only after it had deleted that evaluation's rows (which then exited 0 with metrics over 4 of 6)."""
    from evaluate.run import main

    questions = tmp_path / "heldout.jsonl"
    questions.write_text(
        "".join(json.dumps({"id": f"q{i}", "question": "Who?", "golden_answers": ["x"]}) + "\n" for i in range(6))
    )
    trajectories = tmp_path / "eval" / "api" / "trajectories" / "heldout"
    written_rows(trajectories, {"writer": "evaluate.run", "sampling": {"temperature": 0.0}}, 4)
    before = snapshot(trajectories)
    argv = [
        "name=api",
        f"out_root={tmp_path / 'eval'}",
        f"questions=[{questions}]",
        "teacher.base_url=http://127.0.0.1:9/v1",
        "teacher.model=m",
        f"search.index={tmp_path / 'no-index'}",
        "overwrite=true",
    ]
    with ShardWriter(trajectories):  # the other evaluation, resumed and still writing
        assert main(argv) == 2
        assert snapshot(trajectories) == before
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is being written by another process" in err, err
