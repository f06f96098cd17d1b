"""``python -m curate.run`` on bad input: one line naming the file and column, exit 2, for every step."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import coa.config
from curate.run import main
from tests.curate.helpers import EVAL_SETS

ARGS = [f"eval_sets=[{','.join(EVAL_SETS)}]"]


@pytest.fixture(autouse=True)
def _no_params(monkeypatch):
    monkeypatch.setattr(coa.config, "PARAMS_FILE", "none")
    monkeypatch.delenv("COA_DEBUG", raising=False)


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("step", ["analyze", "sets"])
def test_a_corrupt_scores_table_is_named(step, tmp_path, capsys):
    scores = tmp_path / "score" / "scores.parquet"
    scores.parent.mkdir()
    scores.write_bytes(b"PAR1 cut short")
    assert main([f"step={step}", f"in={scores.parent}", f"out={tmp_path / step}", *ARGS]) == 2
    assert one_line(capsys).startswith(f"curate: {scores}: not a readable parquet file (")
    assert not (tmp_path / step).exists()


def test_a_shard_without_a_needed_column_is_named(tmp_path, capsys):
    shard = tmp_path / "synth" / "part-0.parquet"
    shard.parent.mkdir()
    pq.write_table(pa.table({"id": ["a"], "question": ["q?"]}), shard)
    assert main(["step=score", f"in={shard.parent}", f"out={tmp_path / 'score'}", *ARGS]) == 2
    assert one_line(capsys) == f"curate: {shard}: missing column 'format' (needed: format)\n"


def test_a_missing_input_is_named(tmp_path, capsys):
    assert main(["step=score", f"in={tmp_path / 'nowhere'}", f"out={tmp_path / 'score'}", *ARGS]) == 2
    assert one_line(capsys) == f"curate: input not found: {tmp_path / 'nowhere'}\n"


def test_a_corrupt_review_table_is_named(real_file, tmp_path, capsys):
    score = tmp_path / "score"
    assert main(["step=score", f"in={real_file}", f"out={score}", *ARGS]) == 0
    review = tmp_path / "review.parquet"
    review.write_bytes(b"not parquet")
    assert main(["step=sets", f"in={score}", f"out={tmp_path / 'sets'}", "n_pairs=0", f"review={review}", *ARGS]) == 2
    assert one_line(capsys).startswith(f"curate: {review}: not a readable parquet file (")
