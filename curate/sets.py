"""``step=sets``: the three training sets, stratified, decontaminated and split by question.

Reads the score step's folder (``in=``), the scored trajectories and the pairs step's ``pairs.parquet``,
and writes into ``out``:

  rl_questions.jsonl       the RL question pool: training questions minus the eval split and contaminated ones
  pairs.parquet            ``n_pairs`` contrastive pairs (``PAIR_SCHEMA``), strata: direction × question type
  coa.parquet, cot.parquet ``n_coa`` / ``n_cot`` trajectories (trajectory schema + scores), strata:
                           number of search calls (0, 1, 2, 3, 4+) × question type
  eval_questions.parquet   the held-out questions (FlashRAG form: id, question, golden_answers, dataset)
  metrics.json             asked vs written per set, strata, review and exclusion counts

Rows qualify when kept by the score step (valid, not duplicated, not contaminated), correct (or
accepted by review), not rejected by review, and their question is neither in the eval split (the
first ``eval_questions`` of the core's seeded hash order, ``coa.questions.split_questions``) nor
matched by any evaluation question, the eval split included. Each stratum gets its share of the set in
proportion to what qualifies (largest remainder), at most ``max_per_question`` rows per question, in a
seeded hash order; ids stay the trajectory and pair ids. Asking for more than qualifies writes what
exists and says so on stderr and in the metrics.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import polars as pl

from coa.errors import reading
from coa.questions import DEFAULT_QUESTIONS, load_questions, write_questions
from coa.trajectory import PAIR_SCHEMA, TRAJECTORY_SCHEMA
from curate import io
from curate.answers import SCORES, score_frame
from curate.decontam import eval_question_ids, find_contamination, load_eval_questions
from curate.features import trajectory_features
from curate.review import read_review

_EXTRA = ["em", "f1", "cover_em", "autocoa_lenient", "correct", "n_calls", "qtype", "stratum", "reviewed"]


def question_types(questions: list[dict]) -> pl.DataFrame:
    """``question_id → qtype`` from the questions' ``metadata.type`` (HotpotQA: bridge / comparison)."""
    rows = [{"question_id": q["id"], "qtype": (q.get("metadata") or {}).get("type")} for q in questions]
    return pl.DataFrame(rows, schema={"question_id": pl.String, "qtype": pl.String}).drop_nulls()


def guess_type(question: pl.Expr) -> pl.Expr:
    """For questions without a recorded type: yes/no and "X or Y" questions compare, the rest bridge."""
    q = question.str.to_lowercase()
    compares = q.str.contains(" or ", literal=True) | q.str.contains(
        r"^(is|are|was|were|do|does|did|has|have|can|could)\s"
    )
    return pl.when(compares).then(pl.lit("comparison")).otherwise(pl.lit("bridge"))


def allocate(available: dict, n: int) -> dict:
    """Split ``n`` over strata in proportion to what each has (largest remainder), never above it."""
    total = sum(available.values())
    n = min(n, total)
    alloc = {s: 0 for s in available}
    while n > sum(alloc.values()):
        room = {s: available[s] - alloc[s] for s in available if available[s] > alloc[s]}
        left = n - sum(alloc.values())
        weight = sum(room.values())
        exact = {s: left * room[s] / weight for s in room}
        take = {s: int(exact[s]) for s in room}
        for s in sorted(room, key=lambda s: (-(exact[s] - take[s]), str(s)))[: left - sum(take.values())]:
            take[s] += 1
        for s, k in take.items():
            alloc[s] += min(k, room[s])
    return alloc


def stratified(df: pl.DataFrame, n: int, max_per_question: int, seed: int) -> pl.DataFrame:
    """``n`` rows of ``df`` (which has ``id``, ``question_id``, ``stratum``) by proportional allocation."""
    df = df.with_columns(_order=pl.col("id").hash(seed)).sort("_order", "id")
    if max_per_question:
        df = df.filter(pl.int_range(pl.len()).over("question_id") < max_per_question)
    alloc = allocate(dict(df.group_by("stratum").len().iter_rows()), n)
    quota = pl.DataFrame(
        {"stratum": list(alloc), "_quota": list(alloc.values())}, schema={"stratum": pl.String, "_quota": pl.Int64}
    )
    df = df.join(quota, on="stratum").filter(pl.int_range(pl.len()).over("stratum") < pl.col("_quota"))
    return df.sort("stratum", "_order", "id").drop("_order", "_quota")


def _rescore_trajectories(rows: pl.DataFrame, trajectories: pl.LazyFrame, review: pl.DataFrame, cfg) -> pl.DataFrame:
    """Score corrected rows again against their corrected answer."""
    fixes = review.filter(pl.col("corrected_answer").is_not_null()).select("row_id", "corrected_answer")
    todo = rows.join(fixes, left_on="id", right_on="row_id").select("id", "corrected_answer")
    if todo.height == 0:
        return rows
    traj = trajectories.filter(pl.col("id").is_in(todo["id"].implode())).collect().join(todo, on="id")
    traj = traj.with_columns(golden_answers=pl.concat_list("corrected_answer"))
    parts = [score_frame(trajectory_features(p, f)) for (f,), p in traj.group_by("format")]
    fixed = (
        pl.concat(parts)
        .select("id", "golden_answers", *SCORES)
        .with_columns(correct=pl.col(cfg.metric) >= cfg.threshold)
    )
    return rows.update(fixed, on="id")


def trajectory_set(
    scores: pl.DataFrame,
    mode: str,
    n: int,
    trajectories: pl.LazyFrame,
    review: pl.DataFrame,
    excluded: set[str],
    types: pl.DataFrame,
    cfg,
) -> tuple[pl.DataFrame, dict]:
    rows = scores.filter((pl.col("mode") == mode) & pl.col("kept") & ~pl.col("question_id").is_in(list(excluded)))
    rows = rows.join(review, left_on="id", right_on="row_id", how="left")
    swapped = rows.filter(pl.col("decision") == "swap")
    if swapped.height:
        raise ValueError(
            f"review: row {swapped['id'][0]!r} is a {mode} trajectory; 'swap' is a decision for pairs only"
        )
    rejected = rows.filter(pl.col("decision") == "reject").height
    rows = _rescore_trajectories(rows.filter(pl.col("decision").fill_null("") != "reject"), trajectories, review, cfg)
    rows = rows.filter(pl.col("correct") | (pl.col("decision") == "accept"))
    bucket = pl.when(pl.col("n_calls") >= 4).then(pl.lit("4+")).otherwise(pl.col("n_calls").cast(pl.String))
    rows = rows.join(types, on="question_id", how="left").with_columns(
        qtype=pl.col("qtype").fill_null(guess_type(pl.col("question")))
    )
    rows = rows.with_columns(
        stratum=pl.format("actions={}|{}", bucket, pl.col("qtype")), reviewed=pl.col("decision").is_not_null()
    )
    chosen = stratified(rows, n, cfg.max_per_question, cfg.seed)
    full = trajectories.filter(pl.col("id").is_in(chosen["id"].implode())).collect()
    full = full.drop("golden_answers").join(chosen.select("id", "golden_answers", *_EXTRA), on="id")
    full = full.select(*TRAJECTORY_SCHEMA.names, *_EXTRA).sort("stratum", "id")
    return full, {"qualified": rows.height, "review_rejected": rejected}


def pair_set(
    pairs: pl.DataFrame,
    branches: pl.DataFrame | None,
    n: int,
    review: pl.DataFrame,
    excluded: set[str],
    types: pl.DataFrame,
    cfg,
) -> tuple[pl.DataFrame, dict]:
    rows = pairs.filter(~pl.col("question_id").is_in(list(excluded))).join(
        review, left_on="id", right_on="row_id", how="left"
    )
    rejected = rows.filter(pl.col("decision") == "reject").height
    rows = swap_sides(rows.filter(pl.col("decision").fill_null("") != "reject"), pl.col("decision") == "swap")
    fixes = rows.filter(pl.col("corrected_answer").is_not_null())
    if fixes.height:
        if branches is None:
            raise ValueError("review corrects a pair's answer, but the pairs step's branches.parquet is missing")
        sides = []
        for side in ("chosen", "rejected"):
            b = fixes.select("id", "corrected_answer", bid=f"{side}_id").join(
                branches.select("id", "pred", "completion"), left_on="bid", right_on="id"
            )
            b = score_frame(b.with_columns(golden_answers=pl.concat_list("corrected_answer")))
            sides.append(b.select("id", **{f"{side}_score": pl.col(cfg.metric).cast(pl.Float32)}))
        fixed = sides[0].join(sides[1], on="id").join(fixes.select("id", "corrected_answer"), on="id")
        fixed = fixed.with_columns(golden_answers=pl.concat_list("corrected_answer")).drop("corrected_answer")
        rows = rows.update(fixed, on="id")
        still = (pl.col("chosen_score") >= cfg.threshold) & (pl.col("rejected_score") < cfg.threshold)
        rows = rows.filter(pl.col("corrected_answer").is_null() | still)
    rows = rows.join(types, on="question_id", how="left").with_columns(
        qtype=pl.col("qtype").fill_null(guess_type(pl.col("question")))
    )
    rows = rows.with_columns(stratum=pl.format("{}|{}", pl.col("direction"), pl.col("qtype")))
    chosen = stratified(rows, n, cfg.max_per_question, cfg.seed)
    return chosen, {
        "qualified": rows.height,
        "review_rejected": rejected,
        "review_swapped": rows.filter(pl.col("decision") == "swap").height,
    }


def swap_sides(pairs: pl.DataFrame, where: pl.Expr) -> pl.DataFrame:
    """Exchange chosen and rejected (text, ids, scores, turn ends) where ``where`` holds; act and no_act flip."""
    sides = ("", "_ends_turn", "_id", "_score")
    return pairs.with_columns(
        *[
            pl.when(where).then(pl.col(f"rejected{s}")).otherwise(pl.col(f"chosen{s}")).alias(f"chosen{s}")
            for s in sides
        ],
        *[
            pl.when(where).then(pl.col(f"chosen{s}")).otherwise(pl.col(f"rejected{s}")).alias(f"rejected{s}")
            for s in sides
        ],
        # a pair between two tools stays one ("tool"): its sides are both calls
        direction=pl.when(where & (pl.col("direction") == "act"))
        .then(pl.lit("no_act"))
        .when(where & (pl.col("direction") == "no_act"))
        .then(pl.lit("act"))
        .otherwise(pl.col("direction")),
    )


def _shout(name: str, asked: int, wrote: int, qualified: int) -> None:
    message = f"WARNING: {name}: asked for {asked} rows but only {qualified} qualify; wrote {wrote}"
    print(message, file=sys.stderr)
    warnings.warn(message, stacklevel=2)


def run(cfg) -> dict:
    source = io.scores_path(cfg.input[0] if cfg.input else "runs/curate/score")
    scores = io.read_scores(source)
    meta = source.parent / "metrics.json"
    traj_paths = cfg.trajectories or (io.read_metrics(meta).get("input") if meta.exists() else None)
    if not traj_paths:
        raise ValueError(f"{source}: cannot find the scored trajectories; set trajectories=[PATH,...]")
    trajectories = io.scan(traj_paths, TRAJECTORY_SCHEMA.names)
    pairs_dir = Path(cfg.pairs or "runs/curate/pairs")
    pairs = pl.DataFrame(schema=io.PAIR_TYPES)
    if cfg.n_pairs:
        pairs = io.scan(pairs_dir / "pairs.parquet", PAIR_SCHEMA.names, io.PAIR_TYPES).collect()
    branches = None
    if (pairs_dir / "branches.parquet").exists():
        with reading(pairs_dir / "branches.parquet"):
            branches = pl.read_parquet(pairs_dir / "branches.parquet")
    review = read_review(cfg.review)
    pool = load_questions(cfg.questions or DEFAULT_QUESTIONS)  # the training pool: question types, RL questions
    types = question_types(pool)

    held = eval_question_ids(scores["question_id"].to_list(), cfg.eval_questions, cfg.seed)
    questions = (
        scores.select("question_id", "question", "golden_answers", "dataset").unique("question_id").sort("question_id")
    )
    eval_split = questions.filter(pl.col("question_id").is_in(list(held))).rename({"question_id": "id"})
    evals = pl.concat(
        [
            load_eval_questions(cfg.eval_sets),
            eval_split.select(eval_set=pl.lit("curated eval split"), eval_id="id", eval_question="question"),
        ]
    )
    texts = pl.concat([scores.select("question_id", "question"), pairs.select("question_id", "question")]).unique()
    # one pass over every question text: the sets' rows and the RL pool are decontaminated alike
    hits = find_contamination(
        list({*texts["question"].to_list(), *(q["question"] for q in pool)}), evals, cfg.decontam_threshold
    )
    dirty = set(hits.filter("contaminated")["question"].to_list())
    contaminated = set(texts.filter(pl.col("question").is_in(list(dirty)))["question_id"].to_list()) - held
    excluded = held | contaminated
    rl_pool = [q for q in pool if q["id"] not in held and q["question"] not in dirty]

    out = Path(cfg.out_dir)
    written, counts = {}, {}
    for name, n in (("coa", cfg.n_coa), ("cot", cfg.n_cot)):
        rows, counts[name] = trajectory_set(scores, name, n, trajectories, review, excluded, types, cfg)
        io.write_parquet(rows, out / f"{name}.parquet")
        written[name] = rows
    chosen, counts["pairs"] = pair_set(pairs, branches, cfg.n_pairs, review, excluded, types, cfg)
    io.write_parquet(chosen, out / "pairs.parquet", schema=PAIR_SCHEMA)
    written["pairs"] = chosen
    io.write_parquet(eval_split, out / "eval_questions.parquet")
    write_questions(out / "rl_questions.jsonl", rl_pool)

    metrics = {
        "eval_questions": eval_split.height,
        "contaminated_questions_excluded": len(contaminated),
        "review_rows": review.height,
        "rl_questions": {
            "written": len(rl_pool),
            "removed_contaminated_or_eval": len(pool) - len(rl_pool),
            "eval_sets": [str(p) for p in cfg.eval_sets],
        },
    }
    for name, asked in (("pairs", cfg.n_pairs), ("coa", cfg.n_coa), ("cot", cfg.n_cot)):
        rows = written[name]
        metrics[name] = {
            "asked": asked,
            "written": rows.height,
            "questions": rows["question_id"].n_unique(),
            "strata": dict(rows.group_by("stratum").len().sort("stratum").iter_rows()),
            "short_by": max(asked - rows.height, 0),
            **counts[name],
        }
        if rows.height < asked:
            _shout(name, asked, rows.height, counts[name]["qualified"])
    io.write_metrics(out / "metrics.json", metrics)
    print(
        f"sets: {chosen.height} pairs, {written['coa'].height} CoA, {written['cot'].height} CoT; "
        f"{eval_split.height} eval questions → {out}"
    )
    return metrics
