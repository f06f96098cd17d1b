"""``python -m train.pool``: an RL stage's question pool, kept to the questions its start checkpoint can learn from.

    python -m train.pool stage=rl2 model=runs/train/rl1 candidates=64 samples=4 out=runs/train/rl2_pool.jsonl

GRPO learns from a question only where its group's rewards differ: the advantage is each reward minus
the group's mean, so a question every rollout fails (or every rollout solves alike) adds nothing but
its compute. After SFT most questions are of that kind for a small student (docs/experiments/rl2_learning.md).
This step rolls out the stage's start checkpoint ``samples`` times on each of the first ``candidates``
questions of the stage's pool, in the stage's own environment (tools, budget, search, temperature) with
its reward functions, all read from params.yaml's ``train`` section, and keeps the questions whose
rewards differ. It is DAPO's dynamic sampling done once before the stage instead of per batch: the
pass rates it filters on are the start checkpoint's, which is what the first steps train.

Writes ``out`` (the kept questions, in pool order, as the pool's own rows: ``rl*.questions=`` reads it)
and ``out`` with ``.json`` for ``.jsonl``: candidates, kept, and each candidate's rewards.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from coa.agent import drive, start_episode, written_observations
from coa.config import build, cli, resolve
from coa.errors import entry_point
from coa.formats import get_format
from coa.io import write_json, write_text
from coa.model import in_process_dtype, load_policy
from coa.prompts import render_prompt
from coa.questions import DEFAULT_QUESTIONS, evidence_ids, load_questions
from coa.trajectory import failed_calls, retrieved_ids
from train.config import TrainConfig
from train.rewards import make_rewards, reward_terms

SEED = 1234  # rollout k of question i samples with SEED + 1000 * (i * samples + k) (+ the call index)


@dataclass
class PoolConfig:
    stage: str = field(default="rl2", metadata={"help": "rl1 | rl2: whose environment, pool and reward"})
    model: str = field(default="runs/train/rl1", metadata={"help": "the stage's start checkpoint"})
    questions: str = field(default="", metadata={"help": "candidate file; empty = the stage's pool (rl*.questions)"})
    candidates: int = field(default=64, metadata={"help": "first N questions of the pool rolled out"})
    samples: int = field(default=4, metadata={"help": "rollouts per question (the stage's group size is usual)"})
    engine: str = field(default="vllm", metadata={"help": "vllm (vllm.LLM in-process) | hf (transformers generate)"})
    out: str = field(default="runs/train/rl2_pool.jsonl", metadata={"help": "the kept questions (jsonl)"})

    def __post_init__(self) -> None:
        if self.stage not in ("rl1", "rl2"):
            raise ValueError(f"stage must be 'rl1' or 'rl2', got {self.stage!r}")
        if self.engine not in ("vllm", "hf"):
            raise ValueError(f"engine must be 'vllm' or 'hf', got {self.engine!r}")
        if self.candidates < 1 or self.samples < 2:
            raise ValueError(
                f"candidates must be >= 1 and samples >= 2 (a spread needs two), got "
                f"{self.candidates} and {self.samples}"
            )
        if not self.out.endswith(".jsonl"):
            raise ValueError(f"out must name a .jsonl file, got {self.out!r}")


def train_config(stage: str):
    """params.yaml's ``train`` section (and the shared format, prompt and search) as ``train.run`` reads it."""

    values, _ = resolve(TrainConfig, "train", [f"stage={stage}"])
    return build(TrainConfig, values, "train")


def rollouts(
    model: str, questions: list[dict], train, stage_name: str, samples: int, engine: str, searcher=None
) -> list[dict]:
    """``samples`` rollouts per question of ``model`` in the stage's environment (its tools too:
    ``search.tools``), each with its rewards as the stage computes them (seeded per rollout: the same question
    and sample draw alike for every checkpoint)."""
    from train.rl import rollout_budget  # heavy: TRL loads only when rollouts are scored

    stage = getattr(train, stage_name)
    fmt = get_format(train.format)
    generator, tok = load_policy(model, stage.temperature, in_process_dtype("auto", engine), engine)
    episodes = [
        start_episode(
            render_prompt(tok, q["question"], train.prompt),
            tok,
            prefill=train.prompt.prefill,
            tools=stage.tools,
            question=q,
        )
        for q in questions
        for _ in range(samples)
    ]
    seeds = [SEED + 1000 * i for i in range(len(episodes))]
    toolbox = train.search.loop_tools(fmt, searcher, tok)  # None: search only
    try:
        drive(episodes, generator, searcher, fmt, rollout_budget(train, stage), seeds=seeds, tools=toolbox)
    finally:
        if toolbox is not None:
            toolbox.close()
    golds = [q["golden_answers"] for q in questions for _ in range(samples)]
    texts = [ep.completion for ep in episodes]
    failed = [failed_calls(ep.segments) for ep in episodes]
    rewards = make_rewards(
        stage.reward_metric,
        stage.format_penalty,
        fmt.name,
        stage.failed_call_penalty,
        evidence_reward=stage.evidence_reward,
        evidence_gate=stage.evidence_gate,
        echo_penalty=stage.echo_penalty,
    )
    evidence = [evidence_ids(q) for q in questions for _ in range(samples)]
    asked = [q["question"] for q in questions for _ in range(samples)]
    terms = reward_terms(
        rewards, texts, golds, failed, evidence, [retrieved_ids(ep.segments) for ep in episodes], asked
    )
    parsed = [fmt.parse(text) for text in texts]
    return [
        {
            "question_id": ep.question["id"],
            "reward": sum(t[i] for t in terms),
            "correctness": terms[0][i],
            "well_formed": p.well_formed,
            "search_calls": p.n_actions,
            "failed_calls": failed[i],
            "written_observations": written_observations(ep, fmt),
            "finish_reason": ep.finish_reason,
        }
        for i, (ep, p) in enumerate(zip(episodes, parsed))
    ]


def by_question(rows: list[dict], key: str) -> dict[str, list[float]]:
    """Each question's values of ``key`` over its rollouts, in question order."""
    grouped: dict[str, list[float]] = {}
    for r in rows:
        grouped.setdefault(r["question_id"], []).append(float(r[key]))
    return grouped


def informative(rewards: list[float]) -> bool:
    """A group GRPO learns from: not every reward alike."""
    return max(rewards) > min(rewards)


def select(cfg: PoolConfig) -> dict:
    train = train_config(cfg.stage)
    stage = getattr(train, cfg.stage)
    source = cfg.questions or stage.questions or DEFAULT_QUESTIONS
    questions = load_questions(source, limit=cfg.candidates)
    searcher = train.search.searcher() if stage.tools == "real" else None
    rows = rollouts(cfg.model, questions, train, cfg.stage, cfg.samples, cfg.engine, searcher)
    rewards = {qid: [round(r, 6) for r in rs] for qid, rs in by_question(rows, "reward").items()}
    kept = [q for q in questions if informative(rewards[q["id"]])]
    if not kept:
        raise ValueError(
            f"train.pool: none of the {len(questions)} questions of {source} gave {cfg.model} rewards "
            f"that differ over {cfg.samples} rollouts: nothing for GRPO to learn from (more candidates, "
            f"more samples, or a higher {cfg.stage}.temperature)"
        )
    summary = {
        "stage": cfg.stage,
        "model": cfg.model,
        "questions": str(source),
        "candidates": len(questions),
        "samples": cfg.samples,
        "kept": len(kept),
        "temperature": stage.temperature,
        "reward_metric": stage.reward_metric,
        "all_zero": sum(max(r) == min(r) == 0 for r in rewards.values()),
        "all_alike_nonzero": sum(max(r) == min(r) != 0 for r in rewards.values()),
        "rewards": rewards,
    }
    out = Path(cfg.out)
    write_text(out, "".join(json.dumps(q) + "\n" for q in kept))
    write_json(out.with_suffix(".json"), summary)
    return summary


@entry_point("train.pool")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(PoolConfig, "pool", sys.argv[1:] if argv is None else argv, __doc__)
    summary = select(cfg)
    print(json.dumps({k: summary[k] for k in ("stage", "candidates", "kept", "all_zero", "all_alike_nonzero")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
