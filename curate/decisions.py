"""Decision points: where a CoA trajectory is cut so synthesis can branch from the shared prefix.

A decision point sits just before a tool call: a search, or any other tool in the preset's generic call form.
Its prefix is every segment before the model (or prefill) segment holding that call plus that segment's text up
to (not including) the call's open tag,
as a last, truncated segment of the same kind (left out when empty). The cut may fall inside a token
(" <" is one SmolLM2 token): synthesis moves it back to a token boundary before branching
(``synth.jobs.align_to_tokens``). Decision rows are the parent truncated to this prefix,
in the trajectory schema: ``mode="decision"``, ``parent_id`` = the parent's id, ``decision_index`` =
the number of prefix segments, ``sample`` = which call (0 = the first, of any tool). Synthesis continues
them with tools forbidden and with a call forced (``branch_id = "<parent>:<decision_index>:<kind>"``, kind
``forbid``, ``force`` (search) or ``force-TOOL``: ``coa.trajectory.branch_tool``);
``segments[:decision_index]`` of each branch is byte-identical to the prefix written here.
"""

from __future__ import annotations

import polars as pl

from coa.formats import get_format
from coa.trajectory import row_id

_SEG = pl.Struct({"kind": pl.String, "text": pl.String, "query": pl.String, "doc_ids": pl.List(pl.String)})


_MARK = "\x00"  # never in a trajectory's text (it is not valid in the JSON or text a model writes)


def _calls(parents: pl.DataFrame, fmt) -> pl.DataFrame:
    """One row per tool call (search, or any tool in the preset's generic call form): the model segment
    holding it and the text before it in that segment."""
    tags = [fmt.search_open] + ([fmt.call_open] if fmt.call_open else [])
    text = pl.col("seg").struct.field("text")
    marked = text
    for tag in tags:
        marked = marked.str.replace_all(tag, _MARK + tag, literal=True)
    calls = (
        parents.select("id", seg=pl.col("segments"), seg_idx=pl.int_ranges(pl.col("segments").list.len()))
        .explode("seg", "seg_idx")
        .filter(
            (pl.col("seg").struct.field("kind") != "observation")
            & pl.any_horizontal(text.str.contains(tag, literal=True) for tag in tags)
        )
        .with_columns(pieces=marked.str.split(_MARK))
    )
    calls = calls.with_columns(j=pl.int_ranges(1, pl.col("pieces").list.len())).explode("j")
    calls = calls.with_columns(head=pl.col("pieces").list.head(pl.col("j")).list.join(""))
    return (
        calls.sort("id", "seg_idx", "j")
        .with_columns(action=pl.int_range(pl.len()).over("id"))
        .select("id", "seg_idx", "head", "action", seg_kind=pl.col("seg").struct.field("kind"))
    )


def decision_rows(parents: pl.DataFrame, every: bool = False) -> pl.DataFrame:
    """Decision rows (trajectory schema columns) for parent trajectories of one or more formats."""
    out = []
    for (fmt,), part in parents.group_by("format", maintain_order=True):
        calls = _calls(part, get_format(fmt))
        if not every:
            calls = calls.filter(pl.col("action") == 0)
        part = part.join(calls, on="id")
        last = pl.struct(
            kind=pl.col("seg_kind"),
            text=pl.col("head"),
            query=pl.lit(None, pl.String),
            doc_ids=pl.lit([], pl.List(pl.String)),
        ).cast(_SEG)
        before = pl.col("segments").list.head(pl.col("seg_idx"))
        part = part.with_columns(
            segments=pl.when(pl.col("head") != "").then(pl.concat_list(before, last)).otherwise(before),
            decision_index=(pl.col("seg_idx") + (pl.col("head") != "").cast(pl.Int64)).cast(pl.Int32),
        )
        out.append(part)
    if not out:
        return parents.clear()
    rows = pl.concat(out, how="vertical_relaxed")
    ids = [row_id(q, "decision", a, p) for q, a, p in rows.select("question_id", "action", "id").iter_rows()]
    return rows.with_columns(
        parent_id=pl.col("id"),
        id=pl.Series(ids, dtype=pl.String),
        mode=pl.lit("decision"),
        sample=pl.col("action").cast(pl.Int32),
        branch_id=pl.lit(""),
        answer=pl.lit(None, pl.String),
        n_actions=pl.col("segments")
        .list.eval(pl.element().struct.field("kind") == "observation")
        .list.sum()
        .cast(pl.Int32),
        finish_reason=pl.lit(""),
        completion_tokens=pl.lit(0, pl.Int32),
        latency_s=pl.lit(0.0, pl.Float32),
    ).drop("seg_idx", "head", "action", "seg_kind")
