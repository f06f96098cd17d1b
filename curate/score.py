"""``step=score``: score, validate, deduplicate and decontaminate trajectories.

Reads trajectory parquet (files or shard folders, lazily, ``batch_rows`` at a time) and writes
``scores.parquet``: one row per trajectory with its id and question, the extracted answer, the four
scores (``em``, ``f1``, ``cover_em``, ``autocoa_lenient``) and ``correct`` (``metric >= threshold``),
the derived facts (``n_calls``, where the first call happens, lengths, repetition statistics), the
duplicate and contamination matches, and ``reasons`` / ``drop_reason`` / ``kept`` (see filters.py).
Later steps join it to the trajectories by ``id``; the trajectories themselves are not copied.
``metrics.json`` counts rows, reasons and scores per mode.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl

from coa.formats import get_format
from curate import dedup, filters, io
from curate.answers import SCORES, score_frame
from curate.decontam import find_contamination, load_eval_questions
from curate.features import trajectory_features

COLUMNS = [
    "id",
    "question_id",
    "dataset",
    "question",
    "golden_answers",
    "mode",
    "sample",
    "branch_id",
    "parent_id",
    "decision_index",
    "format",
    "segments",
    "finish_reason",
    "n_actions",
]
_HEAVY = ["segments", "completion", "model_text", "words"]


def scored_by_format(df: pl.DataFrame, extra=lambda fmt: ()) -> pl.DataFrame:
    """Features, answer scores and quality columns, one format preset at a time (``extra(fmt)``: more
    columns of that preset). An empty input still gets every column."""
    parts = []
    groups = df.group_by("format", maintain_order=True) if df.height else [(("autocoa",), df)]
    for (fmt,), part in groups:
        part = trajectory_features(part, fmt).with_columns(*extra(fmt), words=filters.words(pl.col("model_text")))
        parts.append(filters.quality_columns(score_frame(part), get_format(fmt)))
    return pl.concat(parts, how="vertical_relaxed")


def score_batch(df: pl.DataFrame, cfg) -> tuple[pl.DataFrame, np.ndarray]:
    """Row-level work on one batch: features, scores, quality and row reasons, plus MinHash signatures."""
    df = scored_by_format(df).with_columns(filters.row_reasons(cfg), text_hash=pl.col("model_text").hash(cfg.seed))
    sig = dedup.minhash(df["words"], cfg.minhash_perms, cfg.shingle, cfg.seed)
    return df.drop(_HEAVY), sig


def mark_duplicates(df: pl.DataFrame, sig: np.ndarray, cfg) -> pl.DataFrame:
    """``duplicate``/``near_duplicate`` flags and the id each row duplicates, among rows that pass the row filters."""
    df = df.with_row_index("_i")
    alive = pl.all_horizontal([~pl.col(r) for r in filters.ROW_REASONS])
    order = ["question_id", "mode", "_wrong", "sample", "id"]
    cand = df.filter(alive).with_columns(_wrong=~pl.col("correct")).sort(order)
    first = pl.col("id").first().over("question_id", "mode", "text_hash")
    cand = cand.with_columns(duplicate_of=pl.when(pl.col("id") != first).then(first))
    rest = cand.filter(pl.col("duplicate_of").is_null())
    groups = rest["question_id"] + "\x1f" + rest["mode"]
    flag, of = dedup.near_duplicates(groups, sig[rest["_i"].to_numpy()], cfg.lsh_bands, cfg.near_dup_threshold)
    of_ids = rest["id"].gather(np.maximum(of, 0))
    near = rest.select("_i", near_duplicate_of=pl.when(pl.Series(flag)).then(of_ids))
    df = df.join(cand.select("_i", "duplicate_of"), on="_i", how="left").join(near, on="_i", how="left")
    return df.with_columns(
        duplicate=pl.col("duplicate_of").is_not_null(), near_duplicate=pl.col("near_duplicate_of").is_not_null()
    ).drop("_i", "text_hash")


def decontaminate(df: pl.DataFrame, cfg) -> tuple[pl.DataFrame, dict]:
    evals = load_eval_questions(cfg.eval_sets)
    matches = find_contamination(df["question"].unique().to_list(), evals, cfg.decontam_threshold)
    df = df.join(matches, on="question", how="left").with_columns(pl.col("contaminated").fill_null(False))
    hit = matches.filter("contaminated")
    return df, {
        "eval_questions": evals.height,
        "questions": matches.height,
        "contaminated_questions": hit.height,
        "by_kind": dict(hit.group_by("contamination").len().iter_rows()),
        "by_eval_set": dict(hit.group_by("eval_set").len().iter_rows()),
    }


def summarize(df: pl.DataFrame) -> dict:
    by_mode = df.group_by("mode").agg(
        rows=pl.len(),
        kept=pl.col("kept").sum(),
        correct=pl.col("correct").sum(),
        kept_correct=(pl.col("kept") & pl.col("correct")).sum(),
        **{f"mean_{s}": pl.col(s).mean() for s in SCORES},
        mean_calls=pl.col("n_calls").mean(),
    )
    return {
        "rows": df.height,
        "kept": int(df["kept"].sum()),
        "questions": df["question_id"].n_unique(),
        "reasons": filters.reason_counts(df),
        "parsed_by_python": int(df["parsed_by_python"].sum()),
        "scored_by_python": int(df["scored_by_python"].sum()),
        "by_mode": {r.pop("mode"): r for r in by_mode.sort("mode").to_dicts()},
    }


def run(cfg) -> dict:
    started = time.perf_counter()
    inputs = cfg.input or ["runs/synth/cot", "runs/synth/coa"]
    files = io.parquet_files(inputs)
    io.check_formats(files)
    batches, sigs = [], []
    for batch in io.scan(files, COLUMNS, file_column="_file").collect_batches(chunk_size=cfg.batch_rows):
        small, sig = score_batch(batch, cfg)
        batches.append(small)
        sigs.append(sig)
    df = pl.concat(batches, how="vertical_relaxed") if batches else None
    if df is None or df.height == 0:
        raise ValueError(f"{', '.join(map(str, inputs))}: no trajectories to score")
    io.check_unique_ids(df)
    df = df.drop("_file")
    phases = {"read_score_filter": time.perf_counter() - started}
    df = df.with_columns(correct=pl.col(cfg.metric) >= cfg.threshold)
    df = mark_duplicates(df, np.vstack(sigs), cfg)
    phases["dedup"] = time.perf_counter() - started - sum(phases.values())
    df, contamination = decontaminate(df, cfg)
    phases["decontaminate"] = time.perf_counter() - started - sum(phases.values())
    df = filters.assemble(df)
    out = io.write_parquet(df, f"{cfg.out_dir}/scores.parquet")
    elapsed = time.perf_counter() - started
    phases["write"] = elapsed - sum(phases.values())
    metrics = {
        **summarize(df),
        "contamination": contamination,
        "input": [str(p) for p in inputs],
        "metric": cfg.metric,
        "threshold": cfg.threshold,
        "seconds": round(elapsed, 2),
        "phase_seconds": {k: round(v, 2) for k, v in phases.items()},
        "rows_per_s": round(df.height / elapsed, 1),
    }
    io.write_metrics(f"{cfg.out_dir}/metrics.json", metrics)
    print(f"scored {df.height} trajectories ({metrics['kept']} kept) in {elapsed:.1f}s → {out}")
    return metrics
