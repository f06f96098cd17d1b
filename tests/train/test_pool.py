"""``train.pool`` on the real index and the stage's own reward functions, with a scripted engine whose
rewards differ on one question, are all 0 on another and all 1 on a third: only the first is kept."""

from __future__ import annotations

import json

import pytest

from coa.agent import Generation
from coa.config import build
from coa.questions import DEFAULT_QUESTIONS, load_questions
from train import pool as policy_module  # where the probe looks its policies up
from train.pool import PoolConfig, select


class ScriptedEngine:
    """Fake engine (no model answers on cue): searches once, then answers. Question 0 of the pool is answered
    right by every other rollout, question 1 never, question 2 always."""

    name = "scripted"

    def __init__(self, tokenizer, ids: list[str]):
        self.tok, self.ids, self.rollouts = tokenizer, ids, {}

    async def generate(self, request):
        ep = request.episode
        qid = ep.question["id"]
        if ep.n_actions == 0:
            self.rollouts.setdefault(qid, []).append(id(ep))
            text = f"<search>{ep.question['question']}</search>"
        else:
            k = self.rollouts[qid].index(id(ep))
            right = {0: k % 2 == 0, 1: False, 2: True}[self.ids.index(qid)]
            text = f"</think>\n<answer>{ep.question['golden_answers'][0] if right else 'Nobody In Particular'}</answer>"
        return Generation(text, "stop", token_ids=self.tok.encode(text, add_special_tokens=False), eos=True)

    async def close(self):
        pass


def test_the_pool_keeps_the_questions_whose_rewards_differ(tmp_path, index_dir, tokenizer, monkeypatch):
    questions = load_questions(DEFAULT_QUESTIONS, limit=3)
    engine = ScriptedEngine(tokenizer, [q["id"] for q in questions])
    monkeypatch.setattr(policy_module, "load_policy", lambda model, *a: (engine, tokenizer))
    out = tmp_path / "pool.jsonl"
    cfg = build(
        PoolConfig,
        {
            "stage": "rl2",
            "model": "start",
            "candidates": 3,
            "samples": 4,
            "questions": str(DEFAULT_QUESTIONS),
            "out": str(out),
        },
        "test",
    )
    from train import pool

    monkeypatch.setattr(pool, "train_config", lambda stage: _train(index_dir))
    summary = select(cfg)
    assert summary["candidates"] == 3 and summary["kept"] == 1
    assert summary["all_zero"] == 1 and summary["all_alike_nonzero"] == 1
    assert summary["rewards"][questions[0]["id"]] == [1.0, 0.0, 1.0, 0.0]  # F1 of gold vs a wrong name
    assert summary["rewards"][questions[1]["id"]] == [0.0] * 4 and summary["rewards"][questions[2]["id"]] == [1.0] * 4
    kept = load_questions(out)  # the stage reads the file as its pool
    assert kept == [questions[0]]
    assert json.loads(out.with_suffix(".json").read_text())["kept"] == 1


def test_a_pool_with_nothing_to_learn_from_is_an_error(tmp_path, index_dir, tokenizer, monkeypatch):
    monkeypatch.setattr(policy_module, "load_policy", lambda model, *a: (WrongEngine(tokenizer), tokenizer))
    from train import pool

    monkeypatch.setattr(pool, "train_config", lambda stage: _train(index_dir))
    out = tmp_path / "pool.jsonl"
    cfg = build(
        PoolConfig,
        {
            "stage": "rl2",
            "model": "start",
            "candidates": 3,
            "samples": 2,
            "questions": str(DEFAULT_QUESTIONS),
            "out": str(out),
        },
        "test",
    )
    with pytest.raises(ValueError, match="nothing for GRPO to learn from"):
        select(cfg)
    assert not out.exists()


class WrongEngine(ScriptedEngine):
    """Fake engine: answers every question wrong without searching."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer, [])

    async def generate(self, request):
        text = "</think>\n<answer>Nobody In Particular</answer>"
        return Generation(text, "stop", token_ids=self.tok.encode(text, add_special_tokens=False), eos=True)


def _train(index_dir):
    from train.config import TrainConfig

    return build(
        TrainConfig,
        {
            "stage": "rl2",
            "format": "search_r1",
            "search": {"index": str(index_dir)},
            "rl2": {"reward_metric": "f1", "temperature": 1.0},
        },
        "test",
    )
