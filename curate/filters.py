"""Validation filters: each is a named boolean column, ``True`` meaning "drop, for this reason".

A row keeps every reason that applies (``reasons``), the first one in ``REASONS`` order as its
``drop_reason``, and ``kept`` when it has none. Reasons, in order:

  no_answer, unbalanced_tags, search_after_answer, empty_query   the format preset's parse (features.py)
  model_observation, orphan_observation   observations only where the environment wrote them
  unfinished          finish_reason outside ``finish_reasons`` (max_tokens, max_actions, error, ...)
  too_few_actions / too_many_actions   search calls outside [min_actions, max_actions] (CoT: none allowed)
  too_short / too_long                 model-written characters outside [min_chars, max_chars]
  repetition          degenerate loops: many repeated sentences, or very few distinct words
  repeated_query      the same search query issued twice
  duplicate / near_duplicate           same question, same or nearly the same model text (dedup.py)
  contaminated        the question matches an evaluation question (decontam.py)
"""

from __future__ import annotations

import polars as pl

from coa.formats import FormatPreset
from curate import text
from curate.features import PARSE_REASONS, SEGMENT_REASONS

ROW_REASONS = (
    *PARSE_REASONS,
    *SEGMENT_REASONS,
    "unfinished",
    "too_few_actions",
    "too_many_actions",
    "too_short",
    "too_long",
    "repetition",
    "repeated_query",
)
REASONS = (*ROW_REASONS, "duplicate", "near_duplicate", "contaminated")


def words(model_text: pl.Expr) -> pl.Expr:
    """Lower-cased words of the model-written text, split at single spaces and newlines (runs of
    spaces leave empty strings, which the counts skip); shared with the MinHash."""
    return model_text.str.to_lowercase().str.replace_all("\n", " ", literal=True).str.split(" ")


def quality_columns(df: pl.DataFrame, fmt: FormatPreset) -> pl.DataFrame:
    """Repetition statistics of the model-written text (needs ``words``) and its queries."""
    # sentences: split at line breaks and after ". ", "? ", "! " (literal replacements: far cheaper than a regex)
    sentences = pl.col("model_text").str.replace_many([". ", "? ", "! "], [".\n", "?\n", "!\n"]).str.split("\n")
    df = df.with_columns(
        _sentences=sentences,
        _queries=text.queries(pl.col("model_text"), fmt).list.eval(pl.element().str.to_lowercase()),
    )

    def distinct(col: str) -> tuple[pl.Expr, pl.Expr]:
        """(non-empty items, distinct non-empty items): blank lines and double spaces leave empty strings."""
        empty = pl.col(col).list.count_matches("")
        return pl.col(col).list.len() - empty, pl.col(col).list.n_unique() - (empty > 0).cast(pl.UInt32)

    n_sentences, unique_sentences = distinct("_sentences")
    n_words, unique_words = distinct("words")
    return df.with_columns(
        n_sentences=n_sentences.cast(pl.Int32),
        repeat_frac=(1 - unique_sentences / n_sentences).fill_nan(0.0).cast(pl.Float32),
        n_words=n_words.cast(pl.Int32),
        unique_word_frac=(unique_words / n_words).fill_nan(1.0).cast(pl.Float32),
        repeated_query=pl.col("_queries").list.n_unique() < pl.col("_queries").list.len(),
    ).drop("_sentences", "_queries")


def row_reasons(cfg) -> list[pl.Expr]:
    """The row-level reasons of ``REASONS`` as boolean columns (parse and segment ones already exist)."""
    mode = pl.col("mode")
    lo = pl.when(mode == "coa").then(cfg.min_actions).otherwise(0)
    hi = pl.when(mode == "cot").then(0).otherwise(cfg.max_actions)
    long_text = pl.col("n_words") >= cfg.repeat_min_words
    return [
        (~pl.col("finish_reason").fill_null("").is_in(list(cfg.finish_reasons))).alias("unfinished"),
        (pl.col("n_calls") < lo).alias("too_few_actions"),
        (pl.col("n_calls") > hi).alias("too_many_actions"),
        (pl.col("model_chars") < cfg.min_chars).alias("too_short"),
        (pl.col("model_chars") > cfg.max_chars).alias("too_long"),
        (
            ((pl.col("n_sentences") >= cfg.repeat_min_sentences) & (pl.col("repeat_frac") > cfg.max_repeat_frac))
            | (long_text & (pl.col("unique_word_frac") < cfg.min_unique_word_frac))
        ).alias("repetition"),
        (pl.col("repeated_query") & pl.lit(not cfg.allow_repeated_queries)).alias("repeated_query"),
    ]


def assemble(df: pl.DataFrame, reasons=REASONS) -> pl.DataFrame:
    """``reasons`` (all that apply), ``drop_reason`` (the first) and ``kept``; drops the flag columns."""
    flags = [pl.when(pl.col(r).fill_null(False)).then(pl.lit(r)) for r in reasons]
    joined = pl.concat_str(flags, separator=",", ignore_nulls=True)  # far cheaper than a list of 19 columns
    df = df.with_columns(
        reasons=pl.when(joined == "").then(pl.lit([], pl.List(pl.String))).otherwise(joined.str.split(",")),
        drop_reason=pl.coalesce(flags),
    )
    return df.with_columns(kept=pl.col("drop_reason").is_null()).drop(list(reasons))


def reason_counts(df: pl.DataFrame) -> dict:
    """How many rows each reason dropped: as the first reason, and among all reasons."""
    first = df.filter(~pl.col("kept")).group_by("drop_reason").len()
    every = df.select(pl.col("reasons").explode().drop_nulls()).group_by("reasons").len()
    return {
        "first": {r: n for r, n in sorted(first.iter_rows(), key=lambda x: -x[1])},
        "any": {r: n for r, n in sorted(every.iter_rows(), key=lambda x: -x[1])},
    }
