"""``python -m evaluate.when_to_act``: does a model search when it should, and answer when it can?

    python -m evaluate.when_to_act models=[base,sft1,sft2,sft3,rl1,rl2]

Held-out decision points are the contrastive pairs (``curate step=pairs``) of the curated eval split
(``runs/curate/sets/eval_questions.parquet``; ``step=sets`` keeps them out of every training set). At
each, error analysis knows the answer: ``act`` pairs mark points where **search was needed** (the
searching branch was right, the one answering from memory wrong), ``no_act`` pairs points where
**memory sufficed** (the reverse). Each model continues the shared prefix (``chat_prompt`` + ``prefix``
segments) for one step, in-process and greedy, with search forbidden: a search call ends the step as
"search", an answer as "answer", anything else (EOS or the token budget without either) as "neither".

``points=branches`` draws more points from the same held-out questions: every decision point whose
scored branches (``runs/curate/pairs/branches.parquet``, their prefixes from the branch trajectories
``runs/synth/branch``) include a valid one of each kind, labelled by which kind was right more often:
**needed** where the searching branches were (the pairs' ``act``), **memory sufficed** where answering
from memory was right at least as often, and at least once (the pairs' ``no_act`` plus the points where
both were right alike, which have no pair: searching there gains nothing). Points where no branch was
right are left out and counted. More held-out questions (``curate.eval_questions``) and a point per
search call (``curate.decision_points=every``) draw more of either kind.

With tools beyond search (``search.tools``), a call of any tool ends the step as "search" (acting), and each
point carries the tool its acting side called: the pair's acting side, or with ``points=branches`` one point per
forced tool (``force`` = search, ``force-TOOL``) against the same no-tool branches, so a point appears once per
tool. Each model's ``by_tool`` then holds the rates below per tool, at that tool's points, acting meaning a call
of that tool.

Per model, each rate with n and a 95% bootstrap interval:
  search_when_needed   share of needed points where it searched (under_trigger = 1 - it)
  answer_when_sufficed share of sufficed points where it answered
  over_trigger         share of sufficed points where it searched anyway
Writes ``out`` (JSON) with the points' counts per side, a note for each side with fewer than ``min_n``
points (its rates are not resolved), and every model's rates.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from coa import paths
from coa.agent import Budget, drive, start_episode
from coa.config import cli
from coa.errors import entry_point
from coa.formats import get_format
from coa.io import write_json
from coa.model import load_policy
from coa.stats import bootstrap_ci
from coa.trajectory import read_table

LABELS = {"act": "needed", "no_act": "sufficed"}
POINTS = ("pairs", "branches")


@dataclass
class WhenToActConfig:
    models: list = field(
        default_factory=lambda: ["base", "sft1", "sft2", "sft3", "rl1", "rl2"],
        metadata={"help": "'base' or stage names under runs_dir (or checkpoint folders)"},
    )
    runs_dir: str = field(default=paths.TRAIN, metadata={"help": "where stage checkpoints live"})
    pairs: str = field(
        default=f"{paths.curate('pairs')}/pairs.parquet", metadata={"help": "curate's pairs (all of them)"}
    )
    eval_questions: str = field(
        default=f"{paths.curate('sets')}/eval_questions.parquet",
        metadata={"help": "the curated eval split: its points are the held-out ones"},
    )
    points: str = field(
        default="pairs",
        metadata={
            "help": "pairs = the contrastive pairs' points (needed: searching beat answering; sufficed: the reverse); "
            "branches = every held-out point with both kinds of valid branch, labelled from their scores "
            "(sufficed also where both kinds were right alike): more points where memory sufficed"
        },
    )
    branches: str = field(
        default=f"{paths.curate('pairs')}/branches.parquet",
        metadata={"help": "points=branches: curate's scored branches (kind, kept, correct per branch)"},
    )
    trajectories: list = field(
        default_factory=lambda: [paths.synth("branch")],
        metadata={
            "help": "points=branches: the branch trajectories (folders or parquet files): the points' shared prefixes"
        },
    )
    min_n: int = field(
        default=30, metadata={"help": "points per side below which the output says the side's rates are not resolved"}
    )
    per_side: int = field(
        default=0,
        metadata={"help": "continue at most this many points of each side (the first by id; 0 = all): bounds the cost"},
    )
    max_tokens: int = field(default=128, metadata={"help": "tokens for the one step"})
    dtype: str = field(default="float32", metadata={"help": "weights dtype in-process"})
    bootstrap: int = field(default=2000, metadata={"help": "resamples of each interval"})
    out: str = field(default=paths.WHEN_TO_ACT, metadata={"help": "output JSON"})

    def __post_init__(self) -> None:
        if self.points not in POINTS:
            raise ValueError(f"points must be one of {', '.join(POINTS)}; got {self.points!r}")
        if isinstance(self.trajectories, str):
            self.trajectories = [self.trajectories]
        if self.min_n < 1:
            raise ValueError(f"min_n must be >= 1, got {self.min_n}")
        if self.per_side < 0:
            raise ValueError(f"per_side must be >= 0 (0 = all), got {self.per_side}")


def rate(hits: Sequence[bool], resamples: int = 2000) -> dict:
    values = [float(h) for h in hits]
    return {
        "rate": round(sum(values) / len(values), 4) if values else None,
        "n": len(values),
        "ci95": bootstrap_ci(values, resamples) if values else None,
    }


def when_rates(labels: Sequence[str], outcomes: Sequence[str], resamples: int = 2000) -> dict:
    """The rates of the module docstring from each point's label (needed | sufficed) and the model's
    outcome there (search | answer | neither)."""
    needed = [o for label, o in zip(labels, outcomes, strict=True) if label == "needed"]
    sufficed = [o for label, o in zip(labels, outcomes) if label == "sufficed"]
    searched = rate([o == "search" for o in needed], resamples)
    under = dict(
        searched,
        rate=None if searched["rate"] is None else round(1 - searched["rate"], 4),
        ci95=None
        if searched["ci95"] is None
        else [round(1 - searched["ci95"][1], 4), round(1 - searched["ci95"][0], 4)],
    )
    return {
        "search_when_needed": searched,
        "under_trigger": under,
        "answer_when_sufficed": rate([o == "answer" for o in sufficed], resamples),
        "over_trigger": rate([o == "search" for o in sufficed], resamples),
    }


def outcome(finish_reason: str) -> str:
    return {"forbidden_search": "search", "answer": "answer"}.get(finish_reason, "neither")


def heldout_points(pairs_path: str | Path, eval_questions: str | Path) -> list[dict]:
    """The pairs whose question is in the curated eval split, each with its label (a pair between two tools
    says which tool, not whether to act: left out)."""
    import polars as pl

    held = pl.read_parquet(eval_questions)["id"].to_list()
    rows = (
        pl.read_parquet(pairs_path)
        .filter(pl.col("question_id").is_in(held) & pl.col("direction").is_in(list(LABELS)))  # not tool-vs-tool
        .sort("id")
        .to_dicts()
    )
    return [dict(r, label=LABELS[r["direction"]], tool=acting_tool(r)) for r in rows]


def acting_tool(pair: dict) -> str:
    """The tool a pair's acting side calls (its chosen side in an ``act`` pair, the rejected one otherwise)."""
    text = pair["chosen"] if pair["direction"] == "act" else pair["rejected"]
    calls = get_format(pair["format"]).parse(text).calls
    return calls[0][0] if calls else "search"


def called_tool(ep, fmt) -> str | None:
    """The tool of the call that ended a forbidden episode (its last call), or None."""
    calls = fmt.parse(ep.completion).calls
    return calls[-1][0] if ep.finish_reason == "forbidden_search" and calls else None


def branch_points(
    branches: str | Path, trajectories: Sequence[str | Path], eval_questions: str | Path
) -> tuple[list[dict], dict]:
    """The held-out decision points labelled from their scored branches (``points=branches``, the module
    docstring), in the pairs' columns; and the counts: points, per side, and left out by reason."""
    import polars as pl

    held = pl.read_parquet(eval_questions)["id"].to_list()
    point = ["parent_id", "decision_index"]
    scored = pl.read_parquet(branches, columns=["id", "question_id", *point, "kind", "correct", "kept"]).filter(
        pl.col("question_id").is_in(held)
    )
    kept = scored.filter("kept")
    forbid = (
        kept.filter(pl.col("kind") == "forbid").group_by(point).agg(no_act=pl.col("correct").mean(), ids0=pl.col("id"))
    )
    # one point per forced tool (kind force = search, force-TOOL), each against the same no-tool branches
    rates = (
        kept.filter(pl.col("kind") != "forbid")
        .group_by(*point, "kind")
        .agg(act=pl.col("correct").mean(), ids1=pl.col("id"))
        .join(forbid, on=point, how="full", coalesce=True)
        .with_columns(
            tool=pl.when(pl.col("kind") == "force")
            .then(pl.lit("search"))
            .otherwise(pl.col("kind").str.strip_prefix("force-")),
            ids=pl.concat_list(pl.col("ids0").fill_null([]), pl.col("ids1").fill_null([])),
        )
    )
    both = rates.drop_nulls(["act", "no_act"])
    labelled = both.with_columns(
        label=pl.when(pl.col("act") > pl.col("no_act"))
        .then(pl.lit("needed"))
        .when(pl.col("no_act") > 0)
        .then(pl.lit("sufficed"))
    )
    ids = set(labelled.drop_nulls("label")["ids"].explode().to_list())
    rows = {
        r["id"]: r
        for path in trajectories
        for r in pl.from_arrow(read_table(path)).filter(pl.col("id").is_in(list(ids))).to_dicts()
    }
    points, mismatched = [], 0
    for p in labelled.drop_nulls("label").sort(*point, "tool").to_dicts():
        found = [rows[i] for i in sorted(p["ids"]) if i in rows]  # this tool's forced branches and the no-tool ones
        shared = {
            (r["prompt"], tuple((s["kind"], s["text"]) for s in r["segments"][: p["decision_index"]])) for r in found
        }
        if len(shared) != 1:  # no trajectory found, or the branches do not share one prefix (as the pairs step skips)
            mismatched += 1
            continue
        first = found[0]
        points.append(
            {
                "id": f"{p['parent_id']}:{p['decision_index']}" + ("" if p["tool"] == "search" else f":{p['tool']}"),
                "question_id": first["question_id"],
                "question": first["question"],
                "format": first["format"],
                "chat_prompt": first["prompt"],
                "prefix": first["segments"][: p["decision_index"]],
                "decision_index": p["decision_index"],
                "label": p["label"],
                "tool": p["tool"],
                "act_rate": p["act"],
                "no_act_rate": p["no_act"],
            }
        )
    labels = [p["label"] for p in points]
    counts = {
        "decision_points": scored.select(point).unique().height,
        "needed": labels.count("needed"),
        "sufficed": labels.count("sufficed"),
        "left_out": {
            "missing_valid_kind": rates.height - both.height,
            "no_branch_right": labelled["label"].null_count(),
            "prefix_mismatch": mismatched,
            "no_valid_branch": scored.select(point).unique().height - rates.select(point).unique().height,
        },
    }
    return points, counts


def side_notes(needed: int, sufficed: int, min_n: int, source: str) -> list[str]:
    """A note for each side with fewer than ``min_n`` points: its rates are not resolved there."""
    more = (
        "curate.eval_questions (more held-out questions) or curate.decision_points=every (a point per search "
        "call) draw more"
        + ("; points=branches labels every held-out point with both kinds of branch" if source == "pairs" else "")
    )
    notes = []
    for n, rates, where in (
        (needed, "search when needed / under-trigger", "search was needed"),
        (sufficed, "answer when memory sufficed / over-trigger", "memory sufficed"),
    ):
        if n < min_n:
            notes.append(
                f"{rates}: n = {n} points where {where}, fewer than {min_n}: "
                f"{'not measured' if n == 0 else 'not resolved (wide intervals)'}; {more}."
            )
    return notes


def continue_one_step(points: Sequence[dict], engine, tokenizer, max_tokens: int) -> list[tuple[str, str | None]]:
    """Each point's outcome when the model continues its prefix with every tool forbidden, and the tool it
    called (None when it did not)."""

    if not points:
        return []
    fmt = get_format(points[0]["format"])
    episodes = [
        start_episode(
            p["chat_prompt"],
            tokenizer,
            tools="forbid",
            prefix=p["prefix"],
            question={"id": p["question_id"], "question": p["question"]},
        )
        for p in points
    ]
    drive(episodes, engine, None, fmt, Budget(max_actions=0, max_tokens=max_tokens))
    return [(outcome(ep.finish_reason), called_tool(ep, fmt)) for ep in episodes]


def by_tool(
    points: Sequence[dict], results: Sequence[tuple[str, str | None]], tools: Sequence[str], resamples: int
) -> dict:
    """Per tool, the rates at the points labelled for it (its forced branches against the no-tool ones),
    where acting means calling that tool (a call of another tool counts as neither)."""
    out = {}
    for tool in tools:
        mine = [
            (p["label"], o, t) for p, (o, t) in zip(points, results, strict=True) if p.get("tool", "search") == tool
        ]
        outcomes = ["search" if t == tool else "neither" if o == "search" else o for _, o, t in mine]
        out[tool] = when_rates([label for label, _, _ in mine], outcomes, resamples)
    return out


def model_folder(name: str, runs_dir: str) -> str:
    """'base', a folder path as given, or a stage name under ``runs_dir``."""
    return name if name == "base" or "/" in name else str(Path(runs_dir) / name)


def run(cfg: WhenToActConfig) -> dict:
    if cfg.points == "branches":
        points, counts = branch_points(cfg.branches, cfg.trajectories, cfg.eval_questions)
    else:
        points = heldout_points(cfg.pairs, cfg.eval_questions)
        counts = {
            "needed": sum(p["label"] == "needed" for p in points),
            "sufficed": sum(p["label"] == "sufficed" for p in points),
        }
    if cfg.per_side:
        points = [p for side in LABELS.values() for p in [q for q in points if q["label"] == side][: cfg.per_side]]
    labels = [p["label"] for p in points]
    used = {"needed": labels.count("needed"), "sufficed": labels.count("sufficed")}
    result = {
        "points": {"source": cfg.points, **counts, "min_n": cfg.min_n, "continued": used},
        "notes": side_notes(used["needed"], used["sufficed"], cfg.min_n, cfg.points),
        "pairs": cfg.pairs,
        "eval_questions": cfg.eval_questions,
        "models": {},
    }
    tools = sorted({p.get("tool", "search") for p in points})
    for name in cfg.models:
        engine, tok = load_policy(model_folder(name, cfg.runs_dir), 0.0, cfg.dtype, "hf")
        results = continue_one_step(points, engine, tok, cfg.max_tokens)
        outcomes = [o for o, _ in results]
        result["models"][name] = {
            **when_rates(labels, outcomes, cfg.bootstrap),
            "outcomes": {o: outcomes.count(o) for o in ("search", "answer", "neither")},
            "by_tool": by_tool(points, results, tools, cfg.bootstrap) if tools != ["search"] else {},
        }
    write_json(cfg.out, result)
    return result


@entry_point("evaluate.when_to_act")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(WhenToActConfig, "when_to_act", sys.argv[1:] if argv is None else argv, __doc__)
    result = run(cfg)
    for note in result["notes"]:
        print(f"note: {note}")
    for name, r in result["models"].items():
        print(
            f"{name}: search when needed {r['search_when_needed']['rate']} (n={r['search_when_needed']['n']}), "
            f"over-trigger {r['over_trigger']['rate']} (n={r['over_trigger']['n']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
