"""Data parallel on CPU: two processes (``accelerate launch --multi_gpu --num_processes 2``, the README's
one-node command) train SFT-2 exactly as one process with the same global batch, and only rank 0 writes outputs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

import coa.config
from coa.model import MARKER
from train.run import main

pytestmark = pytest.mark.slow


def _losses(folder):
    return [float(r["loss"]) for r in csv.DictReader(open(folder / "steps.csv"))]


def test_two_processes_train_as_one_and_only_rank_0_writes(tmp_path, monkeypatch, tiny_dir, sets_dir):
    # every step takes all 4 sequences of the set (one epoch), so the two runs see the same global batches
    # whichever order each sampler draws: one process accumulates 4 micro-batches of 1, two processes 2 each
    sft2 = {"max_steps": 2, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 4, "learning_rate": 1e-3}
    params = tmp_path / "params.yaml"
    sft2 |= {"max_length": 4096}
    params.write_text(
        yaml.safe_dump(
            {
                "format": "autocoa",
                "train": {"sets_dir": str(sets_dir), "sft2": sft2, "num_threads": 1, "gradient_checkpointing": False},
            }
        )
    )
    monkeypatch.setattr(coa.config, "PARAMS_FILE", str(params))
    main(["stage=sft2", f"model={tiny_dir}", f"runs_dir={tmp_path}/one"])

    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    # on CPU, accelerate needs --multi_gpu (its multi-process mode) with ACCELERATE_USE_CPU=1: gloo, one rank a core
    env = {**os.environ, "COA_PARAMS": str(params), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run(
        [
            accelerate,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "train.run",
            "stage=sft2",
            f"model={tiny_dir}",
            f"runs_dir={tmp_path}/two",
            "sft2.gradient_accumulation_steps=2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"stage"')]
    assert [r["stage"] for r in lines] == ["sft2"]  # one process reports (and writes) the stage

    one, two = tmp_path / "one/sft2", tmp_path / "two/sft2"
    assert (two / MARKER).exists() and not [p for p in two.parent.iterdir() if ".tmp-" in p.name]
    assert json.loads((two / "metrics.json").read_text())["steps"] == 2
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-4)
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    start = load_file(tiny_dir / "model.safetensors")
    assert any(not torch.equal(b[k], start[k]) for k in start.keys() & b.keys())  # it trained
