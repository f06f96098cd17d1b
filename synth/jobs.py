"""What to generate: one ``Job`` per output row, keyed like the row it becomes.

* ``question_jobs``  cot / coa: the rendered prompt of each question, ``n`` samples each.
* ``branch_jobs``    branch: each decision row (a parent trajectory truncated to its prefix, mode
                     "decision") is continued ``n`` times per kind:
                     ``forbid`` tool use forbidden (a search call ends the branch, "forbidden_search");
                     ``force``  the continuation is prefilled with the search-open tag.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from coa.formats import FormatPreset
from coa.prompts import PromptConfig, prompt_hash, prompt_id, render_prompt
from coa.trajectory import read_table, row_id

TOOLS = {"cot": "forbid", "coa": "real"}


@dataclass
class Job:
    question: dict  # id, question, golden_answers, dataset
    mode: str
    sample: int
    prompt: str
    tools: str
    prefill: str = ""
    prefix: list = field(default_factory=list)  # segments continued by a branch
    branch_id: str = ""
    parent_id: str = ""
    decision_index: int = -1
    prompt_id: str = ""
    prompt_hash: str = ""

    @property
    def id(self) -> str:
        return row_id(self.question["id"], self.mode, self.sample, self.branch_id)


def question_jobs(questions: list[dict], mode: str, n: int, prompt_cfg: PromptConfig, tokenizer) -> list[Job]:
    pid, phash = prompt_id(prompt_cfg), prompt_hash(prompt_cfg)
    jobs = []
    for q in questions:
        prompt = render_prompt(tokenizer, q["question"], prompt_cfg)
        jobs += [Job(q, mode, s, prompt, TOOLS[mode], prompt_cfg.prefill, prompt_id=pid, prompt_hash=phash)
                 for s in range(n)]
    return jobs


def read_decisions(path: str) -> list[dict]:
    """Decision rows from a parquet file or shard folder, checked row by row."""
    rows = read_table(path).to_pylist()
    for i, row in enumerate(rows, start=1):
        check_decision(row, f"{path}: row {i}")
    return rows


def check_decision(row: dict, where: str) -> None:
    if row.get("mode") != "decision":
        raise ValueError(f"{where}: field 'mode' must be 'decision', got {row.get('mode')!r}")
    if not row.get("parent_id"):
        raise ValueError(f"{where}: field 'parent_id' is empty (the trajectory this prefix comes from)")
    segments = row.get("segments") or []
    if row.get("decision_index") != len(segments):
        raise ValueError(f"{where}: field 'decision_index' ({row.get('decision_index')}) must equal the "
                         f"number of prefix segments ({len(segments)})")
    if not row.get("prompt"):
        raise ValueError(f"{where}: field 'prompt' is empty")


def branch_jobs(decisions: list[dict] | pa.Table, n: int, kinds: list[str], fmt: FormatPreset) -> list[Job]:
    """Jobs continuing each decision prefix; ``kinds`` ⊆ {"forbid", "force"}."""
    rows = decisions.to_pylist() if isinstance(decisions, pa.Table) else list(decisions)
    force_prefill = fmt.search_open + fmt.inner_pad
    jobs, first_row = [], {}
    for i, row in enumerate(rows, start=1):
        check_decision(row, f"decision row {i}")
        key = (row["parent_id"], row["decision_index"])
        if first_row.setdefault(key, i) != i:
            raise ValueError(f"decision rows {first_row[key]} and {i} both cut parent {key[0]!r} at "
                             f"decision_index {key[1]}: their branches would share keys")
        if row.get("format") and row["format"] != fmt.name:
            raise ValueError(f"decision row {i}: format {row['format']!r} differs from format={fmt.name!r}")
        question = {"id": row["question_id"], "question": row["question"],
                    "golden_answers": list(row["golden_answers"]), "dataset": row.get("dataset") or ""}
        for kind in kinds:
            branch_id = f"{row['parent_id']}:{row['decision_index']}:{kind}"
            tools, prefill = ("forbid", "") if kind == "forbid" else ("real", force_prefill)
            jobs += [Job(question, "branch", s, row["prompt"], tools, prefill, prefix=list(row["segments"]),
                         branch_id=branch_id, parent_id=row["parent_id"], decision_index=row["decision_index"],
                         prompt_id=row.get("prompt_id") or "", prompt_hash=row.get("prompt_hash") or "")
                     for s in range(n)]
    return jobs
