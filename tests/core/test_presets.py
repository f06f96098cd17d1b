"""presets/paper.yaml sets the paper's values consistently across every section (one switch)."""

from __future__ import annotations

import pytest

import coa.config
from coa.config import load_config


@pytest.fixture
def paper(monkeypatch):
    """Every section as a stage sees it with ``preset=paper`` over the project's params.yaml."""
    monkeypatch.setattr(coa.config, "PARAMS_FILE", "params.yaml")
    from curate.config import CurateConfig
    from evaluate.run import EvalConfig
    from synth.config import SynthConfig
    from train.config import TrainConfig

    return {
        name: load_config(cls, name, ["preset=paper"])
        for name, cls in (
            ("synth", SynthConfig),
            ("curate", CurateConfig),
            ("train", TrainConfig),
            ("evaluate", EvalConfig),
        )
    }


def test_one_format_and_one_prompt_everywhere(paper):
    formats = {name: cfg.format for name, cfg in paper.items() if hasattr(cfg, "format")}
    assert set(formats.values()) == {"autocoa"} and {"synth", "train", "evaluate"} <= set(formats)
    synth, train = paper["synth"], paper["train"]
    assert train.prompt.format == synth.prompt.format == "autocoa"
    # the RL prompt is the prompt the SFT data was written with
    assert (
        (train.prompt.demonstrations, train.prompt.prefill, train.prompt.system)
        == (synth.prompt.demonstrations, synth.prompt.prefill, synth.prompt.system)
        == (False, "<think>\n", None)
    )


def test_the_papers_sizes_rates_and_budgets(paper):
    curate, train, synth, evaluate = paper["curate"], paper["train"], paper["synth"], paper["evaluate"]
    assert (curate.n_pairs, curate.n_coa, curate.n_cot) == (1500, 5000, 1000)
    per_step = {
        s: getattr(train, s).per_device_train_batch_size * getattr(train, s).gradient_accumulation_steps
        for s in ("sft1", "sft2", "sft3", "rl1", "rl2")
    }
    assert per_step == {"sft1": 16, "sft2": 32, "sft3": 32, "rl1": 240, "rl2": 240}  # pairs / sequences / completions
    assert [getattr(train, s).learning_rate for s in ("sft1", "sft2", "sft3", "rl1", "rl2")] == [
        5e-6,
        5e-5,
        5e-5,
        7e-7,
        7e-7,
    ]
    assert all(
        getattr(train, s).num_train_epochs == 2 and getattr(train, s).max_steps == -1 for s in ("sft1", "sft2", "sft3")
    )
    assert (train.rl1.max_steps, train.rl2.max_steps, train.rl.split()) == (80, 16, (80, 16))
    assert train.on_empty_set == "error"
    for rl in (train.rl1, train.rl2):
        assert (rl.num_generations, rl.beta, rl.temperature) == (5, 0.001, 0.6)
        assert rl.per_device_train_batch_size % rl.num_generations == 0  # whole groups in every micro-batch
        assert per_step["rl1"] // rl.num_generations == 48  # prompts per step
    assert synth.search == train.search == evaluate.search  # one environment
    assert (synth.search.max_actions, synth.search.max_tokens, synth.search.topk) == (10, 8192, 3)
    assert curate.max_actions >= 10
    assert all(getattr(train, s).max_length > 8192 for s in ("sft1", "sft2", "sft3"))  # room for a full response


def test_without_the_preset_params_yaml_is_what_runs(monkeypatch):
    import yaml

    monkeypatch.setattr(coa.config, "PARAMS_FILE", "params.yaml")
    from train.config import TrainConfig

    params = yaml.safe_load(open("params.yaml"))
    train = load_config(TrainConfig, "train")
    assert params["preset"] is None and train.format == params["format"]
    assert train.sft2.max_steps == params["train"]["sft2"]["max_steps"]
