"""Bad input fails naming the file and the column; the CLI reads params + key=value (``in=`` too)."""

import json
import subprocess
import sys

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coa.trajectory import write_trajectories
from curate import score
from curate.config import load
from curate.run import main
from tests.curate.helpers import EVAL_SETS, ROOT, config, searched, traj


@pytest.fixture
def shard(questions, tmp_path):
    return write_trajectories(
        tmp_path / "in" / "part-000.parquet", [traj(q, searched("x y", q["golden_answers"][0])) for q in questions[:3]]
    )


def _rewrite(path, name, column):
    table = pq.read_table(path)
    i = table.column_names.index(name)
    pq.write_table(table.set_column(i, name, column) if column is not None else table.remove_column(i), path)


def test_missing_column_names_file_and_column(shard, tmp_path):
    _rewrite(shard, "segments", None)
    with pytest.raises(ValueError, match=rf"{shard}: missing column 'segments'"):
        score.run(config(tmp_path / "out", input=[str(shard.parent)]))


def test_wrong_type_names_file_and_column(shard, tmp_path):
    _rewrite(shard, "golden_answers", pa.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match=rf"{shard}: column 'golden_answers' has type String, expected List\(String\)"):
        score.run(config(tmp_path / "out", input=[str(shard.parent)]))


def test_unknown_format_preset_names_the_shard(shard, questions, tmp_path):
    bad = write_trajectories(shard.parent / "part-001.parquet", [traj(questions[5], searched("q", "a"))])
    _rewrite(bad, "format", pa.array(["chatml"]))
    with pytest.raises(ValueError, match=rf"{bad}: column 'format' holds unknown format preset 'chatml'"):
        score.run(config(tmp_path / "out", input=[str(shard.parent)]))


def test_repeated_ids_name_both_files(shard, tmp_path):
    again = shard.parent / "part-001.parquet"
    again.write_bytes(shard.read_bytes())  # e.g. two synthesis runs written into one folder
    with pytest.raises(ValueError, match=rf"{shard} and {again}: column 'id' repeats"):
        score.run(config(tmp_path / "out", input=[str(shard.parent)]))


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="input not found: .*nowhere"):
        score.run(config(tmp_path / "out", input=[str(tmp_path / "nowhere")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="folder holds no"):
        score.run(config(tmp_path / "out", input=[str(tmp_path / "empty")]))


def test_config_keys():
    assert load(["in=a.parquet", "n_coa=7"]).input == ["a.parquet"]
    assert load(["in=[a,b]"]).input == ["a", "b"]
    with pytest.raises(ValueError, match="unknown key 'n_coaa'; valid keys: step, input, out"):
        load(["n_coaa=7"])
    with pytest.raises(ValueError, match="step must be one of"):
        load(["step=train"])
    with pytest.raises(ValueError, match="minhash_perms .* multiple of lsh_bands"):
        load(["minhash_perms=10", "lsh_bands=4"])


def test_cli_step_writes_parquet_and_metrics(shard, tmp_path):
    out = tmp_path / "out"
    main(["step=score", f"in={shard.parent}", f"out={out}", f"eval_sets=[{','.join(EVAL_SETS)}]"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] == pl.read_parquet(out / "scores.parquet").height == 3
    assert set(metrics["by_mode"]) == {"coa"}


@pytest.mark.slow
def test_module_entry_point(shard, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "curate.run",
        "step=score",
        f"in={shard}",
        f"out={tmp_path / 'o'}",
        f"eval_sets=[{EVAL_SETS[0]}]",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "scored 3 trajectories" in done.stdout
    bad = subprocess.run(cmd + ["bogus=1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "unknown key 'bogus'" in bad.stderr


def test_later_steps_check_the_scores_table(shard, tmp_path):
    from curate import analyze

    with pytest.raises(FileNotFoundError, match="scores not found: .*run step=score first"):
        analyze.run(config(tmp_path / "a", step="analyze", input=[str(tmp_path / "nothing")]))
    with pytest.raises(ValueError, match=rf"{shard}: missing column 'pred'; expected the score step"):
        analyze.run(config(tmp_path / "a", step="analyze", input=[str(shard)]))
