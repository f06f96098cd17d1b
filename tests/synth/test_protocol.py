"""A real teacher's protocol breaks, repaired or named (``synth.protocol``), on its own outputs: the rows of
tests/fixtures/real_llm/protocol_breaks.jsonl are Qwen2.5-Coder-1.5B-Instruct's trajectories on HotpotQA training
questions (search_r1, the completions engine; docs/experiments/real_llm.md) that curation flagged."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from coa.agent import start_episode
from coa.formats import get_format
from coa.trajectory import read_trajectories
from synth.protocol import MALFORMED, MODEL_OBSERVATION, REPAIRED, settle
from synth.run import main as synth_main
from tests.fixtures.chat_api import FakeReasoningAPI

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/real_llm/protocol_breaks.jsonl"
CASES = [json.loads(line) for line in FIXTURES.read_text().splitlines()]
FMT = get_format("search_r1")


def episode(case: dict, tokenizer):
    ep = start_episode("Question?", tokenizer, question={"id": case["question_id"]})
    ep.segments = [dict(s, token_ids=[]) for s in case["segments"]]
    ep.finish_reason = case["finish_reason"]
    return ep


def test_the_fixtures_hold_every_kind_of_break():
    kinds = {c["expected"]["protocol"] for c in CASES}
    assert {REPAIRED, MODEL_OBSERVATION, None} <= kinds  # None: ended eos / max_tokens, named by the loop already
    assert any("repetition" in c["curation_reasons"] for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{c['question_id']}-{c['expected']['protocol']}" for c in CASES])
def test_each_real_break_is_repaired_or_named(case, tokenizer):
    ep = episode(case, tokenizer)
    before = ep.completion
    assert settle(ep, FMT) == case["expected"]["protocol"]
    assert ep.finish_reason == case["expected"]["finish_reason"]
    if case["expected"]["protocol"] == REPAIRED:  # only the think-close tag was added, and the text now parses
        assert FMT.parse(ep.completion).well_formed and not FMT.parse(before).well_formed
        assert ep.completion.replace(FMT.think_close, "").split() == before.split()
        last = ep.segments[-1]
        assert tokenizer.decode(last["token_ids"]) == last["text"] and len(last["logprobs"]) == len(last["token_ids"])
    else:
        assert ep.completion == before  # named, never rewritten
    if ep.finish_reason == "answer":
        assert FMT.parse(ep.completion).well_formed  # no answered row is left that does not parse


def test_a_well_formed_answer_is_left_alone(tokenizer):
    case = {
        "question_id": "q",
        "finish_reason": "answer",
        "segments": [
            {"kind": "prefill", "text": "<think>\n"},
            {"kind": "model", "text": "Paris.\n</think>\n<answer>Paris</answer>"},
        ],
    }
    ep = episode(case, tokenizer)
    assert settle(ep, FMT) is None and ep.finish_reason == "answer"


def test_a_run_counts_them_in_its_summary(index_dir, tmp_path, capsys):
    """Through ``python -m synth.run`` against a stand-in serving the real teacher's texts: the summary counts
    the repaired and the named breaks, and the rows carry them."""
    chosen = {c["question"]: c for c in CASES if c["expected"]["protocol"] in (REPAIRED, MODEL_OBSERVATION)}
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": q, "golden_answers": ["x"]}) + "\n" for i, q in enumerate(chosen)
        )
    )

    def script(prompt: str) -> str:  # the model's text after the prefilled think tag, as the teacher wrote it
        return next(c["segments"][1]["text"] for q, c in chosen.items() if q in prompt)

    with FakeReasoningAPI(script=script) as api:
        code = synth_main(
            [
                "mode=cot",
                f"questions={questions}",
                f"out={tmp_path / 'out'}",
                f"search.index={index_dir}",
                "format=search_r1",
                f"teacher.base_url={api.url}",
                f"teacher.model={api.model}",
                "progress=false",
            ]
        )
    assert code == 0, capsys.readouterr().err
    expected = Counter(c["expected"]["protocol"] for c in chosen.values())
    assert json.loads((tmp_path / "out/summary.json").read_text())["run"]["protocol"] == expected
    rows = read_trajectories(tmp_path / "out")
    assert sum(t.finish_reason == MALFORMED for t in rows) == expected[MODEL_OBSERVATION]
    answered = [t for t in rows if t.finish_reason == "answer"]
    assert len(answered) == expected[REPAIRED]
    assert all(FMT.parse("".join(s["text"] for s in t.segments)).well_formed for t in answered)
