"""The optional real LLM (Qwen2.5-Coder-1.5B-Instruct, ``./install.sh --llm``) as teacher, judge and question
writer, one question (or seed) each, through the same entry points a user runs. They skip, saying why, when the
model is not installed (CI installs it: the README's test command runs `./install.sh --llm`). On a shared 2-core CPU
each takes minutes: the model writes ~8 tokens/s there in bf16 (docs/experiments/real_llm.md), and about one token a
second in float32 where memory bandwidth bounds decoding (~5 GB/s, 6 GB of weights a step), so each reply is capped
(``TEACHER_TOKENS``, ``WRITER_TOKENS``): a row cut there ends ``length``, a question cut there is dropped with its
reason. What they check is the protocol (every row ends with a named finish reason, every question dropped has a named
reason), not answer quality. One run per role and API: CoT rows (``mode=cot``) take the same completions path as
``coa-completions`` (tests/synth/test_protocol.py runs them on the 135M teacher)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coa.judge import JudgeConfig, LLMJudge
from coa.model import LLM_NAME, models_dir
from coa.questions import DEFAULT_QUESTIONS, load_questions, write_questions
from coa.trajectory import FINISH_REASONS, read_trajectories

pytestmark = [pytest.mark.llm, pytest.mark.server, pytest.mark.slow]

QUESTIONS = 1
TEACHER_TOKENS = 96  # room for a forced first call and its arguments
WRITER_TOKENS = 128


def synth(out, index_dir, llm_url, *settings: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "synth.run",
        "format=search_r1",
        f"limit={QUESTIONS}",
        f"out={out}",
        f"search.index={index_dir}",
        f"teacher.base_url={llm_url}",
        f"teacher.model={LLM_NAME}",
        f"tokenizer={models_dir() / LLM_NAME}",
        "teacher.retries=1",
        f"search.max_tokens={TEACHER_TOKENS}",
        "progress=false",
        *settings,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize(
    "settings",
    [
        ("mode=coa", "teacher.api=completions"),
        ("mode=coa", "teacher.api=chat", "teacher.tools=native", "teacher.tool_choice=first"),
    ],
    ids=["coa-completions", "coa-chat-native"],
)
def test_the_real_teacher_ends_every_row_with_a_named_finish_reason(settings, llm_url, index_dir, tmp_path):
    done = synth(tmp_path / "out", index_dir, llm_url, *settings)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    rows = read_trajectories(tmp_path / "out")
    assert len(rows) == QUESTIONS and all(t.finish_reason in FINISH_REASONS for t in rows), rows
    assert all(t.teacher == LLM_NAME and t.completion_tokens > 0 for t in rows)
    if "teacher.tool_choice=first" in settings:  # the forced first call went through the hermes parser
        assert all(t.n_actions >= 1 or t.finish_reason == "bad_tool_call" for t in rows)
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert sum(summary["run"]["finish_reasons"].values()) == QUESTIONS


def test_the_real_judge_gives_strict_verdicts(llm_url, tmp_path):
    """Answers of docs/experiments/real_llm.md, judged there as here (greedy): a right one in other words, a wrong
    one sharing words with the gold (both asked), and one sharing none (settled at 0 without asking)."""
    judge = LLMJudge(JudgeConfig(base_url=llm_url, model=LLM_NAME, cache=str(tmp_path / "v.jsonl")))
    olympics = "the first woman to be the chef de mission of an Australian Olympic team won gold medal in which "
    olympics += "winter Olympics ?"
    verdicts = judge.scores(
        [
            ("Who passed away first Robert Graves or Dino Buzzati ?", ["Dino Buzzati-Traverso"], "Dino Buzzati"),
            (olympics, ["2002 Winter Olympics"], "2014 Winter Olympics"),
            (
                "Pak Sao is a technique in the martial art specializing in what type of fighting?",
                ["close range combat"],
                "Taekwondo",
            ),
        ]
    )
    assert verdicts == [1.0, 0.0, 0.0], judge.stats()
    assert len((tmp_path / "v.jsonl").read_text().splitlines()) == 2 == judge.stats()["asked"]


@pytest.mark.parametrize("proposer", ["extend"])  # obfuscate: tests/synth/test_questions.py, scripted
def test_the_real_question_writer_names_every_drop(proposer, llm_url, index_dir, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    bridges = [q for q in load_questions(DEFAULT_QUESTIONS, limit=40) if q["metadata"].get("type") == "bridge"]
    # extend and obfuscate start from bridge seeds (comparisons are dropped)
    write_questions(seeds, bridges[:QUESTIONS])
    cmd = [
        sys.executable,
        "-m",
        "synth.questions",
        f"proposer={proposer}",
        f"questions={seeds}",
        f"search.index={index_dir}",
        f"teacher.base_url={llm_url}",
        f"teacher.model={LLM_NAME}",
        f"tokenizer={models_dir() / LLM_NAME}",
        "teacher.retries=1",
        "hops=3",
        f"min_hops={3 if proposer == 'extend' else 2}",  # an obfuscated 2-hop seed keeps its 2 hops
        f"max_tokens={WRITER_TOKENS}",
        "verify.skip=[solvable,clean]",
        f"out={tmp_path / 'q'}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    metrics = json.loads((tmp_path / "q/metrics.json").read_text())
    dropped = [json.loads(line) for line in (tmp_path / "q/dropped.jsonl").read_text().splitlines()]
    assert metrics["candidates"] == metrics["verified"] + len(dropped)
    assert all(d["dropped_by"] and d["reason"] for d in dropped)  # each drop names its verifier and reason
    assert sum(metrics["drop_reasons"].values()) == len(dropped)
    assert metrics["teacher_tokens"]["completion"] > 0
