"""When-to-act rates on hand-built outcomes with known answers, and the one-step driver on held-out
decision points (a scripted engine that searches exactly where search was needed)."""

from __future__ import annotations

import polars as pl
import pytest

from coa.agent import Generation
from evaluate.when_to_act import continue_one_step, heldout_points, model_folder, when_rates


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
        search = request.episode.question["question"].startswith("needed")
        text = "I should check.\n<search>q</search>" if search else "I know it.\n</think>\n<answer>x</answer>"
        return Generation(text, "stop", token_ids=self.tok.encode(text, add_special_tokens=False), eos=not search)

    async def close(self):
        pass


@pytest.fixture
def points_files(tmp_path):
    prefix = [
        {"kind": "prefill", "text": "<think>\n", "query": None, "doc_ids": []},
        {"kind": "model", "text": "Let me think. ", "query": None, "doc_ids": []},
    ]
    rows = [
        {
            "id": f"p{i}",
            "question_id": f"q{i}",
            "question": f"{d} question {i}",
            "direction": d2,
            "chat_prompt": "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n",
            "prefix": prefix,
            "format": "search_r1",
        }
        for i, (d, d2) in enumerate(
            [("needed", "act"), ("sufficed", "no_act"), ("needed", "act"), ("sufficed", "no_act")]
        )
    ]
    pl.DataFrame(rows).write_parquet(tmp_path / "pairs.parquet")
    pl.DataFrame({"id": ["q0", "q1", "q2"]}).write_parquet(tmp_path / "eval_questions.parquet")  # q3 is trained on
    return tmp_path / "pairs.parquet", tmp_path / "eval_questions.parquet"


def test_one_step_on_heldout_points(points_files, tokenizer):
    points = heldout_points(*points_files)
    assert [(p["question_id"], p["label"]) for p in points] == [("q0", "needed"), ("q1", "sufficed"), ("q2", "needed")]
    outcomes = continue_one_step(points, Oracle(tokenizer), tokenizer, max_tokens=64)
    assert outcomes == ["search", "answer", "search"]
    got = when_rates([p["label"] for p in points], outcomes, resamples=100)
    assert got["search_when_needed"]["rate"] == 1.0 and got["over_trigger"]["rate"] == 0.0
    assert model_folder("sft2", "runs/train") == "runs/train/sft2" and model_folder("base", "x") == "base"
