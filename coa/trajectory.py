"""The one trajectory representation and its parquet schema.

A trajectory is the exact sequence the model saw and wrote:

  ``prompt``    the rendered task context (chat template applied, up to the assistant turn)
  ``segments``  ordered ``{kind, text, query, doc_ids}``; kind is ``model`` (written by the policy,
                including any prefilled start) or ``observation`` (inserted by the environment; its
                text is exactly what the search environment returned, wrapping tags included; the
                model segment before it ends with the search-close tag)

Everything else is derived from these (``parse``: steps, answer, n_actions) or is provenance.

Parquet columns (one row per trajectory; ``TRAJECTORY_SCHEMA`` is authoritative):

  id            str   stable row id: hash of (question_id, mode, sample, branch_id)
  question_id   str   dataset id of the question
  dataset       str   e.g. "hotpotqa"
  question      str
  golden_answers list<str>  gold aliases
  mode          str   "cot" | "coa" | "branch"
  sample        int   sample index within (question, mode[, branch])
  branch_id     str   "" unless mode == "branch": "<parent id>:<decision>:<forbid|force>"
  parent_id     str   the trajectory a branch continues ("" otherwise)
  decision_index int  number of model/observation segments of the parent kept as prefix (-1 if none)
  format        str   format preset name
  prompt        str
  segments      list<struct<kind str, text str, query str, doc_ids list<str>>>
  answer        str?  extracted answer (null if none)
  n_actions     int   search calls executed
  finish_reason str   answer | eos | max_actions | max_tokens | forbidden_search | error
  teacher       str   model name
  prompt_id     str   name of the prompt template; prompt_hash str: sha1 of the template text
  sampling      str   JSON of the sampling params (temperature, top_p, max_tokens, seed, ...)
  retriever     str   e.g. "bm25:k=3"
  prompt_tokens int; completion_tokens int; latency_s float; created_at str (ISO time)

Branches (mode "branch") hold the parent's prefix segments followed by the continuation, which
always starts a new segment: ``segments[:decision_index]`` is the shared prefix,
``segments[decision_index:]`` the branch. Decision points are written in the same schema: the
parent truncated to its prefix (mode "decision", ``parent_id`` = the parent's id).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from coa.formats import ParseResult, completion_text, get_format

SEGMENT_TYPE = pa.struct([
    ("kind", pa.string()), ("text", pa.string()), ("query", pa.string()), ("doc_ids", pa.list_(pa.string())),
])

TRAJECTORY_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("question_id", pa.string()),
    ("dataset", pa.string()),
    ("question", pa.string()),
    ("golden_answers", pa.list_(pa.string())),
    ("mode", pa.string()),
    ("sample", pa.int32()),
    ("branch_id", pa.string()),
    ("parent_id", pa.string()),
    ("decision_index", pa.int32()),
    ("format", pa.string()),
    ("prompt", pa.string()),
    ("segments", pa.list_(SEGMENT_TYPE)),
    ("answer", pa.string()),
    ("n_actions", pa.int32()),
    ("finish_reason", pa.string()),
    ("teacher", pa.string()),
    ("prompt_id", pa.string()),
    ("prompt_hash", pa.string()),
    ("sampling", pa.string()),
    ("retriever", pa.string()),
    ("prompt_tokens", pa.int32()),
    ("completion_tokens", pa.int32()),
    ("latency_s", pa.float32()),
    ("created_at", pa.string()),
])

# Contrastive pairs (curate → train sft1). ``prompt`` is the shared context: the chat prompt plus the
# prefix segments' text, byte-identical for both sides; ``chosen``/``rejected`` are the continuations
# right after it. A continuation that stops at the search-close tag does not end the turn
# (``*_ends_turn`` False: no EOS may follow it).
PAIR_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("question_id", pa.string()),
    ("question", pa.string()),
    ("golden_answers", pa.list_(pa.string())),
    ("format", pa.string()),
    ("prompt", pa.string()),
    ("chosen", pa.string()),
    ("rejected", pa.string()),
    ("chosen_ends_turn", pa.bool_()),
    ("rejected_ends_turn", pa.bool_()),
    ("direction", pa.string()),  # "act" (the acting branch is chosen) | "no_act" (the non-acting one)
    ("decision_index", pa.int32()),
    ("chosen_id", pa.string()),
    ("rejected_id", pa.string()),
    ("chosen_score", pa.float32()),
    ("rejected_score", pa.float32()),
])

FINISH_REASONS = ("answer", "eos", "max_actions", "max_tokens", "forbidden_search", "error")


def row_id(question_id: str, mode: str, sample: int, branch_id: str = "") -> str:
    key = f"{question_id}\x1f{mode}\x1f{sample}\x1f{branch_id}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def segment(kind: str, text: str, query: str | None = None, doc_ids: Iterable[str] = ()) -> dict:
    if kind not in ("model", "observation"):
        raise ValueError(f"segment kind must be 'model' or 'observation', got {kind!r}")
    return {"kind": kind, "text": text, "query": query, "doc_ids": list(doc_ids)}


@dataclass
class Trajectory:
    question_id: str
    question: str
    golden_answers: list[str]
    prompt: str
    segments: list[dict] = field(default_factory=list)
    mode: str = "coa"
    sample: int = 0
    dataset: str = ""
    branch_id: str = ""
    parent_id: str = ""
    decision_index: int = -1
    format: str = "autocoa"
    answer: str | None = None
    n_actions: int = 0
    finish_reason: str = ""
    teacher: str = ""
    prompt_id: str = ""
    prompt_hash: str = ""
    sampling: str = "{}"
    retriever: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    created_at: str = ""
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = row_id(self.question_id, self.mode, self.sample, self.branch_id)

    @property
    def completion(self) -> str:
        """Everything after the prompt: the concatenated segments."""
        return completion_text(self.segments)

    @property
    def text(self) -> str:
        return self.prompt + self.completion

    def parse(self) -> ParseResult:
        return get_format(self.format).parse(self.completion)

    def to_row(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict) -> "Trajectory":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in row.items() if k in names})


def to_table(trajectories: Iterable[Trajectory | dict]) -> pa.Table:
    rows = [t.to_row() if isinstance(t, Trajectory) else t for t in trajectories]
    return pa.Table.from_pylist(rows, schema=TRAJECTORY_SCHEMA)


def write_trajectories(path: str | Path, trajectories: Iterable[Trajectory | dict]) -> Path:
    """Write one parquet file atomically (temp file + rename), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(to_table(trajectories), tmp)
    tmp.replace(path)
    return path


def read_trajectories(path: str | Path) -> list[Trajectory]:
    """Read a parquet file or a folder of shards; checks the columns against the schema."""
    table = read_table(path)
    return [Trajectory.from_row(r) for r in table.to_pylist()]


def read_table(path: str | Path) -> pa.Table:
    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        return TRAJECTORY_SCHEMA.empty_table()
    tables = []
    for f in files:
        t = pq.read_table(f)
        missing = [n for n in TRAJECTORY_SCHEMA.names if n not in t.column_names]
        if missing:
            raise ValueError(f"{f}: missing trajectory columns {missing}")
        tables.append(t.select(TRAJECTORY_SCHEMA.names).cast(TRAJECTORY_SCHEMA))
    return pa.concat_tables(tables)
