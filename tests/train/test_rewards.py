"""GRPO rewards: correctness on the extracted answer plus the format term."""
from __future__ import annotations

import doctest

import pytest

import train.rewards
from train.rewards import correctness, format_term, make_rewards
from tests.train.conftest import FMT

GOLD = ["Gian Carlo Menotti"]
OBS = FMT.wrap_observation('result 1: "Maria Golovin"\nMaria Golovin is an opera by Gian Carlo Menotti.')
GOOD = (f"<think>\n{FMT.search_call('Maria Golovin composer')}{OBS}Menotti.\n</think>\n\n"
        f"{FMT.answer_text('Gian Carlo Menotti')}")
WRONG = GOOD.replace("\\boxed{Gian Carlo Menotti}", "\\boxed{Samuel Barber}")
PARTIAL = GOOD.replace("\\boxed{Gian Carlo Menotti}", "\\boxed{Menotti}")
UNCLOSED = "<think>\nMenotti wrote it. \\boxed{Gian Carlo Menotti}"  # right answer, no </think>
CUT = f"<think>\n{FMT.search_call('Maria Golovin')}"  # stopped by the budget mid-trajectory


def _reward(texts, metric="em", penalty=1.0):
    funcs = make_rewards(metric, penalty, "autocoa")
    per_func = [f(completions=[""] * len(texts), golden_answers=[GOLD] * len(texts), trajectory=texts) for f in funcs]
    return [sum(values) for values in zip(*per_func)]


def test_default_reward_is_binary_em_plus_format_penalty():
    assert _reward([GOOD, WRONG, PARTIAL, UNCLOSED, CUT]) == [1.0, 0.0, 0.0, 0.0, -1.0]


def test_f1_and_the_papers_scorer_are_available():
    assert _reward([PARTIAL], metric="f1") == [pytest.approx(0.5)]
    # AutoCoA's own scorer gives 0 to an answer without </think>, so no format term is needed
    assert _reward([GOOD, UNCLOSED, PARTIAL], metric="autocoa_lenient", penalty=0) == [1.0, 0.0, 0.0]
    assert len(make_rewards("em", 0, "autocoa")) == 1


def test_the_whole_trajectory_is_scored_not_the_decoded_completion():
    # TRL's `completions` lack the prefill; the rollout's `trajectory` has it
    completion = GOOD.removeprefix("<think>\n")
    assert format_term([completion], trajectory=[GOOD]) == [0.0]
    assert format_term([completion]) == [-1.0]  # without the trajectory the <think> is missing
    assert correctness([completion], [GOLD]) == [1.0]


def test_docstring_examples():
    result = doctest.testmod(train.rewards)
    assert result.attempted == 2 and result.failed == 0
