"""``step=analyze``: error analysis of scored trajectories, and the decision points for branching.

Reads the score step's ``scores.parquet`` (``in=`` its folder) and writes into ``out``:

  metrics.json           the numbers below
  two_by_two.png         questions by CoT right/wrong × CoA right/wrong (a mode is "right" on a
                         question when at least half its samples are correct)
  success_by_actions.png CoA success rate by number of tool calls
  calls_by_tool.png      per tool: calls, CoA trajectories calling it and their success (metrics: also per 2×2 cell)
  first_action.png       where in the model-written text the first search call starts, with success
  drop_reasons.png       rows dropped per first reason
  decisions.parquet      decision rows (curate/decisions.py) for ``synth mode=branch``: from kept,
                         acting CoA trajectories (eval-split questions included: held-out decision points), ``decisions_per_question``
                         parents per question, before the first call or (decision_points=every) each call
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from coa.trajectory import TRAJECTORY_SCHEMA
from curate import io, plots
from curate.decisions import decision_rows
from curate.decontam import eval_question_ids

_LABELS = [f"{10 * i}-{10 * i + 10}%" for i in range(10)]


def two_by_two(scores: pl.DataFrame) -> dict:
    per_q = (
        scores.filter(pl.col("mode").is_in(["cot", "coa"]))
        .group_by("question_id")
        .agg(
            cot=pl.col("correct").filter(pl.col("mode") == "cot").mean(),
            coa=pl.col("correct").filter(pl.col("mode") == "coa").mean(),
        )
        .drop_nulls()
    )
    cot, coa = pl.col("cot") >= 0.5, pl.col("coa") >= 0.5
    cells = per_q.select(
        cot_right_coa_right=(cot & coa).sum(),
        cot_right_coa_wrong=(cot & ~coa).sum(),
        cot_wrong_coa_right=(~cot & coa).sum(),
        cot_wrong_coa_wrong=(~cot & ~coa).sum(),
    ).row(0, named=True)
    return {"questions": per_q.height, **{k: int(v) for k, v in cells.items()}}


def by_actions(scores: pl.DataFrame) -> list[dict]:
    return (
        scores.filter(pl.col("mode") == "coa")
        .group_by("n_calls")
        .agg(rows=pl.len(), success=pl.col("correct").mean(), kept=pl.col("kept").sum())
        .sort("n_calls")
        .to_dicts()
    )


def by_tool(scores: pl.DataFrame) -> list[dict]:
    """Per tool the CoA trajectories call: its calls, the trajectories calling it, their success and how many
    are kept, and the questions of each 2×2 cell whose CoA called it (the cell from ``two_by_two``'s rule)."""
    coa = scores.filter(pl.col("mode") == "coa")
    if "tools_called" not in coa.columns or coa.height == 0:  # scores written before tools were counted
        return []
    calls = coa.select(tool=pl.col("tools_called")).explode("tool").drop_nulls().group_by("tool").len(name="calls")
    users = coa.select("question_id", "correct", "kept", tool=pl.col("tools_called").list.unique()).explode("tool")
    stats = (
        users.drop_nulls("tool")
        .group_by("tool")
        .agg(rows=pl.len(), success=pl.col("correct").mean(), kept=pl.col("kept").sum())
        .join(calls, on="tool")
    )
    per_q = (
        scores.filter(pl.col("mode").is_in(["cot", "coa"]))
        .group_by("question_id")
        .agg(
            cot=pl.col("correct").filter(pl.col("mode") == "cot").mean() >= 0.5,
            coa=pl.col("correct").filter(pl.col("mode") == "coa").mean() >= 0.5,
        )
    )
    cell = (
        pl.when(pl.col("cot"))
        .then(pl.lit("cot_right_"))
        .otherwise(pl.lit("cot_wrong_"))
        .add(pl.when(pl.col("coa")).then(pl.lit("coa_right")).otherwise(pl.lit("coa_wrong")))
    )
    cells = (
        users.drop_nulls("tool")
        .select("question_id", "tool")
        .unique()
        .join(per_q.drop_nulls().with_columns(cell=cell), on="question_id")
        .group_by("tool", "cell")
        .len()
    )
    out = []
    for row in stats.sort("tool").to_dicts():
        mine = cells.filter(pl.col("tool") == row["tool"])
        out.append(row | {"two_by_two": dict(mine.select("cell", "len").sort("cell").iter_rows())})
    return out


def first_actions(scores: pl.DataFrame) -> tuple[list[dict], dict]:
    acting = scores.filter((pl.col("mode") == "coa") & pl.col("first_action_frac").is_not_null())
    decile = (pl.col("first_action_frac") * 10).floor().clip(0, 9).cast(pl.Int32)
    bins = (
        acting.with_columns(decile=decile)
        .group_by("decile")
        .agg(rows=pl.len(), success=pl.col("correct").mean())
        .sort("decile")
        .with_columns(bin=pl.col("decile").replace_strict(list(range(10)), _LABELS))
        .drop("decile")
        .to_dicts()
    )
    stats = (
        acting.select(
            median_frac=pl.col("first_action_frac").median(),
            median_chars=pl.col("first_action_char").median(),
            at_start=(pl.col("first_action_char") == 0).mean(),
        ).row(0, named=True)
        if acting.height
        else {}
    )
    return bins, stats


def choose_parents(scores: pl.DataFrame, cfg) -> pl.DataFrame:
    """Kept, acting CoA trajectories; the first ``decisions_per_question`` of each question. Questions of
    the curated eval split get decision points too: their pairs never reach a training set (``step=sets``
    excludes the split) and are the held-out decision points of ``evaluate.when_to_act``."""
    parents = scores.filter((pl.col("mode") == "coa") & pl.col("kept") & (pl.col("n_calls") > 0)).sort(
        "question_id", "sample", "id"
    )
    if cfg.decisions_per_question:
        parents = parents.filter(pl.int_range(pl.len()).over("question_id") < cfg.decisions_per_question)
    return parents.select("id", "question_id")


def run(cfg) -> dict:
    source = io.scores_path(cfg.input[0] if cfg.input else "runs/curate/score")
    scores = io.read_scores(source)
    score_metrics = io.read_metrics(source.parent / "metrics.json") if (source.parent / "metrics.json").exists() else {}
    out = Path(cfg.out_dir)
    grid = two_by_two(scores)
    actions = by_actions(scores)
    bins, first_stats = first_actions(scores)
    tools = by_tool(scores)
    dropped = scores.filter(~pl.col("kept")).group_by("drop_reason").len()
    plots.two_by_two(grid, out / "two_by_two.png")
    plots.success_by_actions(actions, out / "success_by_actions.png")
    plots.first_action(bins, out / "first_action.png")
    plots.calls_by_tool(tools, out / "calls_by_tool.png")
    plots.drop_reasons(dict(dropped.iter_rows()), scores.height, out / "drop_reasons.png")

    held = eval_question_ids(scores["question_id"].to_list(), cfg.eval_questions, cfg.seed)
    parents = choose_parents(scores, cfg)
    traj_paths = cfg.trajectories or score_metrics.get("input") or []
    decisions = pl.DataFrame(schema=io.TRAJECTORY_TYPES)
    if parents.height:
        if not traj_paths:
            raise ValueError(f"{source}: cannot find the scored trajectories; set trajectories=[PATH,...]")
        trajectories = io.scan(traj_paths, TRAJECTORY_SCHEMA.names).filter(pl.col("id").is_in(parents["id"].implode()))
        decisions = decision_rows(trajectories.collect(), every=cfg.decision_points == "every")
    io.write_parquet(decisions, out / "decisions.parquet", schema=TRAJECTORY_SCHEMA)
    metrics = {
        "rows": scores.height,
        "two_by_two": grid,
        "success_by_actions": actions,
        "by_tool": tools,
        "first_action": {"bins": bins, **first_stats},
        "rows_by_mode": dict(scores.group_by("mode").len().sort("mode").iter_rows()),
        "success_by_mode": dict(scores.group_by("mode").agg(pl.col("correct").mean()).sort("mode").iter_rows()),
        "decisions": {
            "parents": parents.height,
            "rows": decisions.height,
            "points": cfg.decision_points,
            "heldout_points": parents.filter(pl.col("question_id").is_in(list(held))).height,
        },
    }
    io.write_metrics(out / "metrics.json", metrics)
    print(f"analyzed {scores.height} trajectories; {decisions.height} decision points → {out}")
    return metrics
