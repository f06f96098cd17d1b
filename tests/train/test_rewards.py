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
    assert result.attempted == 5 and result.failed == 0


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


def test_the_echo_term_penalises_a_wrong_answer_that_repeats_an_unnamed_query_of_its_own():
    from train.config import RL2Config
    from train.rewards import echo_term, reward_terms

    def trajectory(queries, answer):
        calls = "".join(f"{FMT.search_call(q)}{FMT.wrap_observation('result 1: x')}" for q in queries)
        return f"<think>\n{calls}\n</think>\n\n{FMT.answer_text(answer)}"

    bridge = "Where was the composer of the opera Maria Golovin born?"
    comparison = "Is Gian Carlo Menotti older than Samuel Barber?"
    cases = [
        (bridge, ["Maria Golovin opera", "Gian Carlo Menotti"], "Gian Carlo Menotti.", -0.5),  # the last query
        (bridge, ["Gian Carlo Menotti", "Menotti birthplace"], "gian carlo menotti", -0.5),  # an earlier one
        (bridge, ["Maria Golovin opera", "Gian Carlo Menotti"], "Cadegliano", 0.0),  # searched for nothing
        (bridge, ["Maria Golovin"], "Maria Golovin", 0.0),  # the question names it
        (comparison, ["Gian Carlo Menotti", "Samuel Barber"], "Samuel Barber", 0.0),  # one of the compared two
        (bridge, ["Maria Golovin opera", "Gian Carlo"], "Gian Carlo Menotti", 0.0),  # a query, not the answer
        (bridge, ["Gian Carlo Menotti"], "", 0.0),  # no answer
    ]
    texts = [trajectory(queries, answer) for _, queries, answer, _ in cases]
    values = echo_term([""] * len(cases), question=[q for q, *_ in cases], trajectory=texts, format="autocoa")
    assert values == [expected for *_, expected in cases]
    off, on = make_rewards("em", 1.0, "autocoa"), make_rewards("em", 1.0, "autocoa", echo_penalty=0.25)
    assert [f.func.__name__ for f in on] == [f.func.__name__ for f in off] + ["echo_term"]
    birthplace = ["Cadegliano"]
    echo = texts[0]
    right_echo = trajectory(["Maria Golovin opera", "Cadegliano"], "Cadegliano")  # searched, then right: no penalty
    golds = [birthplace, ["Gian Carlo Menotti"], birthplace, birthplace]
    terms = reward_terms(on, [echo, echo, texts[2], right_echo], golds, questions=[bridge] * 4)
    assert terms[0] == [0.0, 1.0, 1.0, 1.0] and terms[-1] == [-0.25, 0.0, 0.0, 0.0]
    partial_credit = reward_terms(
        make_rewards("f1", 1.0, "autocoa", echo_penalty=1.0), [echo], [["Menotti"]], questions=[bridge]
    )
    assert 0 < partial_credit[0][0] < 1 and partial_credit[-1] == [pytest.approx(partial_credit[0][0] - 1.0)]
    with pytest.raises(ValueError, match="rl2.echo_penalty must be >= 0"):
        RL2Config(echo_penalty=-0.1)
