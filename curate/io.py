"""Reading and writing for every step: validated lazy scans, atomic parquet, metrics JSON.

Inputs are parquet files or folders of shards. Before anything is computed each file's schema is
checked against the columns the step needs, so bad input fails with the file and the column named:
``runs/x/part-0.parquet: column 'segments' has type String, expected List(Struct(...))``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import polars as pl
import pyarrow as pa

from coa.errors import reading
from coa.formats import PRESETS
from coa.io import atomic_output, write_json
from coa.trajectory import OPTIONAL_COLUMNS, PAIR_SCHEMA, TRAJECTORY_SCHEMA

TRAJECTORY_TYPES = dict(pl.from_arrow(TRAJECTORY_SCHEMA.empty_table()).schema)
PAIR_TYPES = dict(pl.from_arrow(PAIR_SCHEMA.empty_table()).schema)


def parquet_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Every ``*.parquet`` under the given files/folders, in a stable order."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise ValueError("no input given: set in=PATH (a parquet file or a folder of shards)")
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.parquet"))
            if not found:
                raise FileNotFoundError(f"{p}: folder holds no *.parquet files")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    return files


def _older_segments(found: pl.DataType, expected: pl.DataType) -> bool:
    """A list of structs holding a subset of the expected fields (segments written before ``token_ids``)."""
    if not (
        isinstance(found, pl.List)
        and isinstance(expected, pl.List)
        and isinstance(found.inner, pl.Struct)
        and isinstance(expected.inner, pl.Struct)
    ):
        return False
    wanted = {f.name: f.dtype for f in expected.inner.fields}
    return all(wanted.get(f.name) == f.dtype for f in found.inner.fields)


def _compatible(found: pl.DataType, expected: pl.DataType) -> bool:
    if found == expected or _older_segments(found, expected):
        return True
    return found.is_numeric() and expected.is_numeric() and found.is_float() <= expected.is_float()


def _as(name: str, found: pl.DataType | None, expected: pl.DataType) -> pl.Expr:
    """Column ``name`` as ``expected``: missing struct fields of older files are added as nulls, and an
    optional column they lack (``found`` None) is all nulls."""
    if found is None:
        return pl.lit(None, expected).alias(name)
    if found != expected and _older_segments(found, expected):
        have = {f.name for f in found.inner.fields}
        missing = {f.name: pl.lit(None, f.dtype) for f in expected.inner.fields if f.name not in have}
        return pl.col(name).list.eval(pl.element().struct.with_fields(**missing)).cast(expected)
    return pl.col(name).cast(expected)


def check_columns(files: Iterable[Path], columns: Sequence[str], types: dict = TRAJECTORY_TYPES) -> dict:
    """Fail on the first file lacking one of ``columns`` or holding it with an incompatible type;
    returns each file's types of ``columns``."""
    found = {}
    for f in files:
        with reading(f):
            schema = pl.read_parquet_schema(f)
        for name in columns:
            if name not in schema and name in OPTIONAL_COLUMNS and types is TRAJECTORY_TYPES:
                continue
            if name not in schema:
                raise ValueError(f"{f}: missing column {name!r} (needed: {', '.join(columns)})")
            if not _compatible(schema[name], types[name]):
                raise ValueError(f"{f}: column {name!r} has type {schema[name]}, expected {types[name]}")
        found[f] = tuple(schema.get(name) for name in columns)
    return found


def check_formats(files: Sequence[Path]) -> list[str]:
    """The format presets used in the files; an unknown one fails naming the file and column."""
    lf = scan(files, ["format"], file_column="_file")
    bad = lf.filter(~pl.col("format").is_in(list(PRESETS))).head(1).collect()
    if bad.height:
        raise ValueError(
            f"{bad['_file'][0]}: column 'format' holds unknown format preset {bad['format'][0]!r}; "
            f"known: {sorted(PRESETS)}"
        )
    return sorted(lf.select(pl.col("format").unique()).collect()["format"].to_list())


def scan(paths, columns: Sequence[str], types: dict = TRAJECTORY_TYPES, file_column: str | None = None) -> pl.LazyFrame:
    """A lazy scan over all files, only ``columns``, each file checked first; numeric columns cast to the
    schema. Files are scanned together per distinct physical schema (synthesis writes many small shards)."""
    files = parquet_files(paths)
    groups: dict[tuple, list[Path]] = {}
    for f, found in check_columns(files, columns, types).items():
        groups.setdefault(found, []).append(f)
    frames = [
        pl.scan_parquet(fs, include_file_paths=file_column, extra_columns="ignore").select(
            [_as(c, t, types[c]) for c, t in zip(columns, found)] + ([pl.col(file_column)] if file_column else [])
        )
        for found, fs in groups.items()
    ]
    return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]


def check_unique_ids(df: pl.DataFrame, file_column: str = "_file") -> None:
    """Later steps join on ``id``: the same id twice (e.g. two synthesis runs in one folder) is an error."""
    dup = df.filter(pl.col("id").is_duplicated())
    if dup.height:
        first = dup.filter(pl.col("id") == dup["id"][0])
        raise ValueError(
            f"{' and '.join(sorted(set(first[file_column].to_list())))}: column 'id' repeats "
            f"{dup['id'][0]!r} ({dup['id'].n_unique()} ids repeat); give each trajectory once"
        )


def scores_path(path: str | Path) -> Path:
    """The score step's table, given its folder or the file itself."""
    path = Path(path)
    return path / "scores.parquet" if path.is_dir() else path


SCORE_COLUMNS = (
    "id",
    "question_id",
    "question",
    "golden_answers",
    "dataset",
    "mode",
    "sample",
    "pred",
    "em",
    "f1",
    "cover_em",
    "autocoa_lenient",
    "correct",
    "n_calls",
    "first_action_char",
    "first_action_frac",
    "contamination",
    "drop_reason",
    "kept",
)


def read_scores(path: str | Path) -> pl.DataFrame:
    """The score step's table; anything else fails naming the file and the first missing column."""
    path = scores_path(path)
    if not path.exists():
        raise FileNotFoundError(f"scores not found: {path} (run step=score first, or set in= to its folder)")
    with reading(path):
        schema = pl.read_parquet_schema(path)
    missing = [c for c in SCORE_COLUMNS if c not in schema]
    if missing:
        raise ValueError(f"{path}: missing column {missing[0]!r}; expected the score step's scores.parquet")
    with reading(path):
        return pl.read_parquet(path)


def write_parquet(df: pl.DataFrame, path: str | Path, schema: pa.Schema | None = None) -> Path:
    """Atomic write (``coa.io``); with ``schema`` the file has exactly those columns and types."""
    with atomic_output(path) as tmp:
        if schema is not None:
            import pyarrow.parquet as pq

            pq.write_table(df.select(schema.names).to_arrow().cast(schema), tmp)
        else:
            df.write_parquet(tmp)
    return Path(path)


def write_metrics(path: str | Path, metrics: dict) -> Path:
    return write_json(path, metrics, sort_keys=True, default=float)


def read_metrics(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
