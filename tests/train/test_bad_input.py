"""``train.run`` on bad input: incomplete or cut checkpoints are refused naming the file, corrupt sets
are named, and the command line turns each into one line and exit 2. Nothing here trains a step."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coa.io import write_json
from coa.model import MARKER
from train.checkpoint import load_model, load_tokenizer, save_checkpoint
from train.run import command

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("COA_DEBUG", raising=False)


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.fixture
def checkpoint(tmp_path, tiny_dir):
    """A checkpoint as train.run leaves it: weights, tokenizer, marker, metrics beside them."""
    tok = load_tokenizer(tiny_dir, tiny_dir)
    folder = save_checkpoint(load_model(tiny_dir, tok), tok, tmp_path / "sft1")
    write_json(folder / "metrics.json", {"stage": "sft1"})
    return folder


def test_a_checkpoint_without_its_marker_is_refused(checkpoint, sets_dir, tmp_path, capsys):
    (checkpoint / MARKER).unlink()  # e.g. copied before its save finished
    assert command(["stage=sft2", f"model={checkpoint}", f"sets_dir={sets_dir}", f"runs_dir={tmp_path / 'runs'}"]) == 2
    assert one_line(capsys) == (
        f"train: {checkpoint}: incomplete checkpoint (no {MARKER}: its save was interrupted "
        "or it was not written by train.run); run the stage that writes it again\n"
    )
    assert not (tmp_path / "runs" / "sft2").exists()


def test_cut_weights_in_another_model_folder_are_named(tiny_dir, sets_dir, tmp_path, capsys):
    copy = Path(shutil.copytree(tiny_dir, tmp_path / "downloaded"))
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert command(["stage=sft2", f"model={copy}", f"sets_dir={sets_dir}", f"runs_dir={tmp_path / 'runs'}"]) == 2
    assert one_line(capsys).startswith(f"train: {weights}: truncated or not a safetensors file (")


def test_a_corrupt_set_is_named(tiny_dir, tmp_path, capsys):
    sets = tmp_path / "sets"
    sets.mkdir()
    for name in ("coa.parquet", "cot.parquet"):
        (sets / name).write_bytes(b"PAR1 cut")
    assert command(["stage=sft2", f"model={tiny_dir}", f"sets_dir={sets}", f"runs_dir={tmp_path / 'runs'}"]) == 2
    assert one_line(capsys).startswith(f"train: {sets / 'coa.parquet'}: not a readable parquet file (")


@pytest.mark.slow
def test_the_module_command_line_is_one_line_and_exit_2(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k != "COA_DEBUG"}, "PYTHONPATH": str(ROOT), "COA_PARAMS": "none"}
    proc = subprocess.run(
        [sys.executable, "-m", "train.run", "stage=sft3", "model=/nowhere"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr == "train: model=/nowhere: no checkpoint there (no config.json)\n"
