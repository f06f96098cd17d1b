"""Smoke test on the real SmolLM2-135M: every stage trains a step from the previous one and saves."""

from __future__ import annotations

import json
import math

import pytest
import yaml

import coa.config
from tests.train.conftest import small_train_section
from coa.model import model_label
from train.checkpoint import load_tokenizer
from train.run import main


@pytest.mark.model
@pytest.mark.slow
def test_every_stage_on_the_real_model(tmp_path, monkeypatch, sets_dir, index_dir, model_dir):
    small = {"max_steps": 1, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 2, "max_length": 1024}
    rl = {"max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "question_limit": 1}
    section = small_train_section(tmp_path / "runs", sets_dir, small, rl)
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "format": "autocoa",
                "train": section,
                "search": {"index": str(index_dir), "topk": 1, "max_tokens": 24, "max_actions": 1},
            }
        )
    )
    monkeypatch.setattr(coa.config, "PARAMS_FILE", str(tmp_path / "params.yaml"))
    results = [
        m
        for stage in ("sft1", "sft2", "sft3", "rl")
        for m in main([f"stage={stage}", "rl.max_steps=2", "rl.rl1_fraction=0.5"])
    ]
    assert [r["stage"] for r in results] == ["sft1", "sft2", "sft3", "rl1", "rl2"]
    previous = model_label(model_dir)  # the embedded model, by name
    for r in results:
        out = tmp_path / "runs" / r["stage"]
        assert r["steps"] == 1 and r["start_model"] == previous and math.isfinite(r["train_loss"])
        assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 30
        load_tokenizer(out, model_dir)  # the chain keeps the base tokenizer and chat template
        previous = model_label(out)
        print(f"{r['stage']}: {r['seconds_per_step']:.1f} s/step, peak RSS {r['peak_rss_gb']:.2f} GB")
