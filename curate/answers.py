"""The four answer scores of ``coa.score`` over a whole frame, best over all gold aliases.

``score_frame(df)`` needs ``pred`` (the preset's extracted answer, null if none), ``completion`` (the
rendered segments, which the AutoCoA scorer reads itself) and ``golden_answers``; it adds ``em``,
``f1``, ``cover_em``, ``subem`` and ``autocoa_lenient`` (float32). Aliases are exploded into rows, scored with
expressions and reduced with a max per trajectory; F1's multiset overlap is a join of token counts.
Rows holding a character on which Python's and Rust's word boundaries disagree are scored by the
core functions themselves (``scored_by_python``), so every value equals ``coa.score``'s.
"""

from __future__ import annotations

import polars as pl

from coa import score as core
from curate import text

SCORES = ("em", "f1", "cover_em", "subem", "autocoa_lenient")
_YES_NO = ["yes", "no", "noanswer"]


def subem(pred_norm: pl.Expr, gold_norm: pl.Expr) -> pl.Expr:
    """Search-R1 / FlashRAG ``subem`` on normalised text: the gold is a substring of the prediction
    (no word boundaries; an empty gold matches). False where the prediction is null; equals
    ``coa.score.subem`` on every row (tests/curate/test_answers.py)."""
    return (pred_norm.is_not_null() & pred_norm.str.contains(gold_norm, literal=True)).fill_null(False)


def _per_row(df: pl.DataFrame) -> pl.DataFrame:
    # staged so that each long-text pass runs once (eager frames do not share subexpressions)
    rows = df.select("_r", "pred", "completion", _tail=text.autocoa_tail(pl.col("completion")))
    rows = rows.select(
        "_r",
        "pred",
        _tail=pl.when(text.autocoa_gate(pl.col("completion"), pl.col("_tail"))).then(text.strip(pl.col("_tail"))),
    )
    rows = rows.with_columns(_raw=text.autocoa_extract_raw(pl.col("_tail")))
    return rows.select(
        "_r",
        "pred",
        p=text.normalize_answer(pl.col("pred")),
        lenient=text.autocoa_normalize(pl.col("_raw")),
        _mismatch=text.word_mismatch(pl.col("pred")) | text.word_mismatch(pl.col("_raw")),
    )


def _f1(rows: pl.DataFrame, aliases: pl.DataFrame) -> pl.DataFrame:
    """Token-multiset F1 per alias row (HotpotQA's yes/no rule included)."""
    pt = rows.select("_r", tok=pl.col("p").str.split(" ")).explode("tok").group_by("_r", "tok").len("cp")
    gt = aliases.select("_r", "_a", tok=pl.col("g").str.split(" ")).explode("tok").group_by("_r", "_a", "tok").len("cg")
    same = gt.join(pt, on=["_r", "tok"]).group_by("_r", "_a").agg(same=pl.min_horizontal("cp", "cg").sum())
    return same


def score_frame(df: pl.DataFrame) -> pl.DataFrame:
    """Add ``em``, ``f1``, ``cover_em``, ``subem``, ``autocoa_lenient`` and ``scored_by_python`` to ``df``."""
    df = df.with_row_index("_r")
    rows = _per_row(df)
    aliases = (
        df.select("_r", g_raw=pl.col("golden_answers"))
        .explode("g_raw")
        .drop_nulls("g_raw")
        .with_row_index("_a")
        .with_columns(
            g=text.normalize_answer(pl.col("g_raw")),
            g_auto=text.autocoa_normalize(pl.col("g_raw")),
            _gm=text.word_mismatch(pl.col("g_raw")),
        )
    )
    aliases = aliases.join(rows, on="_r")
    aliases = aliases.join(_f1(rows, aliases), on=["_r", "_a"], how="left").with_columns(pl.col("same").fill_null(0))
    has_pred = pl.col("pred").is_not_null()
    p, g, ans, ga = pl.col("p"), pl.col("g"), pl.col("lenient"), pl.col("g_auto")
    n_p, n_g = p.str.count_matches(" ") + 1, g.str.count_matches(" ") + 1
    precision, recall = pl.col("same") / n_p, pl.col("same") / n_g
    yes_no_clash = (p.is_in(_YES_NO) | g.is_in(_YES_NO)) & (p != g)
    gold_words = ga.str.split(" ").list.unique()
    words_rule = gold_words.list.set_intersection(ans.str.split(" ")).list.len() >= pl.lit(0.7) * gold_words.list.len()
    per_alias = aliases.select(
        "_r",
        em=(has_pred & (p == g)).cast(pl.Float64),
        f1=pl.when(has_pred & (pl.col("same") > 0) & ~yes_no_clash & (p != "") & (g != ""))
        .then(2 * precision * recall / (precision + recall))
        .otherwise(0.0),
        cover_em=(has_pred & (g != "") & (" " + p + " ").str.contains(" " + g + " ", literal=True)).cast(pl.Float64),
        subem=(has_pred & subem(p, g)).cast(pl.Float64),
        autocoa_lenient=pl.when((pl.col("g_raw") == "") | ans.is_null())
        .then(0.0)
        .when(ans == ga)
        .then(1.0)
        .when(ans.str.contains(ga, literal=True) | ga.str.contains(ans, literal=True))
        .then(0.0)
        .when(words_rule)
        .then(1.0)
        .otherwise(0.0),
        _gm="_gm",
    )
    best = per_alias.group_by("_r").agg(*[pl.col(s).max() for s in SCORES], _gm=pl.col("_gm").any())
    # scores are built in a narrow frame in row order and appended: joining the wide frame would copy its text
    out = (
        rows.select("_r", "_mismatch")
        .join(best, on="_r", how="left", maintain_order="left")
        .with_columns(
            *[pl.col(s).fill_null(0.0) for s in SCORES],
            scored_by_python=pl.col("_mismatch") | pl.col("_gm").fill_null(False),
        )
    )
    out = _python_rows(out, df)
    return df.drop("_r").hstack(out.select(*[pl.col(s).cast(pl.Float32) for s in SCORES], "scored_by_python"))


def python_scores(pred: str | None, completion: str, golds: list[str]) -> dict[str, float]:
    return {
        "em": core.exact_match(pred, golds),
        "f1": core.f1(pred, golds),
        "cover_em": core.cover_exact_match(pred, golds),
        "subem": core.subem(pred, golds),
        "autocoa_lenient": core.autocoa_lenient(completion, golds),
    }


def _python_rows(scores: pl.DataFrame, df: pl.DataFrame) -> pl.DataFrame:
    todo = df.filter(scores["scored_by_python"])
    if todo.height == 0:
        return scores
    rows = [
        python_scores(r["pred"], r["completion"], r["golden_answers"] or [])
        for r in todo.select("pred", "completion", "golden_answers").iter_rows(named=True)
    ]
    fixed = pl.DataFrame(rows, schema={s: pl.Float64 for s in SCORES}).with_columns(todo["_r"])
    return scores.update(fixed, on="_r")
