"""Outputs that survive a crash, resuming, checkpoints in the trained dtype, sets in the wrong format."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

import coa.config
import train.run
from coa.model import MARKER
from train.checkpoint import StepLog, load_model, load_tokenizer, save_checkpoint
from train.data import read_pairs, sft_dataset
from train.run import main

SMALL = {"max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1}


@pytest.fixture
def runs(tmp_path, monkeypatch, sets_dir):
    section = {"runs_dir": str(tmp_path / "runs"), "sets_dir": str(sets_dir), "sft1": SMALL, "sft2": SMALL}
    # the fixture's sets are in the autocoa format
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"format": "autocoa", "train": section}))
    monkeypatch.setattr(coa.config, "PARAMS_FILE", str(tmp_path / "params.yaml"))
    return tmp_path / "runs"


def _weights(folder):
    return load_file(folder / "model.safetensors")


def test_saved_weights_are_the_trained_weights_exactly(tmp_path, tiny_dir):
    tok = load_tokenizer(tiny_dir, tiny_dir)
    model = load_model(tiny_dir, tok)
    with torch.no_grad():  # an update as small as RL's: bf16 would round it back to the start weights
        norm = model.model.norm.weight
        start = norm.clone()
        norm.add_(1e-4)
    assert torch.equal(norm.to(torch.bfloat16), start.to(torch.bfloat16))  # the old bf16 save lost it
    save_checkpoint(model, tok, tmp_path / "ckpt")
    saved = _weights(tmp_path / "ckpt")
    state = model.state_dict()
    assert saved and all(torch.equal(saved[k], state[k]) for k in saved)
    assert not torch.equal(saved["model.norm.weight"], start)


@pytest.mark.slow
def test_a_crash_while_saving_leaves_the_previous_output_intact(runs, tiny_dir, monkeypatch):
    tok = load_tokenizer(tiny_dir, tiny_dir)
    previous = save_checkpoint(load_model(tiny_dir, tok), tok, runs / "sft2")
    before = {p.name: p.read_bytes() for p in previous.iterdir()}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(train.run, "write_metrics", crash)  # the weights are written, the metrics are not
    with pytest.raises(OSError, match="disk full"):
        main(["stage=sft2", f"model={tiny_dir}"])
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert sorted(p.name for p in runs.iterdir()) == ["sft2", "sft2.work"]  # no half-written temporary


def test_a_stage_refuses_to_start_from_an_incomplete_checkpoint(runs, tiny_dir):
    tok = load_tokenizer(tiny_dir, tiny_dir)
    sft1 = save_checkpoint(load_model(tiny_dir, tok), tok, runs / "sft1")
    with open(sft1 / "model.safetensors", "r+b") as f:
        f.truncate(100)
    with pytest.raises(
        ValueError,
        match=r"runs/sft1: incomplete checkpoint: model\.safetensors \(truncated\); run "
        r"the stage that writes it again",
    ):
        main(["stage=sft2"])
    (sft1 / MARKER).unlink()
    with pytest.raises(
        ValueError,
        match=rf"runs/sft1: incomplete checkpoint \(no {MARKER}: its save was "
        "interrupted",
    ):
        main(["stage=sft2"])


class CrashAtStep2(StepLog):
    """Dies as the second optimizer step begins: after TRL saved checkpoint-1 (save_steps=1)."""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 1:
            raise RuntimeError("killed")
        super().on_step_begin(args, state, control, **kwargs)


@pytest.mark.slow
def test_resume_continues_from_the_last_saved_step(runs, tiny_dir, monkeypatch):
    two_steps = ["stage=sft2", f"model={tiny_dir}", "sft2.max_steps=2", "save_steps=1"]
    main(two_steps + [f"runs_dir={runs}/straight"])
    with monkeypatch.context() as m:
        m.setattr(train.run, "StepLog", CrashAtStep2)
        with pytest.raises(RuntimeError, match="killed"):
            main(two_steps)
    assert not (runs / "sft2").exists() and (runs / "sft2.work/checkpoint-1/trainer_state.json").exists()
    with pytest.raises(FileNotFoundError, match=r"sft1: resume=true but .*sft1\.work holds no complete checkpoint-N"):
        main(["stage=sft1", f"model={tiny_dir}", "resume=true"])
    # the checkpoints were made with another learning rate: continuing them would mix two runs
    with pytest.raises(
        ValueError,
        match=r"resume=true, but the checkpoints in .*sft2\.work were made with another "
        r"configuration \(settings\.learning_rate: .* -> 0\.5\); run without resume",
    ):
        main(two_steps + ["resume=true", "sft2.learning_rate=0.5"])
    metrics = main(two_steps + ["resume=true"])[0]
    assert metrics["resumed_from_step"] == 1 and metrics["steps"] == 1  # only the missing step was run
    assert (runs / "sft2/steps.csv").read_text().count("\n") == 3  # header + the steps before and after
    straight, resumed = _weights(runs / "straight/sft2"), _weights(runs / "sft2")
    assert all(torch.allclose(straight[k], resumed[k], rtol=0, atol=1e-6) for k in straight)
    # a finished stage keeps no resume checkpoint (each is weights + optimizer state, 3x the model on disk)
    assert not [*(runs / "sft2.work").glob("checkpoint-*"), *(runs / "straight/sft2.work").glob("checkpoint-*")]


def test_training_on_a_set_in_another_format_fails_naming_file_and_formats(runs, sets_dir, tiny_dir, tokenizer):
    with pytest.raises(
        ValueError,
        match=r"pairs\.parquet: the set is in format 'autocoa' but training is configured "
        r"for format 'search_r1' \(params\.yaml top-level `format`\)",
    ):
        read_pairs(sets_dir / "pairs.parquet", fmt="search_r1")
    with pytest.raises(
        ValueError,
        match=r"coa\.parquet: the set is in format 'autocoa' but training is configured "
        r"for format 'search_r1'",
    ):
        sft_dataset(tokenizer, [sets_dir / "coa.parquet"], False, 4096, "sft2", fmt="search_r1")
    with pytest.raises(
        ValueError,
        match=r"the set is in format 'autocoa' but training is configured for format "
        r"'search_r1'",
    ):
        main(["stage=sft2", f"model={tiny_dir}", "format=search_r1"])
    assert read_pairs(sets_dir / "pairs.parquet", fmt="autocoa")


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_report_to_tensorboard_says_what_is_missing(runs, tiny_dir):
    with pytest.raises(
        ValueError,
        match=r"report_to=tensorboard needs the tensorboard package \(pip install "
        r"tensorboard\); or report_to=none",
    ):
        main(["stage=sft2", f"model={tiny_dir}", "report_to=tensorboard"])


def test_work_folder_is_cleared_unless_resuming(runs, tiny_dir):
    stale = runs / "sft2.work/checkpoint-7"
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text("{}")
    main(["stage=sft2", f"model={tiny_dir}"])
    assert not stale.exists()


@pytest.mark.slow
def test_a_killed_rl_run_resumes_without_repeating_finished_steps(tmp_path, monkeypatch, tiny_dir, index_dir):
    """rl1 on the tiny policy (hf rollouts), killed as its second step begins: the re-run with resume=true
    runs only the missing step and the stage's step log holds each step once."""
    rl = {
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "num_generations": 2,
        "questions": None,
        "question_limit": 2,
        "engine": "hf",
        "temperature": 1.0,
        "observation_tokens": 16,
    }
    runs = tmp_path / "runs"
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "train": {"runs_dir": str(runs), "rl1": rl, "prompt": {"demonstrations": False}},
                "search": {"index": str(index_dir), "topk": 1, "max_tokens": 16},
            }
        )
    )
    monkeypatch.setattr(coa.config, "PARAMS_FILE", str(tmp_path / "params.yaml"))
    argv = ["stage=rl1", f"model={tiny_dir}", "save_steps=1"]
    with monkeypatch.context() as m:
        m.setattr(train.run, "StepLog", CrashAtStep2)
        with pytest.raises(RuntimeError, match="killed"):
            main(argv)
    assert not (runs / "rl1").exists() and (runs / "rl1.work/checkpoint-1/trainer_state.json").exists()
    metrics = main(argv + ["resume=true"])[0]
    assert metrics["resumed_from_step"] == 1 and metrics["steps"] == 1  # step 1 was not run again
    steps = [line.split(",")[0] for line in (runs / "rl1/steps.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2"]
    # the rollout log holds each step's 2 rollouts once: the first run's step, then the resumed one's
    logged = [json.loads(line)["step"] for line in (runs / "rl1/rollouts.jsonl").read_text().splitlines()]
    assert logged == [0, 0, 1, 1]
    assert not list((runs / "rl1.work").glob("checkpoint-*"))  # a finished stage keeps no resume checkpoint
