"""``llm_judge`` (``coa.judge``): a strict verdict, one request per distinct (question, prediction), a cache that
later runs read back, and no request where EM or an empty prediction already settles the score."""

from __future__ import annotations

import json

import pytest

from coa.judge import JudgeConfig, LLMJudge, judge_prompt, parse_verdict
from tests.fixtures.chat_api import FakeReasoningAPI

Q = "Who was born first, D. Ross Lederman or Stefan Ruzowitzky?"


@pytest.mark.parametrize(
    "reply, verdict",
    [("yes", 1.0), ("Yes.", 1.0), (" NO\n", 0.0), ("no!", 0.0), ("Yes, because", None), ("maybe", None), ("", None)],
)
def test_the_verdict_is_parsed_strictly(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_the_prompt_holds_the_question_every_gold_and_the_prediction():
    prompt = judge_prompt(Q, ["David Ross Lederman", "D. Ross Lederman"], "Lederman")
    assert Q in prompt and "David Ross Lederman | D. Ross Lederman" in prompt and "Predicted answer: Lederman" in prompt


def test_distinct_predictions_are_asked_once_and_cached_on_disk(tmp_path):
    replies = {"Lederman": "Yes.", "Edward Dmytryk": "no", "1937": "I think so"}

    def script(prompt: str) -> str:
        return next(reply for prediction, reply in replies.items() if f"Predicted answer: {prediction}\n" in prompt)

    items = [
        (Q, ["David Ross Lederman"], "Lederman"),
        (Q, ["David Ross Lederman"], "Edward Dmytryk"),
        (Q, ["David Ross Lederman"], "Lederman"),  # the same answer again (RL samples repeat): no second request
        (Q, ["David Ross Lederman"], "1937"),
        (Q, ["David Ross Lederman"], "david ross lederman"),  # EM 1: settled without asking
        (Q, ["David Ross Lederman"], None),  # no answer: 0 without asking
        (Q, ["David Ross Lederman"], "Stefan Ruzowitzky"),  # the question's other name: 0 without asking
    ]
    cache = tmp_path / "verdicts.jsonl"
    with FakeReasoningAPI(script=script) as api:
        # overlap off: "Edward Dmytryk" and "1937" share no word with the gold and would settle at 0
        judge = LLMJudge(JudgeConfig(base_url=api.url, model=api.model, cache=str(cache), overlap=None))
        assert judge.scores(items) == [1.0, 0.0, 1.0, None, 1.0, 0.0, 0.0]
        assert len(api.requests) == 3 and judge.stats()["no_verdict"] == 1
        assert all(r["temperature"] == 0.0 and r["max_tokens"] <= 4 for r in api.requests)
        again = LLMJudge(JudgeConfig(base_url=api.url, model=api.model, cache=str(cache), overlap=None))
        assert again.scores(items) == [1.0, 0.0, 1.0, None, 1.0, 0.0, 0.0]
        assert len(api.requests) == 3  # every verdict came from the file
    assert len(cache.read_text().splitlines()) == 3


def test_another_judge_model_does_not_reuse_the_verdicts(tmp_path):
    cache = tmp_path / "verdicts.jsonl"
    with FakeReasoningAPI(script=lambda prompt: "yes") as api:
        LLMJudge(JudgeConfig(base_url=api.url, model=api.model, cache=str(cache))).scores([(Q, ["x"], "y")])
        other = LLMJudge(JudgeConfig(base_url=api.url, model="another", cache=str(cache)))
        assert other.key(Q, "y") not in other.cache


def test_a_cache_line_it_did_not_write_is_named(tmp_path):
    cache = tmp_path / "verdicts.jsonl"
    cache.write_text(json.dumps({"key": "a", "verdict": 1.0}) + "\nnot json\n")
    with pytest.raises(ValueError, match=r"verdicts.jsonl: line 2 is not a verdict"):
        LLMJudge(JudgeConfig(base_url="http://127.0.0.1:9/v1", cache=str(cache)))


def test_settings_are_checked():
    with pytest.raises(ValueError, match="judge.base_url"):
        JudgeConfig(base_url="127.0.0.1:8171")
    with pytest.raises(ValueError, match="judge.overlap"):
        JudgeConfig(overlap=1.0)
    with pytest.raises(ValueError, match="needs judge.base_url"):
        LLMJudge(JudgeConfig())


def test_what_settles_without_asking_is_what_the_hand_check_found_the_small_judge_gets_wrong():
    """Each case is a held-out answer of the default run or the real teacher that the 1.5B judge said yes to
    (docs/experiments/real_llm.md#the-judge), settled as the hand check did; right answers are still asked."""
    settled = LLMJudge.settled
    where = "The 22nd AVN Awards took place in what Nevada county?"
    assert settled(where, ["Clark County"], "22nd AVN Awards") == 0.0  # only the question's words
    assert settled(where, ["Clark County"], "Nevada county") == 0.0  # ... half of them in the gold: still 0
    assert settled(where, ["Clark County"], "Las Vegas") == 0.0  # no word of the gold
    assert settled(where, ["Clark County"], "Las Vegas", overlap=None) is None  # ... which a strong judge reads
    assert settled(Q, ["David Ross Lederman"], "D. Ross Lederman") is None  # most of its words in the gold: asked
    assert (
        settled("Who passed away first Robert Graves or Dino Buzzati ?", ["Dino Buzzati-Traverso"], "Dino Buzzati")
        is None
    )
    assert settled("Who won the 1981 CART PPG series?", ["Rick Ravon Mears"], "Rick Mears") is None
    assert settled("Who won the 1981 CART PPG series?", ["Rick Ravon Mears"], "and") == 0.0  # no content word
    public = "Is Rutgers University or Brown University public?"
    assert settled(public, ["Rutgers University"], "Rutton University") == 0.0  # half of either side shared
    armory = "Where was the armory at which Model 1840 flintlock musket was produced located?"
    assert settled(armory, ["city of Springfield, Massachusetts"], "Springfield Armory") == 0.0
    assert settled(armory, ["city of Springfield, Massachusetts"], "Springfield, Massachusetts") is None
    assert settled("What did Ken Annakin direct?", ["documentary"], "documentary film") is None  # all of the gold
    family = "Mountbatten-Windsor is a dynasty resulting in what family?"
    assert settled(family, ["Mountbatten family"], "the House of Windsor") == 0.0
    assert settled(family, ["Mountbatten family"], "yes") == 0.0  # a bare yes to a question that is not yes/no


def test_a_yes_or_no_gold_is_settled_by_the_leading_word_or_a_thing_the_question_names():
    settled = LLMJudge.settled
    bands = "Are the bands Tiger Please and Black Rebel Motorcycle Club from the same country?"
    assert settled(bands, ["no"], "No, they are from different countries.") == 1.0
    assert settled(bands, ["no"], "Yes, both are Welsh.") == 0.0
    assert settled("Is the Virgilia found in Africa?", ["yes"], "Virgilia") == 0.0
    assert settled("Are Peter Balakian and James Der Derian both teachers?", ["yes"], "Peter Balakian") == 0.0
    wars = "Were Operation Dragoon and the Battle of Cold Harbor fought during different wars?"
    assert (
        settled(wars, ["yes"], "Operation Dragoon and the Battle of Cold Harbor were fought during different wars")
        is None
    )  # a restatement of the question: asked
