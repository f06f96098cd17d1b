"""``rl1/rl2.reward_metric=llm_judge``: the judge's verdict on each extracted answer is the correctness reward
(no verdict scores 0), and the RL dataset carries the question text the judge needs."""

from __future__ import annotations

import pytest

from coa.judge import JudgeConfig
from coa.prompts import PromptConfig
from train.config import RL1Config
from train.data import rl_dataset
from train.rewards import make_rewards
from tests.fixtures.chat_api import FakeReasoningAPI

Q = "Who was born first, D. Ross Lederman or Stefan Ruzowitzky?"


def test_the_judge_is_the_correctness_reward():
    verdicts = {"D. Ross Lederman": "yes", "Edward Dmytryk": "no", "Lederman?": "unsure"}
    texts = [f"<think>\nx\n</think>\n<answer>{a}</answer>" for a in verdicts] + ["<think>\nno answer"]
    with FakeReasoningAPI(
        script=lambda p: next(v for a, v in verdicts.items() if f"Predicted answer: {a}\n" in p)
    ) as api:
        correctness, format_term = make_rewards(
            "llm_judge", 1.0, "search_r1", judge=JudgeConfig(base_url=api.url, model=api.model, overlap=None)
        )
        kwargs = dict(completions=texts, trajectory=texts, golden_answers=[["David Ross Lederman"]] * 4)
        assert correctness(question=[Q] * 4, **kwargs) == [1.0, 0.0, 0.0, 0.0]
        assert format_term(**kwargs) == [0.0, 0.0, 0.0, -1.0]
        assert len(api.requests) == 3  # the trajectory without an answer is 0 without asking


def test_llm_judge_needs_a_judge_url():
    with pytest.raises(ValueError, match="reward_metric=llm_judge needs judge.base_url"):
        RL1Config(reward_metric="llm_judge")
    assert RL1Config(reward_metric="llm_judge", judge=JudgeConfig(base_url="http://127.0.0.1:8171/v1"))


def test_the_rl_dataset_carries_the_question_text(tokenizer, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "q1", "question": "%s", "golden_answers": ["David Ross Lederman"]}\n' % Q)
    row = rl_dataset(tokenizer, str(questions), None, PromptConfig())[0]
    assert row["question"] == Q and Q in row["prompt"]
