"""Per-trajectory facts derived from the segments, for a whole frame at once.

``trajectory_features(df)`` adds, per row: the rendered ``completion`` and the ``model_text`` (model
segments only), the preset's extracted ``pred`` answer, ``n_calls`` (tool calls written, searches and generic
calls; ``tools_called`` names each call's tool), where the first call happens, and the structural problems
``FormatPreset.parse`` would report, grouped:

  no_answer            no answer span
  unbalanced_tags      nested/unclosed/stray tags, an answer without the think-close tag
  search_after_answer  a search call after the answer (or after ``</think>`` where the answer lives there)
  empty_query          a search call with nothing inside
  model_observation    a model segment holds observation tags (the model wrote its own results)
  orphan_observation   an observation segment not right after a model segment ending in a call

Rows whose tags the plain grammar of ``curate.text`` cannot decide (tags inside queries, answers nested
two levels deep, unclosed spans: rare, and almost always broken) and rows with a generic tool call (its JSON is
the core parser's to check) are parsed by the core parser, so the result equals ``parse()`` on every row.
"""

from __future__ import annotations

import re

import polars as pl

from coa.formats import FormatPreset, get_format
from curate import text

PARSE_REASONS = ("no_answer", "unbalanced_tags", "search_after_answer", "empty_query")
SEGMENT_REASONS = ("model_observation", "orphan_observation")


def _seg(field: str) -> pl.Expr:
    return pl.element().struct.field(field)


def render(df: pl.DataFrame) -> pl.DataFrame:
    """``completion`` (all segments) and ``model_text`` (the assistant turn's own text: model and prefill
    segments, everything but observations) as columns."""
    return df.with_columns(
        completion=pl.col("segments").list.eval(_seg("text")).list.join("").fill_null(""),
        model_text=pl.col("segments")
        .list.eval(_seg("text").filter(_seg("kind") != "observation"))
        .list.join("")
        .fill_null(""),
    )


def _fast(fmt: FormatPreset) -> list[pl.Expr]:
    seq, answers = pl.col("_seq"), pl.col("_answers")
    empty_call = re.escape(fmt.search_open) + text.WS_CLASS + "*" + re.escape(fmt.search_close)
    decidable = seq.str.contains(text.plain_grammar(fmt))
    if fmt.answer_close == "}":  # the closing brace is no tag: check the spans themselves
        n_open = pl.col("completion").str.count_matches(fmt.answer_open, literal=True)
        tags_in_answers = answers.list.join("\n").str.count_matches(text.tag_regex(fmt)) != answers.list.len()
        decidable = decidable & (n_open == answers.list.len()) & ~tags_in_answers
    after_answer = seq.str.contains("A.*S")
    if fmt.answer_after_think:
        after_answer = after_answer | seq.str.contains("t.*S")
    return [
        decidable.alias("_decidable"),
        text.unwrap_answer(answers.list.last(), fmt).alias("pred"),
        seq.str.count_matches("S").cast(pl.Int32).alias("n_calls"),
        (~seq.str.contains("A")).alias("no_answer"),
        (
            ~seq.str.replace_all("[^Tt]", "").str.contains("^(?:Tt)*$")
            | (pl.lit(fmt.answer_after_think) & seq.str.contains("A") & ~seq.str.contains("t"))
        ).alias("unbalanced_tags"),
        after_answer.alias("search_after_answer"),
        pl.col("completion").str.contains(empty_call).alias("empty_query"),
    ]


def tools_called(fmt: FormatPreset) -> pl.Expr:
    """The tools the model-written text calls, in order, one name per call (search, or the name a generic
    call's JSON gives)."""
    calls = [re.escape(fmt.search_open)]
    if fmt.call_open:
        calls.append(re.escape(fmt.call_open) + r'\s*\{"name":\s*"(?:[^"\\]|\\.)*"')
    name = r'"name":\s*"((?:[^"\\]|\\.)*)"'
    return (
        pl.col("model_text")
        .str.extract_all("|".join(calls))
        .list.eval(pl.element().str.extract(name, 1).fill_null("search"))
        .alias("tools_called")
    )


def _reason_of(error: str) -> str:
    if error == "no answer":
        return "no_answer"
    if error.startswith(("search after", "tool call after")):
        return "search_after_answer"
    if error.startswith("empty search query"):
        return "empty_query"
    return "unbalanced_tags"


def python_parse(completion: str, fmt: FormatPreset) -> dict:
    """The same facts from the core parser, for the rows the grammar cannot decide."""
    res = fmt.parse(completion)
    found = {_reason_of(e) for e in res.errors}
    return {"pred": fmt.extract_answer(completion), "n_calls": res.n_actions, **{r: r in found for r in PARSE_REASONS}}


def _parse_fallback(df: pl.DataFrame, fmt: FormatPreset) -> pl.DataFrame:
    todo = df.filter(~pl.col("_decidable"))
    if todo.height == 0:
        return df
    rows = [python_parse(c, fmt) for c in todo["completion"].to_list()]
    fixed = pl.DataFrame(
        rows, schema={"pred": pl.String, "n_calls": pl.Int32, **{r: pl.Boolean for r in PARSE_REASONS}}
    )
    fixed = fixed.with_columns(todo["_row"])
    cols = ["_row", "pred", "n_calls", *PARSE_REASONS]  # update the narrow columns only, then put them back
    narrow = df.select(cols).update(fixed, on="_row", include_nulls=True)
    return df.with_columns(narrow.select(cols[1:]))


def _segment_checks(fmt: FormatPreset) -> list[pl.Expr]:
    # one letter per segment (O observation, C model ending in a search call, M other model text), so the
    # neighbour test is a regex on a short string instead of a window over every list
    kind, seg_text = _seg("kind"), _seg("text")
    closes = "|".join(re.escape(t) for t in (fmt.search_close, fmt.call_close) if t)
    ends_in_call = seg_text.str.contains(f"(?:{closes}){text.WS_CLASS}*$")
    code = pl.when(kind == "observation").then(pl.lit("O")).when(ends_in_call).then(pl.lit("C")).otherwise(pl.lit("M"))
    result_tags = (fmt.result_open, fmt.result_close, fmt.response_open, fmt.response_close)
    writes_obs = (kind == "model") & seg_text.str.contains("|".join(re.escape(t) for t in result_tags if t))
    return [
        pl.col("segments").list.eval(writes_obs).list.any().fill_null(False).alias("model_observation"),
        pl.col("segments")
        .list.eval(code)
        .list.join("")
        .str.contains("(?:^|[^C])O")
        .fill_null(False)
        .alias("orphan_observation"),
    ]


def trajectory_features(df: pl.DataFrame, fmt: FormatPreset | str, force_python: bool = False) -> pl.DataFrame:
    """Add the columns described in the module docstring to a frame of one format's trajectories."""
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    df = render(df).with_row_index("_row")
    df = df.with_columns(
        _seq=text.tag_sequence(pl.col("completion"), fmt),
        _answers=pl.col("completion").str.extract_all(text.answer_regex(fmt)),
    )
    df = df.with_columns(_fast(fmt))
    if force_python:
        df = df.with_columns(_decidable=pl.lit(False))
    df = _parse_fallback(df, fmt)
    first = pl.min_horizontal(
        pl.when(before.field("field_1").is_not_null()).then(before.field("field_0").str.len_chars())
        for before in (
            pl.col("model_text").str.split_exact(tag, 1).struct for tag in (fmt.search_open, fmt.call_open) if tag
        )
    )
    chars = pl.col("model_text").str.len_chars()
    df = df.with_columns(
        *_segment_checks(fmt),
        tools_called(fmt),
        model_chars=chars.cast(pl.Int32),
        first_action_char=first.cast(pl.Int32),
        first_action_frac=(first / chars).cast(pl.Float32),
        parsed_by_python=~pl.col("_decidable"),
    )
    return df.drop("_seq", "_answers", "_decidable", "_row")
