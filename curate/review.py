"""The optional human-review table: ``row_id → decision (accept | reject | swap), corrected_answer``.

``row_id`` is a trajectory id (CoA/CoT sets) or a pair id. ``reject`` vetoes the row. ``accept`` keeps
a row the scorer called wrong (a person judged the answer right), but never one that is malformed,
a duplicate or contaminated. ``swap`` (pairs only) says the rejected branch is the better one: the pair
stays with its sides exchanged and its direction reversed (act ↔ no_act). ``corrected_answer``
(optional) replaces the gold answers of that row and the row is scored again against it: a trajectory
must then be correct (unless accepted), a pair's chosen branch right and its rejected branch wrong.
Parquet or CSV; nothing else is re-run.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from coa.errors import reading

DECISIONS = ("accept", "reject", "swap")
COLUMNS = {"row_id": pl.String, "decision": pl.String, "corrected_answer": pl.String}


def read_review(path: str | Path | None) -> pl.DataFrame:
    """The review table, checked: bad rows fail naming the file, row and column."""
    if not path:
        return pl.DataFrame(schema=COLUMNS)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"review table not found: {path}")
    if path.suffix not in (".csv", ".parquet"):
        raise ValueError(f"{path}: review table must be .csv or .parquet")
    with reading(path, f"a readable {path.suffix[1:]} file"):
        # csv: every column as text, ids must not turn into numbers
        df = pl.read_csv(path, infer_schema=False) if path.suffix == ".csv" else pl.read_parquet(path)
    for name in ("row_id", "decision"):
        if name not in df.columns:
            raise ValueError(f"{path}: missing column {name!r} (columns: row_id, decision, corrected_answer)")
    if "corrected_answer" not in df.columns:
        df = df.with_columns(corrected_answer=pl.lit(None, pl.String))
    df = df.select([pl.col(c).cast(t) for c, t in COLUMNS.items()]).with_row_index("_row", offset=1)
    df = df.with_columns(
        pl.col("decision").str.strip_chars().str.to_lowercase(),
        pl.col("corrected_answer").str.strip_chars().replace("", None),
    )
    for name, bad in (
        ("row_id", pl.col("row_id").is_null() | (pl.col("row_id") == "")),
        ("decision", ~pl.col("decision").is_in(DECISIONS) | pl.col("decision").is_null()),
    ):
        hit = df.filter(bad)
        if hit.height:
            r = hit.row(0, named=True)
            raise ValueError(
                f"{path}: row {r['_row']}: column {name!r} is {r[name]!r}; expected "
                + ("a row id" if name == "row_id" else f"one of {DECISIONS}")
            )
    dup = df.filter(pl.col("row_id").is_duplicated())
    if dup.height:
        raise ValueError(f"{path}: row {dup['_row'][1]}: column 'row_id' repeats {dup['row_id'][0]!r}")
    return df.drop("_row")
