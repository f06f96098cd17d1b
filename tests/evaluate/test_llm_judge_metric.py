"""``evaluate.run judge.base_url=…``: each answer the format extracts is judged, and metrics.json reports
``llm_judge`` (no verdict counted as wrong, and counted) beside EM."""

from __future__ import annotations

from coa.judge import JudgeConfig, LLMJudge
from coa.trajectory import segment
from evaluate.run import aggregate, judge_rows, score_rows
from tests.fixtures.chat_api import FakeReasoningAPI

Q = "Who was born first, D. Ross Lederman or Stefan Ruzowitzky?"


def row(answer: str) -> dict:
    text = f"<think>\nBorn 1894 and 1961.\n</think>\n<answer>{answer}</answer>"
    return {
        "question": Q,
        "golden_answers": ["David Ross Lederman"],
        "format": "search_r1",
        "segments": [segment("model", text)],
        "n_actions": 0,
    }


def test_the_judge_scores_the_extracted_answers_and_metrics_report_it():
    verdicts = {"D. Ross Lederman": "yes", "Edward Dmytryk": "no", "Lederman, I think": "It depends"}
    rows = [row(a) for a in (*verdicts, "David Ross Lederman")]
    with FakeReasoningAPI(
        script=lambda p: next(v for a, v in verdicts.items() if f"Predicted answer: {a}\n" in p)
    ) as api:
        scored = score_rows(rows)
        judge_rows(LLMJudge(JudgeConfig(base_url=api.url, model=api.model, overlap=None)), rows, scored)
        asked = [r["messages"][0]["content"] for r in api.requests]
    assert [s["llm_judge"] for s in scored] == [1.0, 0.0, None, 1.0]
    assert [s["em"] for s in scored] == [0.0, 0.0, 0.0, 1.0]
    assert len(asked) == 3 and all(Q in a and "David Ross Lederman" in a for a in asked)
    metrics = aggregate(scored, resamples=10)
    assert metrics["llm_judge"] == 0.5 and metrics["llm_judge_no_verdict"] == 1 and metrics["em"] == 0.25


def test_without_a_judge_metrics_have_no_llm_judge():
    assert "llm_judge" not in aggregate(score_rows([row("Stefan Ruzowitzky")]), resamples=10)
