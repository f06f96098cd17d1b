"""Rendering, record ids and resolving reviewers: pure functions, no server."""

from __future__ import annotations

import pytest

from annotate.config import ReviewConfig
from annotate.pull import resolve
from annotate.render import FIELD_LIMIT, n_steps, pair_record, record_id, row_of, trajectory_record
from annotate.serve import ReviewStack, ReviewServerConfig
from coa.formats import AUTOCOA
from coa.trajectory import segment


def _row(observation: str = 'result 1: "Doc"\ntext', answer: str = "Paris") -> dict:
    segs = [
        segment("model", f"<think>\nLet me check.\n{AUTOCOA.search_call('capital of France')}"),
        segment("observation", AUTOCOA.wrap_observation(observation)),
        segment("model", f"It is Paris.\n</think>\n\\boxed{{{answer}}}"),
    ]
    return {
        "id": "abc123",
        "question": "What is the capital of France?",
        "golden_answers": ["Paris"],
        "segments": segs,
        "answer": answer,
        "format": "autocoa",
        "n_actions": 1,
        "finish_reason": "answer",
        "teacher": "t",
        "dataset": "hotpotqa",
        "em": 1.0,
        "f1": 1.0,
    }


def test_steps_in_order_and_the_verdict_as_suggestion():
    rec = trajectory_record(_row(), "em", 1.0, 1500)
    kinds = [(s["n"], s["kind"]) for s in rec["fields"]["steps"]["steps"]]
    assert kinds == [(1, "reasoning"), (2, "search"), (3, "observation"), (4, "reasoning"), (5, "answer")]
    assert rec["fields"]["steps"]["steps"][1]["text"] == "capital of France"
    assert rec["verdict"] == ("accept", "em", 1.0) and rec["metadata"]["n_actions"] == 1
    assert row_of(rec["id"]) == "abc123"


def test_long_observation_is_trimmed_under_the_field_limit():
    rec = trajectory_record(_row(observation="x" * 100_000), "em", 1.0, 1500)
    obs = rec["fields"]["steps"]["steps"][2]
    assert obs["folded"] and len(obs["text"]) <= 1500 and "more characters trimmed" in obs["text"]
    huge = trajectory_record(_row(observation="y" * 100_000), "em", 1.0, 100_000)
    assert sum(len(s["text"]) for s in huge["fields"]["steps"]["steps"]) < FIELD_LIMIT


def test_changed_content_changes_the_record_id_only():
    a, b = trajectory_record(_row(), "em", 1.0, 1500), trajectory_record(_row(answer="Lyon"), "em", 1.0, 1500)
    assert a["id"] != b["id"] and row_of(a["id"]) == row_of(b["id"]) == "abc123"
    assert a["id"] == trajectory_record(_row(), "em", 1.0, 99)["id"]  # rendering settings do not change ids
    assert record_id("r", 1) != record_id("r", 2)


def test_pair_shows_the_prefix_once_and_both_branches():
    prefix = "<think>\nI need to find out the capital.\n"
    row = {
        "id": "p1",
        "question": "Q?",
        "golden_answers": ["Paris"],
        "format": "autocoa",
        "prompt": f"system...user: Q?\nassistant: {prefix}",
        "chosen": AUTOCOA.search_call("capital"),
        "rejected": "Paris, surely.\n</think>\n\\boxed{Lyon}",
        "direction": "act",
        "decision_index": 0,
        "chosen_score": 1.0,
        "rejected_score": 0.0,
    }
    rec = pair_record(row, "em", 1.0, 1500)
    assert [s["text"] for s in rec["fields"]["prefix"]["steps"]] == ["I need to find out the capital."]
    cmp = rec["fields"]["comparison"]
    assert [(s["n"], s["kind"]) for s in cmp["chosen"]] == [(2, "search")]
    assert [(s["n"], s["kind"]) for s in cmp["rejected"]] == [(2, "reasoning"), (3, "answer")]
    assert rec["verdict"] == ("accept", "em", 1.0) and rec["metadata"]["direction"] == "act"
    # the last step number shown is the prefix's one plus the longer branch's two: the 'first bad step' bound
    assert rec["n_steps"] == n_steps(rec["fields"]) == 3
    assert trajectory_record(_row(), "em", 1.0, 1500)["n_steps"] == 5


@pytest.mark.parametrize(
    "votes,decision",
    [
        (["accept"], "accept"),
        (["accept", "accept", "reject"], "accept"),
        (["accept", "reject"], "reject"),
        (["accept", "swap"], "reject"),
        (["swap", "swap", "accept"], "swap"),
    ],
)
def test_majority_and_reject_wins_ties(votes, decision):
    assert resolve([{"decision": v} for v in votes])["decision"] == decision


def test_corrections_and_agreement():
    r = resolve(
        [
            {"decision": "accept", "corrected_answer": " Paris "},
            {"decision": "accept", "corrected_answer": "Paris"},
            {"decision": "reject", "corrected_answer": "Lyon", "first_bad_step": 3},
        ]
    )
    assert (r["decision"], r["corrected_answer"], r["first_bad_step"]) == ("accept", "Paris", 3)
    assert r["agreement"] == pytest.approx(1 / 3) and (r["n_accept"], r["n_reject"]) == (2, 1)
    tie = resolve([{"decision": "accept", "corrected_answer": "A"}, {"decision": "accept", "corrected_answer": "B"}])
    assert tie["corrected_answer"] is None and tie["correction_conflict"]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="batch_size must be 1..500"):
        ReviewConfig(batch_size=1000)
    with pytest.raises(ValueError, match="action must be one of"):
        ReviewConfig(action="publish")


def test_missing_stack_fails_naming_install(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"\.venv-nowhere/bin/python is missing: .* run ./install.sh"):
        ReviewStack(ReviewServerConfig(data_dir=str(tmp_path), venv=str(tmp_path / ".venv-nowhere"))).start()
