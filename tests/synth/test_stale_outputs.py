"""Change the teacher or the sampling, then resume into the same ``out``: refused, naming what changed;
``overwrite=true`` replaces the rows; the same command resumes."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from coa.fingerprint import FINGERPRINT_FILE
from synth.run import main
from synth.shards import ShardWriter
from tests.fixtures.chat_api import FakeReasoningAPI

pytestmark = pytest.mark.slow


def teachers(out) -> set[str]:
    return {t for p in out.glob("*.parquet") for t in pq.read_table(p, columns=["teacher"])["teacher"].to_pylist()}


def test_change_the_teacher_then_resume(index_dir, model_dir, tmp_path, capsys):
    out = tmp_path / "coa"
    base = ["mode=coa", "limit=2", f"search.index={index_dir}", f"out={out}", "progress=false"]
    assert main([*base, "teacher.kind=reference"]) == 0
    assert teachers(out) == {"reference"}
    recorded = (out / FINGERPRINT_FILE).read_text()

    assert main([*base, "teacher.kind=reference", "temperature=0.2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "sampling.temperature: 0.7 -> 0.2" in err and "overwrite=true" in err, err

    with FakeReasoningAPI() as api:
        chat = [
            *base,
            "teacher.kind=llm",
            "teacher.api=chat",
            f"teacher.base_url={api.url}",
            f"teacher.model={api.model}",
            f"tokenizer={model_dir}",
        ]
        assert main(chat) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "teacher.kind: reference -> llm" in err and "teacher.model:" in err, err
        assert teachers(out) == {"reference"} and (out / FINGERPRINT_FILE).read_text() == recorded

        assert main([*chat, "overwrite=true"]) == 0
    assert teachers(out) == {api.model}
    assert json.loads((out / FINGERPRINT_FILE).read_text())["teacher"]["kind"] == "llm"


def test_a_refused_overwrite_deletes_nothing_while_another_run_writes(index_dir, tmp_path, capsys):
    """Issue 48: ``overwrite=true`` into an ``out`` that a resumed run was still writing was refused ("being
    written by another process") only after it had deleted that run's rows, fingerprint and summary."""
    out = tmp_path / "coa"
    base = ["mode=coa", "teacher.kind=reference", f"search.index={index_dir}", f"out={out}", "progress=false"]
    assert main([*base, "limit=4"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {FINGERPRINT_FILE, "summary.json"} <= set(before) and any(n.endswith(".parquet") for n in before)

    with ShardWriter(out, fingerprint=json.loads(before[FINGERPRINT_FILE])):  # `limit=8` resumed, still writing
        capsys.readouterr()
        assert main([*base, "limit=8", "temperature=0.1", "overwrite=true"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"out={out} is being written by another process" in err, err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    assert main([*base, "limit=4"]) == 0  # the output still resumes: nothing to do
    assert {p.name: p.read_bytes() for p in out.glob("*.parquet")} == {
        n: b for n, b in before.items() if n.endswith(".parquet")
    }
