"""What to generate: one ``Job`` per output row, keyed like the row it becomes.

* ``question_jobs``  cot / coa: the rendered prompt of each question, ``n`` samples each.
* ``branch_jobs``    branch: each decision row (a parent trajectory truncated to its prefix, mode
                     "decision") is continued ``n`` times per kind:
                     ``forbid`` tool use forbidden (a search call ends the branch, "forbidden_search");
                     ``force``  the continuation is prefilled with the search-open tag;
                     ``force-TOOL`` with the opening of a call of TOOL (``FormatPreset.call_opening``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pyarrow as pa

from coa.formats import FormatPreset
from coa.prompts import PromptConfig, prompt_hash, prompt_id, render_prompt
from coa.trajectory import branch_tool, read_table, row_id
from synth.reference import FORCEABLE, TEACHER_NAME, TEMPLATE_VERSION

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


def teacher_prompt(pid: str, phash: str, teacher_kind: str) -> tuple[str, str]:
    """The reference teacher's rows carry their own prompt id and hash (its templates are part of them)."""
    if teacher_kind != "reference" or pid.startswith("reference/"):  # a branch of a reference row keeps its id
        return pid, phash

    return f"{TEACHER_NAME}/{pid}", hashlib.sha1(f"{phash}\x1f{TEMPLATE_VERSION}".encode()).hexdigest()[:12]


def question_jobs(
    questions: list[dict], mode: str, n: int, prompt_cfg: PromptConfig, tokenizer, teacher_kind: str = "llm"
) -> list[Job]:
    pid, phash = teacher_prompt(prompt_id(prompt_cfg), prompt_hash(prompt_cfg), teacher_kind)
    jobs = []
    for q in questions:
        prompt = render_prompt(tokenizer, q["question"], prompt_cfg)
        jobs += [
            Job(q, mode, s, prompt, TOOLS[mode], prompt_cfg.prefill, prompt_id=pid, prompt_hash=phash) for s in range(n)
        ]
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
        raise ValueError(
            f"{where}: field 'decision_index' ({row.get('decision_index')}) must equal the "
            f"number of prefix segments ({len(segments)})"
        )
    if not row.get("prompt"):
        raise ValueError(f"{where}: field 'prompt' is empty")


def align_to_tokens(prefix: list[dict], fmt: FormatPreset, tokenizer) -> tuple[list[dict], str]:
    """Move a decision cut back to a token boundary of ``tokenizer``.

    A decision prefix ends right before a search-open tag, which may fall inside a token (SmolLM2 writes
    ``" <"`` as one token, so "…it. <search>" cut before the tag splits it). Branches must start where
    the policy's own generation would, so the cut moves back to the start of that token; the text
    between (the gap, e.g. " ") is written again by the forced branch before its tag. Returns
    (aligned prefix, gap)."""
    if tokenizer is None or not prefix or prefix[-1]["kind"] == "observation":
        return prefix, ""
    text = prefix[-1]["text"]
    enc = tokenizer(text + fmt.search_open, add_special_tokens=False, return_offsets_mapping=True)
    starts = [a for a, _ in enc["offset_mapping"] if a <= len(text)]
    cut = max(starts) if starts else len(text)
    if cut == len(text):
        return prefix, ""
    head = dict(prefix[-1], text=text[:cut])
    return (prefix[:-1] + [head] if head["text"] else prefix[:-1]), text[cut:]


def branch_jobs(
    decisions: list[dict] | pa.Table,
    n: int,
    kinds: list[str],
    fmt: FormatPreset,
    teacher_kind: str = "llm",
    tokenizer=None,
) -> list[Job]:
    """Jobs continuing each decision prefix, per branch kind (``coa.trajectory.branch_tool``). With ``tokenizer``
    (the branching policy's), each prefix is first aligned to a token boundary (``align_to_tokens``)."""
    unforceable = [k for k in kinds if teacher_kind == "reference" and branch_tool(k) not in (None, *FORCEABLE)]
    if unforceable:
        raise ValueError(
            f"branches: the reference teacher completes forced calls of {', '.join(FORCEABLE)} only, not "
            f"{', '.join(unforceable)}: leave them out, or use an LLM teacher"
        )
    rows = decisions.to_pylist() if isinstance(decisions, pa.Table) else list(decisions)
    jobs, first_row = [], {}
    for i, row in enumerate(rows, start=1):
        check_decision(row, f"decision row {i}")
        key = (row["parent_id"], row["decision_index"])
        if first_row.setdefault(key, i) != i:
            raise ValueError(
                f"decision rows {first_row[key]} and {i} both cut parent {key[0]!r} at "
                f"decision_index {key[1]}: their branches would share keys"
            )
        if row.get("format") and row["format"] != fmt.name:
            raise ValueError(f"decision row {i}: format {row['format']!r} differs from format={fmt.name!r}")
        question = {
            "id": row["question_id"],
            "question": row["question"],
            "golden_answers": list(row["golden_answers"]),
            "dataset": row.get("dataset") or "",
        }
        prefix, gap = align_to_tokens(list(row["segments"]), fmt, tokenizer)
        pid, phash = teacher_prompt(row.get("prompt_id") or "", row.get("prompt_hash") or "", teacher_kind)
        for kind in kinds:
            branch_id = f"{row['parent_id']}:{len(prefix)}:{kind}"
            tool = branch_tool(kind)
            tools, prefill = ("forbid", "") if tool is None else ("real", gap + fmt.call_opening(tool))
            jobs += [
                Job(
                    question,
                    "branch",
                    s,
                    row["prompt"],
                    tools,
                    prefill,
                    prefix=prefix,
                    branch_id=branch_id,
                    parent_id=row["parent_id"],
                    decision_index=len(prefix),
                    prompt_id=pid,
                    prompt_hash=phash,
                )
                for s in range(n)
            ]
    return jobs
