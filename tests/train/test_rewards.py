"""GRPO rewards: correctness on the extracted answer plus the format term."""

from __future__ import annotations

import doctest

import pytest

import train.rewards
from tests.train.conftest import FMT
from train.rewards import correctness, format_term, make_rewards

GOLD = ["Gian Carlo Menotti"]
OBS = FMT.wrap_observation('result 1: "Maria Golovin"\nMaria Golovin is an opera by Gian Carlo Menotti.')
GOOD = (
    f"<think>\n{FMT.search_call('Maria Golovin composer')}{OBS}Menotti.\n</think>\n\n"
    f"{FMT.answer_text('Gian Carlo Menotti')}"
)
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
    assert result.attempted == 4 and result.failed == 0


def test_reward_trend_compares_the_last_quarter_with_the_first():
    from train.checkpoint import reward_trend

    trend = reward_trend([0.1, 0.1, 0.2, 0.1, 0.3, 0.3, 0.4, 0.5])
    assert (trend["first_quarter"], trend["last_quarter"], trend["difference"]) == (0.1, 0.45, 0.35)
    assert trend["ci95"][0] <= 0.35 <= trend["ci95"][1] and trend["ci95"][0] > 0  # a clear rise
    flat = reward_trend([0.2, 0.4] * 8)
    assert flat["ci95"][0] < 0 < flat["ci95"][1]  # noise: the interval holds zero
    assert "note" in reward_trend([0.1, 0.2])
    short = reward_trend([0.1, 0.2, 0.3, 0.5, 0.6, 0.7])  # one step per quarter: a difference, no interval
    assert short["difference"] == 0.6 and "ci95" not in short and "no interval" in short["note"]


def test_the_evidence_term_rewards_the_share_of_evidence_the_search_returned():
    from coa.questions import evidence_ids
    from coa.trajectory import retrieved_ids, segment
    from train.rewards import evidence_term, reward_terms

    question = {
        "metadata": {
            "question_decomposition": [{"evidence_id": "p7"}, {"evidence_id": "p3"}],
            "gold_paragraph_ids": ["p3", "p9"],
        }
    }
    assert evidence_ids(question) == ["p7", "p3", "p9"] and evidence_ids({"metadata": {}}) == []
    segments = [
        segment("model", "search one"),
        segment("observation", "r1", doc_ids=["p3", "p1"]),
        segment("model", "search two"),
        segment("observation", "r2", doc_ids=["p1", "p9"]),
        segment("model", "answer", doc_ids=["p7"]),  # a model segment's ids are not what the environment returned
    ]
    assert retrieved_ids(segments) == ["p3", "p1", "p9"]
    assert evidence_term(["", ""], [evidence_ids(question)] * 2, [retrieved_ids(segments), []], weight=0.3) == [
        pytest.approx(0.2),
        0.0,
    ]
    off, on = make_rewards("em", 1.0, "autocoa"), make_rewards("em", 1.0, "autocoa", evidence_reward=0.3)
    assert [f.func.__name__ for f in on] == [f.func.__name__ for f in off] + ["evidence_term"]
    terms = reward_terms(on, [GOOD], [GOLD], evidence=[evidence_ids(question)], retrieved=[retrieved_ids(segments)])
    assert terms == [[1.0], [0.0], [pytest.approx(0.2)]]


@pytest.mark.parametrize("value", [-0.1, float("nan")])
def test_a_negative_evidence_reward_is_refused(value):
    from train.config import RL2Config

    with pytest.raises(ValueError, match="rl2.evidence_reward must be >= 0"):
        RL2Config(evidence_reward=value)


def test_the_answer_gate_pays_the_evidence_term_only_in_proportion_to_the_answer():
    from train.config import RL2Config
    from train.rewards import reward_terms

    texts = [GOOD, PARTIAL, WRONG]  # f1 1, partial, 0: every rollout found the same half of the evidence
    evidence, retrieved = [["p1", "p2"]] * 3, [["p1", "x"]] * 3
    ungated = make_rewards("f1", 1.0, "autocoa", evidence_reward=0.4)
    gated = make_rewards("f1", 1.0, "autocoa", evidence_reward=0.4, evidence_gate="answer")
    assert [f.func.__name__ for f in gated] == [f.func.__name__ for f in ungated]  # logged under the same name
    f1_term, _, plain = reward_terms(ungated, texts, [GOLD] * 3, evidence=evidence, retrieved=retrieved)
    assert plain == [pytest.approx(0.2)] * 3  # whatever the answer
    assert 0 < f1_term[1] < 1 and f1_term[2] == 0.0
    *_, answer_gated = reward_terms(gated, texts, [GOLD] * 3, evidence=evidence, retrieved=retrieved)
    assert answer_gated == [pytest.approx(0.2 * f) for f in f1_term]
    assert answer_gated[0] == pytest.approx(0.2) and answer_gated[2] == 0.0
    with pytest.raises(ValueError, match="evidence_gate must be one of none, answer; got 'right'"):
        make_rewards("f1", 1.0, "autocoa", evidence_reward=0.4, evidence_gate="right")
    with pytest.raises(ValueError, match="rl2.evidence_gate must be one of none, answer"):
        RL2Config(evidence_gate="right")
