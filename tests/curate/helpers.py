"""Hand-made rows in the core schema, for cases that must be exact."""

from __future__ import annotations

from pathlib import Path

from coa.formats import AUTOCOA
from coa.trajectory import Trajectory, segment
from curate.config import CurateConfig

ROOT = Path(__file__).resolve().parents[2]
EVAL_SETS = [
    str(ROOT / "data/raw/bamboogle/bamboogle.jsonl.gz"),
    str(ROOT / "data/raw/autocoa/all_test_data_test.parquet"),
]
F = AUTOCOA


def config(out: Path, **kw) -> CurateConfig:
    kw.setdefault("eval_sets", EVAL_SETS)
    # the embedded HotpotQA (the default is the pipeline's split, runs/split/train.jsonl), no review table
    kw.setdefault("questions", "")
    kw.setdefault("review", "")
    return CurateConfig(out=str(out), **kw)


def model(text: str) -> dict:
    return segment("model", text)


def obs(body: str = 'result 1: "Doc"\nSome retrieved text.') -> dict:
    return segment("observation", F.wrap_observation(body), query="q", doc_ids=["hp1"])


def traj(
    q: dict,
    segments: list[dict],
    *,
    mode: str = "coa",
    sample: int = 0,
    finish: str = "answer",
    golds: list[str] | None = None,
) -> Trajectory:
    return Trajectory(
        question_id=q["id"],
        question=q["question"],
        golden_answers=golds or q["golden_answers"],
        dataset="hotpotqa",
        prompt="PROMPT\n",
        segments=segments,
        mode=mode,
        sample=sample,
        finish_reason=finish,
        n_actions=sum(s["kind"] == "observation" for s in segments),
    )


def searched(query: str, answer: str, thought: str = "I should look this up.") -> list[dict]:
    """A well-formed one-search CoA trajectory."""
    return [
        model(f"<think>\n{thought}\n{F.search_call(query)}"),
        obs(),
        model(f"The passage settles it.\n</think>\n\\boxed{{{answer}}}"),
    ]
