"""``python -m evaluate.when_to_act``: does a model search when it should, and answer when it can?

    python -m evaluate.when_to_act models=[base,sft1,sft2,sft3,rl1,rl2]

Held-out decision points are the contrastive pairs (``curate step=pairs``) of the curated eval split
(``runs/curate/sets/eval_questions.parquet``; ``step=sets`` keeps them out of every training set). At
each, error analysis knows the answer: ``act`` pairs mark points where **search was needed** (the
searching branch was right, the one answering from memory wrong), ``no_act`` pairs points where
**memory sufficed** (the reverse). Each model continues the shared prefix (``chat_prompt`` + ``prefix``
segments) for one step, in-process and greedy, with search forbidden: a search call ends the step as
"search", an answer as "answer", anything else (EOS or the token budget without either) as "neither".

Per model, each rate with n and a 95% bootstrap interval:
  search_when_needed   share of needed points where it searched (under_trigger = 1 - it)
  answer_when_sufficed share of sufficed points where it answered
  over_trigger         share of sufficed points where it searched anyway
Writes ``out`` (JSON) with the points' counts and every model's rates.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from coa.config import cli
from coa.errors import entry_point
from coa.io import write_json
from evaluate.run import bootstrap_ci

LABELS = {"act": "needed", "no_act": "sufficed"}


@dataclass
class WhenToActConfig:
    models: list = field(default_factory=lambda: ["base", "sft1", "sft2", "sft3", "rl1", "rl2"],
                         metadata={"help": "'base' or stage names under runs_dir (or checkpoint folders)"})
    runs_dir: str = field(default="runs/train", metadata={"help": "where stage checkpoints live"})
    pairs: str = field(default="runs/curate/pairs/pairs.parquet", metadata={"help": "curate's pairs (all of them)"})
    eval_questions: str = field(default="runs/curate/sets/eval_questions.parquet",
                                metadata={"help": "the curated eval split: its points are the held-out ones"})
    max_tokens: int = field(default=128, metadata={"help": "tokens for the one step"})
    dtype: str = field(default="float32", metadata={"help": "weights dtype in-process"})
    bootstrap: int = field(default=2000, metadata={"help": "resamples of each interval"})
    out: str = field(default="runs/report/when_to_act.json", metadata={"help": "output JSON"})


def rate(hits: Sequence[bool], resamples: int = 2000) -> dict:
    values = [float(h) for h in hits]
    return {"rate": round(sum(values) / len(values), 4) if values else None, "n": len(values),
            "ci95": bootstrap_ci(values, resamples) if values else None}


def when_rates(labels: Sequence[str], outcomes: Sequence[str], resamples: int = 2000) -> dict:
    """The rates of the module docstring from each point's label (needed | sufficed) and the model's
    outcome there (search | answer | neither)."""
    needed = [o for l, o in zip(labels, outcomes, strict=True) if l == "needed"]
    sufficed = [o for l, o in zip(labels, outcomes) if l == "sufficed"]
    searched = rate([o == "search" for o in needed], resamples)
    under = dict(searched, rate=None if searched["rate"] is None else round(1 - searched["rate"], 4),
                 ci95=None if searched["ci95"] is None else [round(1 - searched["ci95"][1], 4),
                                                            round(1 - searched["ci95"][0], 4)])
    return {"search_when_needed": searched, "under_trigger": under,
            "answer_when_sufficed": rate([o == "answer" for o in sufficed], resamples),
            "over_trigger": rate([o == "search" for o in sufficed], resamples)}


def outcome(finish_reason: str) -> str:
    return {"forbidden_search": "search", "answer": "answer"}.get(finish_reason, "neither")


def heldout_points(pairs_path: str | Path, eval_questions: str | Path) -> list[dict]:
    """The pairs whose question is in the curated eval split, each with its label."""
    import polars as pl

    held = pl.read_parquet(eval_questions)["id"].to_list()
    rows = pl.read_parquet(pairs_path).filter(pl.col("question_id").is_in(held)).sort("id").to_dicts()
    return [dict(r, label=LABELS[r["direction"]]) for r in rows]


def continue_one_step(points: Sequence[dict], engine, tokenizer, max_tokens: int) -> list[str]:
    """Each point's outcome when the model continues its prefix with search forbidden."""
    from coa.agent import Budget, drive, start_episode
    from coa.formats import get_format

    if not points:
        return []
    fmt = get_format(points[0]["format"])
    episodes = [start_episode(p["chat_prompt"], tokenizer, tools="forbid", prefix=p["prefix"],
                              question={"id": p["question_id"], "question": p["question"]}) for p in points]
    drive(episodes, engine, None, fmt, Budget(max_actions=0, max_tokens=max_tokens))
    return [outcome(ep.finish_reason) for ep in episodes]


def model_folder(name: str, runs_dir: str) -> str:
    """'base', a folder path as given, or a stage name under ``runs_dir``."""
    return name if name == "base" or "/" in name else str(Path(runs_dir) / name)


def run(cfg: WhenToActConfig) -> dict:
    from evaluate.fidelity import policy

    points = heldout_points(cfg.pairs, cfg.eval_questions)
    labels = [p["label"] for p in points]
    result = {"points": {"needed": labels.count("needed"), "sufficed": labels.count("sufficed")},
              "pairs": cfg.pairs, "eval_questions": cfg.eval_questions, "models": {}}
    for name in cfg.models:
        engine, tok = policy(model_folder(name, cfg.runs_dir), 0.0, cfg.dtype, "hf")
        outcomes = continue_one_step(points, engine, tok, cfg.max_tokens)
        result["models"][name] = {**when_rates(labels, outcomes, cfg.bootstrap),
                                  "outcomes": {o: outcomes.count(o) for o in ("search", "answer", "neither")}}
    write_json(cfg.out, result)
    return result


@entry_point("evaluate.when_to_act")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(WhenToActConfig, "when_to_act", sys.argv[1:] if argv is None else argv, __doc__)
    result = run(cfg)
    for name, r in result["models"].items():
        print(f"{name}: search when needed {r['search_when_needed']['rate']} (n={r['search_when_needed']['n']}), "
              f"over-trigger {r['over_trigger']['rate']} (n={r['over_trigger']['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
