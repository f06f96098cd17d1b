"""coa.fingerprint: an output's rows belong to one configuration; a re-run resumes it or is refused."""

from __future__ import annotations

import json

import pytest

from coa.errors import BadInput
from coa.fingerprint import FINGERPRINT_FILE, claim_rows, differences, model_identity, record_fingerprint
from coa.io import LOCK_FILE

FP = {"model": {"weights": "abc"}, "sampling": {"temperature": 0.7}, "prompt": {"prefill": "<think>\n"}}


def claim(out, fp, writer, overwrite=False):
    """What a run does: claim before any work, record when the row writer makes the folder."""
    claim_rows(out, fp, writer, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    record_fingerprint(out, fp)


def test_claiming_creates_nothing_so_a_run_that_fails_first_leaves_nothing(tmp_path):
    claim_rows(tmp_path / "out", FP, "synth")
    assert not (tmp_path / "out").exists()


def test_a_new_output_records_its_fingerprint_and_a_same_rerun_resumes(tmp_path):
    out = tmp_path / "out"
    claim(out, FP, "synth")
    assert json.loads((out / FINGERPRINT_FILE).read_text()) == FP
    (out / "part-1.parquet").write_bytes(b"rows")
    claim(out, FP, "synth")  # same configuration: resume, rows kept
    assert (out / "part-1.parquet").read_bytes() == b"rows"


def test_another_configuration_is_refused_naming_every_differing_key(tmp_path):
    out = tmp_path / "out"
    claim(out, FP, "synth")
    (out / "part-1.parquet").write_bytes(b"rows")
    other = {**FP, "sampling": {"temperature": 0.2}, "model": {"weights": "def"}}
    with pytest.raises(
        BadInput,
        match=r"model\.weights: abc -> def; sampling\.temperature: 0\.7 -> 0\.2\).*"
        r"new out=… or pass overwrite=true",
    ):
        claim_rows(out, other, "synth")
    assert (out / "part-1.parquet").exists() and json.loads((out / FINGERPRINT_FILE).read_text()) == FP


def test_overwrite_removes_only_the_writers_own_files(tmp_path):
    out = tmp_path / "out"
    claim(out, FP, "evaluate")
    for name in ("part-1.parquet", "summary.json", "NOTES.md"):
        (out / name).write_text("x")
    claim(out, {**FP, "sampling": {"temperature": 0.0}}, "evaluate", overwrite=True)
    # .lock: the writer's lock, held while the rows were deleted (the row writer takes it next)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, "NOTES.md", FINGERPRINT_FILE]
    assert json.loads((out / FINGERPRINT_FILE).read_text())["sampling"] == {"temperature": 0.0}


def test_rows_without_a_fingerprint_are_not_resumed_silently(tmp_path):
    (tmp_path / "part-old.parquet").write_bytes(b"rows")
    with pytest.raises(BadInput, match="rows without a fingerprint"):
        claim_rows(tmp_path, FP, "synth")


def test_differences_lists_added_and_removed_leaves():
    assert differences({"a": {"b": 1}}, {"a": {"c": 1}}) == ["a.b: 1 -> absent", "a.c: absent -> 1"]


def test_model_identity_follows_the_weights_not_the_path(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
    assert model_identity(a) == model_identity(b)
    (b / "model.safetensors").write_bytes(b"retrained")
    assert model_identity(a) != model_identity(b)
    assert model_identity("gpt-4o-mini") == {"name": "gpt-4o-mini"}
