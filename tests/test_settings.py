"""One home per setting: every dataclass default is the embedded default run's value (``params.yaml``), and
``presets/paper.yaml`` alone turns it into the paper's settings (issue 36 §5)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

import coa.config
from coa.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"

# top-level keys of params.yaml that are no stage's section: the shared keys every section reads, and
# dvc.yaml's own (a foreach over synthesised question sets)
SHARED = ("format", "prompt", "search", "data", "preset")
NOT_A_SECTION = {
    "question_sets": "dvc.yaml's foreach of `questions@NAME` stages, read by no dataclass",
    "onpolicy_rounds": "dvc.yaml's foreach of `onpolicy@NAME` stages; synth.onpolicy's `rounds` (a shared field)",
}
# settings a run must give (no default); export's `format` is its output format, given on every command line
REQUIRED = {"export": ["to=trl_sft"], "publish": ["repo_id=org/name"]}

# the paper's settings that differ from the embedded default, as `preset=paper` built them before the
# dataclass defaults became params.yaml's values (captured then; `prompt.format` follows `format`)
PAPER = {
    "split": {"heldout": 200, "train": 0},
    "synth": {"format": "autocoa", "n": 4, "search.max_actions": 10, "search.max_tokens": 8192},
    "evaluate": {"format": "autocoa", "search.max_actions": 10, "search.max_tokens": 8192},
    "train": {
        "format": "autocoa",
        "search.max_actions": 10,
        "search.max_tokens": 8192,
        "rl.max_steps": 96,
        **{
            f"{s}.{k}": v
            for s, lr, gas in (("sft1", 5e-6, 16), ("sft2", 5e-5, 32), ("sft3", 5e-5, 32))
            for k, v in (
                ("learning_rate", lr),
                ("gradient_accumulation_steps", gas),
                ("max_length", 12288),
                *((("max_steps", -1),) if s != "sft2" else ()),  # sft2's default is already its epoch
                *((("num_train_epochs", 2.0),) if s != "sft1" else ()),  # sft1's default is already 2
            )
        },
        **{
            f"{s}.{k}": v
            for s, steps in (("rl1", 80), ("rl2", 16))
            for k, v in (
                ("learning_rate", 7e-7),
                ("max_steps", steps),
                ("num_generations", 5),
                ("per_device_train_batch_size", 5),
                ("gradient_accumulation_steps", 48),
                ("beta", 0.001),
                ("lora_r", 0),
            )
        },
        "rl2.temperature": 0.6,
        "rl1.question_limit": None,
        "rl2.question_limit": None,
    },
    "curate": {},
    "reward_probe": {},
}


def sections() -> dict:
    """Every entry point's (section, dataclass): each reads its section and the shared top-level keys."""
    from annotate.config import ReviewConfig
    from coa.questions import SplitConfig
    from curate.run import CurateRunConfig
    from data_cards.export import ExportConfig
    from data_cards.publish import PublishConfig
    from evaluate.ablation import AblationConfig
    from evaluate.checks import ChecksConfig
    from evaluate.fidelity import FidelityConfig
    from evaluate.frontier import FrontierConfig
    from evaluate.report import ReportConfig
    from evaluate.reward_probe import RewardProbeConfig
    from evaluate.run import EvalConfig
    from evaluate.when_to_act import WhenToActConfig
    from synth.config import SynthConfig
    from synth.onpolicy import OnPolicyConfig
    from synth.questions.config import QuestionsConfig
    from synth.serve import VLLMServerConfig
    from train.config import TrainConfig
    from train.pool import PoolConfig

    return {
        "split": SplitConfig,
        "synth": SynthConfig,
        "synth.serve": VLLMServerConfig,
        "onpolicy": OnPolicyConfig,
        "questions": QuestionsConfig,
        "curate": CurateRunConfig,
        "pool": PoolConfig,
        "train": TrainConfig,
        "evaluate": EvalConfig,
        "reward_probe": RewardProbeConfig,
        "fidelity": FidelityConfig,
        "checks": ChecksConfig,
        "ablation": AblationConfig,
        "frontier": FrontierConfig,
        "report": ReportConfig,
        "when_to_act": WhenToActConfig,
        "annotate": ReviewConfig,
        "export": ExportConfig,
        "publish": PublishConfig,
    }


def leaves(cfg) -> dict:
    """``{dotted key: value}`` of a built config; fields shared with a top-level path (data.questions) are
    compared as resolved paths (the default is absolute, params.yaml's relative to the project root)."""
    out = {}

    def walk(obj, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                out[prefix + f.name] = str((ROOT / value).resolve()) if f.metadata.get("shared") and value else value

    walk(cfg, "")
    return out


def load(cls, section: str, params: str, argv=()) -> dict:
    return leaves(load_config(cls, section, list(argv), params_file=params))


def test_every_top_level_key_of_params_yaml_is_a_section_or_shared():
    data = yaml.safe_load(PARAMS.read_text())
    unknown = set(data) - set(SHARED) - set(NOT_A_SECTION) - set(sections())
    assert not unknown, f"params.yaml keys no dataclass reads: {sorted(unknown)} (add them to sections())"


@pytest.mark.parametrize("section", sorted(sections()))
def test_params_yaml_is_the_dataclass_defaults(section, monkeypatch):
    """Loading params.yaml changes nothing: every value it sets (its section and the shared top-level keys
    format, prompt, search, data) is already the dataclass default."""
    monkeypatch.chdir(ROOT)
    cls = sections()[section]
    given = REQUIRED.get(section, [])
    defaults, params = load(cls, section, "none", given), load(cls, section, str(PARAMS), given)
    differ = {k: (defaults.get(k), v) for k, v in params.items() if defaults.get(k) != v}
    assert not differ, f"{section}: params.yaml value differs from the dataclass default (default, params): {differ}"


@pytest.mark.parametrize("section", sorted(PAPER))
def test_the_paper_preset_alone_gives_the_papers_settings(section, monkeypatch):
    """``preset=paper`` changes exactly the paper's values, the same over params.yaml or over the defaults."""
    monkeypatch.chdir(ROOT)
    cls = sections()[section]
    defaults = load(cls, section, "none")
    for params in ("none", str(PARAMS)):
        paper = load(cls, section, params, ["preset=paper"])
        changed = {k: v for k, v in paper.items() if defaults[k] != v and not k.endswith("prompt.format")}
        assert changed == PAPER[section], f"{section}, params file {params}: preset=paper changed {changed}"


def test_key_paper_values(monkeypatch):
    monkeypatch.setattr(coa.config, "PARAMS_FILE", "none")
    from train.config import TrainConfig

    train = load_config(TrainConfig, "train", ["preset=paper"])
    assert [getattr(train, s).learning_rate for s in ("sft1", "sft2", "sft3", "rl1", "rl2")] == [
        5e-6,
        5e-5,
        5e-5,
        7e-7,
        7e-7,
    ]
    assert (train.rl1.max_steps, train.rl1.num_generations, train.rl.split()) == (80, 5, (80, 16))
    assert train.format == train.prompt.format == "autocoa"


def test_building_a_config_leaves_the_callers_prompt_unchanged():
    """The prompt follows the one top-level ``format`` in a copy: a PromptConfig shared by two configs of
    different formats is not rewritten by the second (issue 36 §4: configs are not mutated after loading)."""
    from coa.prompts import PromptConfig
    from evaluate.fidelity import FidelityConfig
    from synth.config import SynthConfig
    from train.config import TrainConfig

    for cls in (TrainConfig, SynthConfig, FidelityConfig):
        shared = PromptConfig(format="autocoa")
        first, second = cls(format="autocoa", prompt=shared), cls(format="search_r1", prompt=shared)
        assert (shared.format, first.prompt.format, second.prompt.format) == ("autocoa", "autocoa", "search_r1"), cls
