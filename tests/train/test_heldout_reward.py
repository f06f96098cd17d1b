"""The held-out reward beside the training reward on the same steps (train.heldout_reward): the callback's
schedule and log rows on a scripted trainer, the held-out set refused where it overlaps the pool, and one
real GRPO run of the tiny model whose steps.csv carries ``reward`` and ``heldout_reward`` in the same rows."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState

from train.checkpoint import StepLog, write_metrics
from train.heldout_reward import HeldoutReward, heldout_questions


class ScriptedTrainer:
    """What the callback uses of GRPOTrainer: ``_metrics`` (averaged into the next log row, then cleared) and
    ``log``; each row also carries a training ``reward`` when training metrics were logged, as TRL's would."""

    def __init__(self, step_log: StepLog):
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.state, self.step_log = TrainerState(max_steps=5), step_log

    def log(self, logs: dict) -> None:
        logs = {**logs, **{k: sum(v) / len(v) for k, v in self._metrics["train"].items()}}
        self._metrics["train"].clear()
        self.step_log.on_log(None, self.state, TrainerControl(), logs=logs)


def probe_of(trainer):
    """Reward 0.1 x the step on the held-out set, 0.2 x the step on the pool: the values say when they were taken."""

    def probe(_, questions):
        scale = 0.1 if questions[0]["id"].startswith("h") else 0.2
        return [{"reward": scale * trainer.state.global_step, "correctness": 1.0, "search_calls": 2} for _ in questions]

    return probe


def test_measured_every_k_steps_and_at_the_last_in_the_row_of_the_step(tmp_path):
    log = StepLog()
    trainer = ScriptedTrainer(log)
    sets = {"heldout": [{"id": "h1"}, {"id": "h2"}], "pool": [{"id": "p1"}]}
    callback = HeldoutReward(trainer, sets, every=2, probe=probe_of(trainer))
    callback.on_train_begin(None, trainer.state, TrainerControl())
    asked = []
    for step in range(1, 6):
        trainer.state.global_step = step
        trainer._metrics["train"]["reward"].append(step / 100)  # this step's training reward
        control = TrainerControl(should_log=step % 4 == 0)  # logging_steps 4
        callback.on_step_end(None, trainer.state, control)
        asked.append(control.should_log)
        if control.should_log:
            trainer.log({"loss": 1.0})
    assert [h["step"] for h in callback.history] == [0, 2, 4, 5]  # before any update, every 2 steps, the last
    assert asked == [False, True, False, True, True]  # step 2 and 5 are off the logging grid: a log is asked for
    rows = {r["step"]: r for r in log.rows}
    assert rows[0] == {
        "step": 0,
        "heldout_reward": 0.0,
        "heldout_correctness": 1.0,
        "heldout_search_calls": 2.0,
        "pool_reward": 0.0,
        "pool_correctness": 1.0,
        "pool_search_calls": 2.0,
        "peak_rss_gb": rows[0]["peak_rss_gb"],
    }
    assert rows[2]["reward"] == pytest.approx(0.015) and rows[2]["heldout_reward"] == pytest.approx(0.2)
    assert rows[4]["heldout_reward"] == pytest.approx(0.4) and rows[4]["pool_reward"] == pytest.approx(0.8)
    assert "heldout_reward" in rows[5] and rows[5]["reward"] == pytest.approx(0.05)
    write_metrics(tmp_path, "rl2", log, {})
    table = list(csv.DictReader(open(tmp_path / "steps.csv")))
    assert {"reward", "heldout_reward", "pool_reward"} <= set(table[0])
    assert [(r["step"], r["heldout_reward"] != "", r["reward"] != "") for r in table] == [
        ("0", True, False),
        ("2", True, True),
        ("4", True, True),
        ("5", True, True),
    ]


def test_a_resumed_run_has_its_start_row_already():
    trainer = ScriptedTrainer(StepLog())
    trainer.state.global_step = 3
    callback = HeldoutReward(trainer, {"heldout": [{"id": "h"}]}, every=2, probe=probe_of(trainer))
    callback.on_train_begin(None, trainer.state, TrainerControl())
    assert callback.history == [] and trainer.step_log.rows == []


def test_bad_settings_are_refused():
    trainer = ScriptedTrainer(StepLog())
    with pytest.raises(ValueError, match="heldout_reward_every must be >= 1 to measure"):
        HeldoutReward(trainer, {"heldout": [{"id": "h"}]}, every=0, probe=probe_of(trainer))
    with pytest.raises(ValueError, match=r"no questions in set\(s\) \['heldout'\]"):
        HeldoutReward(trainer, {"heldout": []}, every=1, probe=probe_of(trainer))
    with pytest.raises(TypeError, match="has no _metrics"):
        HeldoutReward(SimpleNamespace(), {"heldout": [{"id": "h"}]}, every=1, probe=probe_of(trainer))


def test_heldout_questions_must_not_be_in_the_pool(tmp_path):
    path = tmp_path / "held.jsonl"
    path.write_text(
        '{"id": "a", "question": "Who wrote X?", "golden_answers": ["B"]}\n'
        '{"id": "b", "question": "Where is Y?", "golden_answers": ["C"]}\n'
    )
    assert [q["id"] for q in heldout_questions(str(path), 0, [{"id": "z"}])] == ["a", "b"]
    assert [q["id"] for q in heldout_questions(str(path), 1, [{"id": "b"}])] == ["a"]  # the first 1 only
    with pytest.raises(ValueError, match=r"1 of its first 2 questions are in the stage's training pool \(first: 'b'\)"):
        heldout_questions(str(path), 0, [{"id": "b"}])
    with pytest.raises(ValueError, match="first: 'a'"):  # the same question under another id
        heldout_questions(str(path), 0, [{"id": "other", "question": "who wrote x? "}])


@pytest.mark.slow
def test_a_real_grpo_run_logs_both_rewards_on_the_same_steps(tiny_dir, model_dir, tmp_path):
    """The tiny random model, rl1 (simulated environment) for 2 steps, measured every step: the rows of
    steps.csv hold the step's training ``reward`` and the held-out reward measured on the live weights."""
    from coa.environment import SearchEnvConfig
    from coa.questions import DEFAULT_QUESTIONS, load_questions
    from tests.train.conftest import RL_PROMPT
    from train.checkpoint import load_model, load_tokenizer
    from train.config import RL1Config, TrainConfig
    from train.data import rl_dataset
    from train.rewards import make_rewards
    from train.rl import build_rl_trainer

    tok = load_tokenizer(tiny_dir, model_dir)
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps(q) + "\n" for q in load_questions(DEFAULT_QUESTIONS, limit=3)[1:]))
    # the stage's own settings register the callback (build_rl_trainer)
    stage = RL1Config(
        num_generations=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        max_steps=2,
        learning_rate=1e-3,
        temperature=1.0,
        questions=None,
        observation_tokens=16,
        engine="hf",  # vLLM's CPU attention has no kernel for the tiny model's head size
        lora_r=None,
        heldout_reward_every=1,
        heldout_questions=str(held),
        heldout_limit=2,
    )
    cfg = TrainConfig(format="autocoa", prompt=RL_PROMPT, search=SearchEnvConfig(max_tokens=32, topk=1))
    dataset = rl_dataset(tok, None, 1, RL_PROMPT)  # trains on the first question of the embedded set
    rewards = make_rewards(stage.reward_metric, stage.format_penalty, "autocoa")
    log = StepLog()
    trainer = build_rl_trainer(
        cfg, stage, load_model(tiny_dir, tok), tok, dataset, tmp_path / "work", callbacks=[log], reward_funcs=rewards
    )
    [callback] = [c for c in trainer.callback_handler.callbacks if isinstance(c, HeldoutReward)]
    trainer.train()
    assert [h["step"] for h in callback.history] == [0, 1, 2]
    assert [len(s) for s in callback.sets.values()] == [2, 1]  # 2 held-out questions; the 1-question pool
    rows = {r["step"]: r for r in log.rows}
    assert set(rows) == {0, 1, 2} and "reward" not in rows[0]
    for step in (1, 2):
        assert {"reward", "heldout_reward", "pool_reward"} <= set(rows[step]), rows[step]
        assert rows[step]["heldout_reward"] == callback.history[step]["heldout_reward"]
    assert trainer.model.training  # the probe put the policy back in training mode


def test_the_rl_settings_of_the_held_out_reward_are_checked():
    from train.config import RL1Config

    with pytest.raises(ValueError, match="heldout_reward_every must be >= 0"):
        RL1Config(heldout_reward_every=-1)
    with pytest.raises(ValueError, match="heldout_limit must be >= 1"):
        RL1Config(heldout_limit=0)
    assert RL1Config().heldout_reward_every == 0  # off unless asked: it costs a greedy batch per measurement
