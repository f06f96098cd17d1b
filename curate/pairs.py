"""``step=pairs``: prefix-matched contrastive pairs from scored branches (AutoCoA §3.2.1–3.2.2).

Reads branch rows (``mode="branch"``, ``branch_id = "<parent>:<decision_index>:<forbid|force>"``) that
synthesis wrote from the decision points, scores and validates each branch like any trajectory, and
at every decision point compares the two kinds:

  act      the acting (force) branches are right more often than the non-acting (forbid) ones:
           chosen = acting continuation, rejected = non-acting one ("CoT wrong, CoA right")
  no_act   the reverse: chosen = non-acting continuation ("CoA wrong, CoT right"), so the model also
           learns when not to search

A pair takes the first right branch of the winning kind and the first wrong branch of the other.
``chat_prompt`` + ``prefix`` (segments) is the shared context, identical for both sides by construction
(all branches of a point must share it byte for byte, else the point is skipped as ``prefix_mismatch``);
``prompt`` is its text. Synthesis aligned the prefix to a token boundary, so the continuations start
where the policy's generation would.
The acting continuation stops after its first search-close tag (``ends_turn`` False: no EOS may
follow it); the non-acting one runs to the answer (``ends_turn`` True).

Writes ``pairs.parquet`` (``PAIR_SCHEMA``), ``branches.parquet`` (each branch's scores and reasons)
and ``metrics.json``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import polars as pl

from coa.formats import get_format
from coa.trajectory import PAIR_SCHEMA, TRAJECTORY_SCHEMA, row_id
from curate import filters, io
from curate.score import scored_by_format


def parse_branch_ids(df: pl.DataFrame) -> pl.DataFrame:
    """``kind``, the ``tool`` it forces (``coa.trajectory.branch_tool``; null for forbid) and the decision point
    from ``branch_id``; a malformed id fails naming file, row and column."""
    parts = pl.col("branch_id").str.split(":")
    df = df.with_columns(
        kind=parts.list.last(),
        _di=parts.list.get(-2, null_on_oob=True),
        _parent=parts.list.slice(0, parts.list.len() - 2).list.join(":"),
    )
    forced = pl.col("kind").str.strip_prefix("force-")
    known = (pl.col("kind").is_in(["forbid", "force"])) | (
        pl.col("kind").str.starts_with("force-") & (forced != "") & (forced != "search")
    )
    df = df.with_columns(
        tool=pl.when(pl.col("kind") == "forbid")
        .then(pl.lit(None, pl.String))
        .when(pl.col("kind") == "force")
        .then(pl.lit("search"))
        .otherwise(forced)
    )
    bad = df.filter(
        ~known
        | (pl.col("_parent") != pl.col("parent_id"))
        | (pl.col("_di") != pl.col("decision_index").cast(pl.String))
        | (pl.col("mode") != "branch")
    )
    if bad.height:
        r = bad.row(0, named=True)
        raise ValueError(
            f"{r['_file']}: row id {r['id']!r}: column 'branch_id' is {r['branch_id']!r}; expected "
            f"'<parent_id>:<decision_index>:<forbid|force|force-TOOL>' matching parent_id {r['parent_id']!r}, "
            f"decision_index {r['decision_index']} and mode 'branch' (got mode {r['mode']!r})"
        )
    return df.drop("_di", "_parent")


def continuation_columns(fmt_name: str) -> list[pl.Expr]:
    """The shared prefix text, its fingerprint, and the continuation cut as each pair side needs it."""
    fmt = get_format(fmt_name)
    opens = [fmt.search_open] + ([fmt.call_open] if fmt.call_open else [])
    closes = [fmt.search_close] + ([fmt.call_close] if fmt.call_close else [])
    di = pl.col("decision_index")
    texts = pl.col("segments").list.eval(pl.element().struct.field("text"))
    prefix = texts.list.head(di).list.join("")
    cont = texts.list.slice(di).list.join("")
    return [
        (pl.col("prompt") + prefix).alias("shared"),
        pl.col("segments").list.head(di).alias("prefix_segments"),
        pl.struct(pl.col("prompt"), pl.col("segments").list.head(di)).hash().alias("prefix_hash"),
        cont.alias("continuation"),
        cont.str.extract("(?s)^(.*?(?:" + "|".join(map(re.escape, closes)) + "))", 1).alias("acting_text"),
        pl.any_horizontal(cont.str.starts_with(tag) for tag in opens).alias("starts_with_call"),
        pl.col("segments")
        .list.slice(di)
        .list.eval(pl.element().struct.field("kind") == "observation")
        .list.any()
        .alias("cont_searched"),
    ]


def score_branches(df: pl.DataFrame, cfg) -> pl.DataFrame:
    df = scored_by_format(df, continuation_columns).with_columns(filters.row_reasons(cfg))
    forbid, force = pl.col("kind") == "forbid", pl.col("kind") != "forbid"
    df = df.with_columns(
        searched_when_forbidden=forbid & (pl.col("cont_searched") | (pl.col("finish_reason") == "forbidden_search")),
        no_call_when_forced=force & pl.col("acting_text").is_null(),
        correct=pl.col(cfg.metric) >= cfg.threshold,
    )
    reasons = (*filters.ROW_REASONS, "searched_when_forbidden", "no_call_when_forced")
    return filters.assemble(df, reasons)


def mine(branches: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    """Pairs from valid branches: at each decision point, every forced tool against answering from memory
    (``act``/``no_act``, one pair per tool at most) and each two forced tools against each other (``tool``:
    chosen = the better tool's call); plus counts of points without any pair."""
    point = ["parent_id", "decision_index"]
    mixed = branches.group_by(point).agg(pl.col("prefix_hash").n_unique().alias("n_prefix"))
    ok = branches.join(mixed.filter(pl.col("n_prefix") == 1), on=point).filter("kept")
    rates = ok.group_by(*point, "kind", "tool").agg(rate=pl.col("correct").mean())
    # contests: (a, b) at one point, a a forced tool; b the no-tool branch, or another forced tool after a
    a, b = (rates.rename({c: f"{c}_{x}" for c in ("kind", "tool", "rate")}) for x in "ab")
    contests = a.join(b, on=point).filter(
        (pl.col("kind_a") != "forbid") & ((pl.col("kind_b") == "forbid") | (pl.col("kind_a") < pl.col("kind_b")))
    )
    versus_memory = pl.col("kind_b") == "forbid"
    a_wins, b_wins = pl.col("rate_a") > pl.col("rate_b"), pl.col("rate_a") < pl.col("rate_b")
    contests = contests.with_columns(
        direction=pl.when(versus_memory & a_wins)
        .then(pl.lit("act"))
        .when(versus_memory & b_wins)
        .then(pl.lit("no_act"))
        .when(a_wins | b_wins)
        .then(pl.lit("tool")),
        winner=pl.when(a_wins).then("kind_a").otherwise("kind_b"),
        loser=pl.when(a_wins).then("kind_b").otherwise("kind_a"),
        # the tool the pair is about: the acting side's against memory, "better>worse" between two tools
        pair_tool=pl.when(versus_memory)
        .then(pl.col("tool_a"))
        .when(a_wins)
        .then(pl.format("{}>{}", "tool_a", "tool_b"))
        .otherwise(pl.format("{}>{}", "tool_b", "tool_a")),
    )
    first = ok.sort("sample", "id").group_by(*point, "kind", "correct", maintain_order=True).first()
    chosen = contests.drop_nulls("direction").join(
        first.filter("correct"), left_on=[*point, "winner"], right_on=[*point, "kind"]
    )
    pairs = chosen.join(
        first.filter(~pl.col("correct")), left_on=[*point, "loser"], right_on=[*point, "kind"], suffix="_r"
    )
    side = {"chosen": ("winner", ""), "rejected": ("loser", "_r")}
    texts = {
        name: pl.when(pl.col(kind) == "forbid")
        .then(pl.col(f"continuation{suffix}"))
        .otherwise(pl.col(f"acting_text{suffix}"))
        for name, (kind, suffix) in side.items()
    }
    pairs = pairs.select(
        "question_id",
        "question",
        "golden_answers",
        "format",
        "direction",
        "decision_index",
        "pair_tool",
        prompt=pl.col("shared"),
        chat_prompt=pl.col("prompt"),
        prefix=pl.col("prefix_segments"),
        chosen=texts["chosen"],
        rejected=texts["rejected"],
        chosen_ends_turn=pl.col("winner") == "forbid",
        rejected_ends_turn=pl.col("loser") == "forbid",
        chosen_id="id",
        rejected_id="id_r",
        parent_id="parent_id",
        chosen_score=pl.col("score"),
        rejected_score=pl.col("score_r"),
    )
    # search against memory keeps the key it had when search was the only tool
    key = pl.when(pl.col("pair_tool") == "search").then(pl.lit("")).otherwise(pl.format(":{}", "pair_tool"))
    keys = pairs.select("question_id", pl.format("{}:{}:{}{}", "parent_id", "decision_index", "direction", key))
    ids = [row_id(q, "pair", 0, k) for q, k in keys.iter_rows()]
    pairs = pairs.with_columns(id=pl.Series(ids, dtype=pl.String)).sort("id")
    n_points = branches.select(point).unique().height
    rated = rates.select(point).unique().join(pairs.select(point).unique(), on=point, how="anti")
    contested = contests.select(point).unique()
    skipped = {
        "prefix_mismatch": mixed.filter(pl.col("n_prefix") > 1).height,
        "missing_valid_kind": rated.join(contested, on=point, how="anti").height,
        "no_contrast": rated.join(contested, on=point).height,
    }
    skipped["no_branch_valid"] = n_points - rates.select(point).unique().height - skipped["prefix_mismatch"]
    by_tool = pairs.group_by("direction", "pair_tool").len().sort("direction", "pair_tool")
    return pairs.drop("pair_tool"), {
        "decision_points": n_points,
        "pairs": pairs.height,
        "by_direction": dict(pairs.group_by("direction").len().sort("direction").iter_rows()),
        "by_tool": {f"{d}:{t}": n for d, t, n in by_tool.iter_rows()},
        "points_without_pair": skipped,
    }


def run(cfg) -> dict:
    started = time.perf_counter()
    inputs = cfg.input or ["runs/synth/branch"]
    files = io.parquet_files(inputs)
    io.check_formats(files)
    df = io.scan(files, TRAJECTORY_SCHEMA.names, file_column="_file").collect()
    io.check_unique_ids(df)
    df = parse_branch_ids(df)
    branches = score_branches(df, cfg).with_columns(score=pl.col(cfg.metric))
    pairs, counts = mine(branches)
    out = Path(cfg.out_dir)
    io.write_parquet(pairs, out / "pairs.parquet", schema=PAIR_SCHEMA)
    keep = [
        "id",
        "question_id",
        "parent_id",
        "decision_index",
        "kind",
        "sample",
        "format",
        "pred",
        "completion",
        "em",
        "f1",
        "cover_em",
        "autocoa_lenient",
        "correct",
        "n_calls",
        "starts_with_call",
        "reasons",
        "drop_reason",
        "kept",
    ]
    io.write_parquet(branches.select(keep), out / "branches.parquet")
    metrics = {
        **counts,
        "branches": branches.height,
        "branches_by_kind": {
            r.pop("kind"): r
            for r in branches.group_by("kind")
            .agg(rows=pl.len(), kept=pl.col("kept").sum(), kept_correct=(pl.col("kept") & pl.col("correct")).sum())
            .sort("kind")
            .to_dicts()
        },
        "reasons": filters.reason_counts(branches),
        "input": [str(p) for p in inputs],
        "metric": cfg.metric,
        "threshold": cfg.threshold,
        "seconds": round(time.perf_counter() - started, 2),
    }
    io.write_metrics(out / "metrics.json", metrics)
    print(f"{counts['pairs']} pairs from {counts['decision_points']} decision points → {out}")
    return metrics
