"""bench/search_again.py: the decision after the first observation, cut from hand-built teacher rows, and the leads'
log-probabilities recomputed from one forward pass of the whole sequence."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from transformers import AutoModelForCausalLM

from coa.tokenize import encode, tokenize_segments

SPEC = importlib.util.spec_from_file_location(
    "search_again", Path(__file__).resolve().parents[2] / "bench" / "search_again.py"
)
search_again = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(search_again)

OBS = "\n\n<information>Doc 1(Title: Makdee) Makdee is a 2002 film directed by Vishal Bhardwaj.</information>\n\n"


def row(after: str, more: bool = False) -> dict:
    segments = [
        {"kind": "prefill", "text": "<think>\n"},
        {"kind": "model", "text": "I will search.\n</think>\n<search>Makdee director</search>"},
        {"kind": "observation", "text": OBS},
        {"kind": "model", "text": after},
    ]
    if more:
        segments += [{"kind": "observation", "text": OBS}, {"kind": "model", "text": "<answer>x</answer>"}]
    return {"prompt": "Question: who directed Makdee?", "segments": segments}


ROWS = [
    row(
        "<think>\nI still need Vishal Bhardwaj. I will search for it.\n</think>\n<search>Vishal Bhardwaj</search>", True
    ),
    row('<think>\nThe search results say: "Makdee is a 2002 film." So the answer is Vishal Bhardwaj.\n</think>'),
    row("<think>\nI read 1965 and 1970. The earlier is 1965, so the answer is 1965.\n</think>"),  # another decision
    {"prompt": "Question: q", "segments": [{"kind": "model", "text": "<answer>x</answer>"}]},  # no search
]


def test_the_decision_is_cut_after_the_first_observation_only_where_the_teacher_chose_between_the_two_leads():
    points = search_again.decision_points(ROWS)
    assert [p["searched_again"] for p in points] == [True, False]
    for p in points:
        assert p["segments"][-1]["text"] == OBS and len(p["segments"]) == 3
        assert p["opening"] == "<think>\n"


def test_a_leads_log_probability_is_the_sum_over_its_tokens_of_the_whole_sequences_forward(tiny_dir, tokenizer):
    (point, _) = search_again.decision_points(ROWS)
    odds = search_again.score(str(tiny_dir), [point])
    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    context = tokenize_segments(tokenizer, point["prompt"], point["segments"]).input_ids + encode(
        tokenizer, "<think>\n"
    )
    expected = []
    for lead in (search_again.SEARCH_LEAD, search_again.ANSWER_LEAD):
        ids = context + encode(tokenizer, lead)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        expected.append(sum(torch.log_softmax(logits[i - 1], -1)[ids[i]].item() for i in range(len(context), len(ids))))
    assert abs(odds[0] - (expected[0] - expected[1])) < 1e-4


def test_the_command_prints_one_line_per_model_and_refuses_a_set_without_a_decision(tiny_dir, tmp_path, capsys):
    sets = tmp_path / "coa.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS[:2]), sets)
    assert search_again.main([str(sets), "--models", f"{tiny_dir},{tiny_dir}"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]
    assert '"teacher_searched_again": {"n": 1' in lines[0]
    empty = tmp_path / "none.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS[3:]), empty)
    assert search_again.main([str(empty), "--models", str(tiny_dir)]) == 2
