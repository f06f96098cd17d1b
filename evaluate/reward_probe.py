"""``python -m evaluate.reward_probe``: did an RL stage raise its own training reward?

    python -m evaluate.reward_probe stage=rl2 before=runs/train/rl1 after=runs/train/rl2 out=runs/reward_probe/rl2

An RL stage's per-step reward (its ``steps.csv``) is measured on new questions at every step: with a few
prompts per step it follows their difficulty, not the policy (docs/experiments/rl2_temperature.md: two
arms' rewards rose and fell together). This probe holds the prompts fixed. It rolls out the checkpoint the
stage started from (``before``) and the one it saved (``after``) on the same ``limit`` questions of the
stage's own training pool, ``samples`` rollouts each at the stage's temperature with the same seeds, in
the stage's environment (``tools``, budget, search) with its reward functions, all read from
params.yaml's ``train`` section as training read them. In-process ``vllm`` (float32; ``engine=hf`` is
the transformers reference).

Writes ``out/reward_probe.json``: per checkpoint the mean reward, correctness, well-formed rate, search
calls and written observations per rollout; ``difference``: the per-question mean reward of ``after``
minus ``before``, with a 95% paired bootstrap interval over questions (``correctness_difference`` the
same for the answer term alone). An interval above 0 says the stage raised the reward it trained on.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from coa import paths
from coa.config import cli
from coa.model import in_process_dtype
from coa.errors import entry_point
from coa.io import write_json, write_text
from coa.questions import DEFAULT_QUESTIONS, load_questions
from coa.stats import paired_difference
from train.pool import by_question, rollouts, train_config


@dataclass
class RewardProbeConfig:
    stage: str = field(default="rl2", metadata={"help": "rl1 | rl2: whose environment, questions and reward"})
    before: str = field(default=paths.train("rl1"), metadata={"help": "the checkpoint the stage started from"})
    after: str = field(default=paths.train("rl2"), metadata={"help": "the checkpoint the stage saved"})
    limit: int = field(
        default=8,
        metadata={
            "help": "first N questions of the stage's training pool (at most the "
            "stage's question_limit: the questions it trained on)"
        },
    )
    samples: int = field(default=8, metadata={"help": "rollouts per question and checkpoint"})
    questions: str = field(default="", metadata={"help": "question file; empty = the stage's own pool (rl*.questions)"})
    index: str = field(default="", metadata={"help": "coa.search index folder; empty = search.index"})
    engine: str = field(default="vllm", metadata={"help": "vllm (vllm.LLM in-process) | hf (transformers generate)"})
    out: str = field(default=paths.reward_probe("rl2"), metadata={"help": "output folder"})

    def __post_init__(self) -> None:
        if self.stage not in ("rl1", "rl2"):
            raise ValueError(f"stage must be 'rl1' or 'rl2', got {self.stage!r}")
        if self.engine not in ("vllm", "hf"):
            raise ValueError(f"engine must be 'vllm' or 'hf', got {self.engine!r}")
        if self.limit < 1 or self.samples < 1:
            raise ValueError(f"limit and samples must be >= 1, got {self.limit} and {self.samples}")


def per_question(rows: list[dict], key: str) -> list[float]:
    """The mean of ``key`` over each question's samples, in question order."""

    return [sum(v) / len(v) for v in by_question(rows, key).values()]


def summary(rows: list[dict]) -> dict:
    n = len(rows)
    return {
        key: round(sum(float(r[key]) for r in rows) / n, 4)
        for key in ("reward", "correctness", "well_formed", "search_calls", "written_observations")
    } | {"n": n}


def probe(cfg: RewardProbeConfig) -> dict:
    train = train_config(cfg.stage)
    stage = getattr(train, cfg.stage)
    source = cfg.questions or stage.questions or DEFAULT_QUESTIONS
    # a stage that trains on its pool's first question_limit questions is probed on those (the questions it trained on)
    limit = min(cfg.limit, stage.question_limit) if stage.question_limit and not cfg.questions else cfg.limit
    questions = load_questions(source, limit=limit)
    if cfg.index:
        train = replace(train, search=replace(train.search, index=cfg.index))
    searcher = train.search.searcher() if stage.tools == "real" else None
    before, after = (
        rollouts(m, questions, train, cfg.stage, cfg.samples, cfg.engine, searcher) for m in (cfg.before, cfg.after)
    )
    result = {
        "stage": cfg.stage,
        "before": cfg.before,
        "after": cfg.after,
        "questions": str(source),
        "n_questions": len(questions),
        "samples": cfg.samples,
        "tools": stage.tools,
        "temperature": stage.temperature,
        "reward_metric": stage.reward_metric,
        "format_penalty": stage.format_penalty,
        "engine": cfg.engine,
        "dtype": in_process_dtype("auto", cfg.engine),
        "models": {"before": summary(before), "after": summary(after)},
        "difference": paired_difference(per_question(before, "reward"), per_question(after, "reward")),
        "correctness_difference": paired_difference(
            per_question(before, "correctness"), per_question(after, "correctness")
        ),
    }
    out = Path(cfg.out)
    write_json(out / "reward_probe.json", result)
    write_text(
        out / "rollouts.jsonl",
        "".join(
            json.dumps({"model": name, **r}) + "\n"
            for name, rows in (("before", before), ("after", after))
            for r in rows
        ),
    )
    return result


@entry_point("evaluate.reward_probe")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(RewardProbeConfig, "reward_probe", sys.argv[1:] if argv is None else argv, __doc__)
    result = probe(cfg)
    print(json.dumps({k: result[k] for k in ("stage", "models", "difference", "correctness_difference")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
