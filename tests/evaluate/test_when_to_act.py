"""When-to-act rates on hand-built outcomes with known answers, and the one-step driver on held-out
decision points (a scripted engine that searches exactly where search was needed)."""

from __future__ import annotations

import polars as pl
import pytest

from coa.agent import Generation
from coa.formats import SEARCH_R1
from evaluate.when_to_act import by_tool, continue_one_step, heldout_points, model_folder, when_rates


def test_rates_from_labels_and_outcomes():
    labels = ["needed"] * 4 + ["sufficed"] * 5
    outcomes = ["search", "search", "search", "answer", "answer", "answer", "search", "neither", "answer"]
    got = when_rates(labels, outcomes, resamples=200)
    assert got["search_when_needed"]["rate"] == 0.75 and got["search_when_needed"]["n"] == 4
    assert got["under_trigger"]["rate"] == 0.25
    lo, hi = got["search_when_needed"]["ci95"]
    assert got["under_trigger"]["ci95"] == [round(1 - hi, 4), round(1 - lo, 4)]
    assert got["answer_when_sufficed"] == {**got["answer_when_sufficed"], "rate": 0.6, "n": 5}
    assert got["over_trigger"]["rate"] == 0.2
    empty = when_rates([], [])
    assert empty["over_trigger"] == {"rate": None, "n": 0, "ci95": None} and empty["under_trigger"]["rate"] is None


class Oracle:
    """Searches where the question says search was needed; answers elsewhere."""

    name = "oracle"

    def __init__(self, tokenizer):
        self.tok = tokenizer

    async def generate(self, request):
        question = request.episode.question["question"]
        search = question.startswith("needed")
        text = "I know it.\n</think>\n<answer>x</answer>"
        if search:  # the tool the question names: a generic call is forbidden as a search is
            tool = question.split()[1]
            text = "I should check.\n" + SEARCH_R1.tool_call(tool, {"query": "q"} if tool == "search" else {"doc": "D"})
        return Generation(text, "stop", token_ids=self.tok.encode(text, add_special_tokens=False), eos=not search)

    async def close(self):
        pass


@pytest.fixture
def points_files(tmp_path):
    prefix = [
        {"kind": "prefill", "text": "<think>\n", "query": None, "doc_ids": []},
        {"kind": "model", "text": "Let me think. ", "query": None, "doc_ids": []},
    ]
    answer = "I know it.\n</think>\n<answer>x</answer>"

    def call(tool):
        return "I should check.\n" + SEARCH_R1.tool_call(tool, {"query": "q"} if tool == "search" else {"doc": "D"})

    rows = [
        {
            "id": f"p{i}",
            "question_id": f"q{i}",
            "question": f"{d} {tool} question {i}",
            "direction": d2,
            "chosen": call(tool) if d2 == "act" else answer,
            "rejected": answer if d2 == "act" else call(tool),
            "chat_prompt": "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n",
            "prefix": prefix,
            "format": "search_r1",
        }
        for i, (d, d2, tool) in enumerate(
            [
                ("needed", "act", "search"),
                ("sufficed", "no_act", "search"),
                ("needed", "act", "search"),
                ("sufficed", "no_act", "search"),
                ("needed", "act", "open"),
                ("needed", "tool", "open"),
            ]
        )
    ]
    pl.DataFrame(rows).write_parquet(tmp_path / "pairs.parquet")
    # q3 is trained on; q5 is a pair between two tools, not a when-to-act point
    pl.DataFrame({"id": ["q0", "q1", "q2", "q4", "q5"]}).write_parquet(tmp_path / "eval_questions.parquet")
    return tmp_path / "pairs.parquet", tmp_path / "eval_questions.parquet"


def test_one_step_on_heldout_points(points_files, tokenizer):
    points = heldout_points(*points_files)
    assert [(p["question_id"], p["label"], p["tool"]) for p in points] == [
        ("q0", "needed", "search"),
        ("q1", "sufficed", "search"),
        ("q2", "needed", "search"),
        ("q4", "needed", "open"),
    ]
    results = continue_one_step(points, Oracle(tokenizer), tokenizer, max_tokens=64)
    assert results == [("search", "search"), ("answer", None), ("search", "search"), ("search", "open")]
    outcomes = [o for o, _ in results]
    got = when_rates([p["label"] for p in points], outcomes, resamples=100)
    assert got["search_when_needed"]["rate"] == 1.0 and got["over_trigger"]["rate"] == 0.0
    per_tool = by_tool(points, results, ["open", "search"], resamples=100)
    assert per_tool["open"]["search_when_needed"]["n"] == 1 and per_tool["open"]["search_when_needed"]["rate"] == 1.0
    assert per_tool["search"]["search_when_needed"]["n"] == 2 and per_tool["search"]["over_trigger"]["n"] == 1
    # a point of one tool where the model called another: not acting with that tool
    crossed = by_tool(points, [results[0], results[1], results[2], ("search", "search")], ["open"], resamples=100)
    assert crossed["open"]["search_when_needed"]["rate"] == 0.0
    assert model_folder("sft2", "runs/train") == "runs/train/sft2" and model_folder("base", "x") == "base"
