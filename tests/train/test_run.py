"""The CLI: params.yaml + key=value, the stage chain, checkpoints and metrics files, clear errors."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch
import yaml
from safetensors import safe_open

import coa.config
from coa.model import MARKER, has_native_bf16, model_label
from tests.train.conftest import small_train_section
from train.config import ScheduleConfig
from train.run import main


@pytest.fixture
def params(tmp_path, monkeypatch, sets_dir, index_dir):
    """A params.yaml ``train`` section with one-step stages on the tiny model's scale."""
    small = {"max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 4096}
    section = small_train_section(tmp_path / "runs", sets_dir, small, {**small, "question_limit": 2})
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "format": "autocoa",
                "train": section,
                "other_stage": {"x": 1},
                "search": {"index": str(index_dir), "topk": 1, "max_tokens": 16},
            }
        )
    )
    monkeypatch.setattr(coa.config, "PARAMS_FILE", str(path))
    return tmp_path / "runs"


def _check_checkpoint(out, start, data_key):
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "metrics.json",
        "steps.csv",
        "train_args.json",
        MARKER,
    } <= names
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]  # no temporaries left beside it
    with safe_open(out / "model.safetensors", "pt") as f:  # saved as trained: fp32 weights
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 1 and metrics["seconds_per_step"] > 0 and metrics["peak_rss_gb"] > 0
    assert metrics["start_model"] == model_label(start) and metrics["data"][data_key] > 0
    rows = list(csv.DictReader(open(out / "steps.csv")))
    assert len(rows) == 1 and rows[0]["step"] == "1" and "loss" in rows[0]
    assert 0 < float(rows[0]["peak_rss_gb"]) <= metrics["peak_rss_gb"]  # the peak as of that step
    return metrics, rows[0]


@pytest.mark.slow
def test_the_five_stages_chain_through_the_cli(params, tiny_dir):
    runs = params
    main(["stage=sft1", f"model={tiny_dir}", "sft1.alpha=0.5"])
    args = json.loads((runs / "sft1" / "train_args.json").read_text())
    assert args["stage"]["alpha"] == 0.5 and args["trl"]["cpo_alpha"] == 0.5  # key=value over params.yaml
    # params.yaml; bf16 mixed precision where the hardware has bf16 units (fp32 weights either way)
    assert args["trl"]["max_steps"] == 1 and args["trl"]["bf16"] is has_native_bf16()
    _check_checkpoint(runs / "sft1", tiny_dir, "pairs")
    main(["stage=sft2"])  # starts from runs/sft1 by default
    _check_checkpoint(runs / "sft2", runs / "sft1", "trained_tokens")
    main(["stage=sft3"])
    metrics, _ = _check_checkpoint(runs / "sft3", runs / "sft2", "observation_tokens")
    assert metrics["data"]["trained_tokens"] == metrics["data"]["model_tokens"] + metrics["data"]["observation_tokens"]
    results = main(["stage=rl", "rl.max_steps=2", "rl.rl1_fraction=0.5"])  # one rl1 step, then one rl2 step
    assert [r["stage"] for r in results] == ["rl1", "rl2"]
    _, row = _check_checkpoint(runs / "rl1", runs / "sft3", "questions")
    assert {"reward", "rewards/correctness/mean", "agent/actions", "agent/env_masked_fraction"} <= set(row)
    _, row = _check_checkpoint(runs / "rl2", runs / "rl1", "questions")
    assert "agent/search_calls" in row


def test_a_stage_without_its_previous_checkpoint_says_what_to_run(params):
    with pytest.raises(
        FileNotFoundError,
        match=r"sft3 starts from the sft2 checkpoint .*runs/sft2, which does not "
        r"exist: run `python -m train\.run stage=sft2` first",
    ):
        main(["stage=sft3"])
    with pytest.raises(FileNotFoundError, match="model=/nowhere: no checkpoint there"):
        main(["stage=sft3", "model=/nowhere"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["stage=sft1", "sft1.lr=1"], r"^train\.sft1: unknown key 'lr'; valid keys: learning_rate"),
        (["stage=sft4"], r"^train: stage must be one of sft1, sft2, sft3, rl1, rl2, rl; got 'sft4'$"),
        (["stage=sft1", "sft1.loss=ipo"], r"^train: sft1\.loss must be 'paper' or 'dpo', got 'ipo'$"),
        (
            ["sft2.learning_rate=fast"],
            r"^train\.sft2\.learning_rate: expected a float \(e\.g\. 0\.5, 5e-5\), got 'fast'$",
        ),
        (["report_to=wandb"], r"^train: report_to must be one of none, tensorboard; got 'wandb'$"),
    ],
)
def test_bad_settings_exit_2_with_the_valid_choices(params, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and re.search(message, capsys.readouterr().err.strip())


def test_the_papers_schedule():
    assert ScheduleConfig(max_steps=96).split() == (80, 16) and ScheduleConfig().split() == (0, 0)
    assert ScheduleConfig(max_steps=10, rl1_fraction=1.0).split() == (10, 0)


@pytest.mark.slow
def test_lora_checkpoints_are_merged_plain_models(params, tiny_dir):
    from transformers import AutoModelForCausalLM

    main(["stage=sft2", f"model={tiny_dir}", "lora_r=4", "lora_alpha=8", "sft2.learning_rate=1e-2"])  # a float
    out = params / "sft2"
    assert not (out / "adapter_config.json").exists()
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    start = AutoModelForCausalLM.from_pretrained(tiny_dir).state_dict()
    assert trained.keys() == start.keys()  # no lora_A/lora_B left: the adapter was merged
    changed = [k for k in start if not torch.equal(trained[k], start[k])]
    assert any("self_attn" in k for k in changed) and "model.norm.weight" not in changed


def test_a_stage_sets_its_own_lora_rank():
    """``rl2.lora_r`` overrides the top-level rank for that stage only; RL's adapter has no dropout (the
    engine samples from the merged weights without it)."""
    from train.common import peft_config
    from train.config import RL2Config, SFT2Config, TrainConfig

    cfg = TrainConfig(lora_r=4, lora_dropout=0.1)
    assert peft_config(cfg, SFT2Config()).r == 4 and peft_config(cfg, SFT2Config()).lora_dropout == 0.1
    assert peft_config(cfg, SFT2Config(lora_r=0)) is None
    rl = peft_config(TrainConfig(), RL2Config(lora_r=16))
    assert (rl.r, rl.lora_dropout) == (16, 0.0)
    # full fine-tuning unless a rank is set (the embedded default's rl2 sets 16)
    assert peft_config(TrainConfig(), RL2Config(lora_r=None)) is None


@pytest.mark.slow
def test_one_rl_budget_splits_between_the_rl_stages(params, tiny_dir, searching_dir):
    """The frontier's key: train.rl.max_steps split by rl1_fraction for stage=rl1 / stage=rl2 (the DVC stages);
    a stage given no steps passes its start on, and each stage counts the real search queries it used."""
    runs = params
    real_only = ["rl.max_steps=1", "rl.rl1_fraction=0"]
    rl1 = main(["stage=rl1", f"model={tiny_dir}", *real_only])[0]
    assert rl1["steps"] == 0 and rl1["skipped"] == "0 of the 1 RL steps (rl.rl1_fraction=0)"
    assert rl1["real_search_queries"] == 0
    rl2 = main(["stage=rl2", f"model={searching_dir}", "search.max_tokens=96", *real_only])[0]
    assert rl2["steps"] == 1 and "skipped" not in rl2
    queries = [
        q for line in (runs / "rl2/rollouts.jsonl").read_text().splitlines() for q in json.loads(line)["queries"]
    ]
    assert rl2["real_search_queries"] == len(queries) > 0  # the taught model searched in its rollouts
    sim_only = main(["stage=rl2", f"model={tiny_dir}", "rl.max_steps=1", "rl.rl1_fraction=1"])[0]
    assert sim_only["steps"] == 0 and sim_only["real_search_queries"] == 0


def test_only_the_real_environment_counts_search_queries(tmp_path, tokenizer):
    """A simulated search (rl1: the environment opens the observation, the policy writes it) and the budget
    message are no real search query; each search the real environment answered is one."""
    from types import SimpleNamespace

    from coa.agent import Budget, record_observation, start_episode
    from coa.formats import get_format
    from train.rollout import _record
    from train.run import real_search_queries

    fmt, budget = get_format("search_r1"), Budget(max_actions=1)
    episodes = {
        tools: start_episode("Who wrote Maria Golovin?", tokenizer, tools=tools) for tools in ("simulated", "real")
    }
    for ep in episodes.values():
        record_observation(ep, fmt, "Maria Golovin", [], budget)
        record_observation(ep, fmt, "Menotti", [], budget)  # past max_actions: the budget message
    trainer = SimpleNamespace(
        accelerator=SimpleNamespace(process_index=0, num_processes=1),
        args=SimpleNamespace(output_dir=str(tmp_path)),
        state=SimpleNamespace(global_step=0),
    )
    _record(trainer, list(episodes.values()), [[1], [1]], first=True)
    lines = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert [r["real_search_queries"] for r in lines] == [0, 1]
    assert real_search_queries(tmp_path) == 1
