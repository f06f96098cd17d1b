"""Question sets in FlashRAG dataset form (``id``, ``question``, ``golden_answers``), jsonl(.gz) or parquet.

Also read: Bamboogle's ``idx/question/answer`` rows and the AutoCoA paper's verl parquet files
(``prompt`` chat list + ``reward_model.ground_truth``), converted to the same form. Bad rows raise
``ValueError`` naming the file, line and field.
"""

from __future__ import annotations

import hashlib
import gzip
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq

from coa import paths
from coa.config import cli
from coa.errors import BadInput, entry_point, reading
from coa.io import owned_files, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_QUESTIONS = ROOT / "data/raw/hotpotqa/hotpotqa_dev_union_flashrag.jsonl.gz"
_AUTOCOA_QUESTION = re.compile(r"answer the user's question below: \n(.*)\n\n$", re.S)


def _normalise(row: dict, where: str, dataset: str) -> dict:
    if not isinstance(row, dict):
        raise ValueError(
            f"{where}: expected a JSON object with 'id', 'question', 'golden_answers', "
            f"got {type(row).__name__} {json.dumps(row)[:60]}"
        )
    qid = row.get("id", row.get("_id", row.get("idx")))
    question = row.get("question")
    golds = row.get("golden_answers", row.get("answer"))
    if question is None and isinstance(row.get("prompt"), list):  # AutoCoA verl parquet
        m = _AUTOCOA_QUESTION.search(row["prompt"][-1]["content"])
        question = m.group(1) if m else None
        truth = (row.get("reward_model") or {}).get("ground_truth")
        golds = truth.split("<ans_split>") if isinstance(truth, str) else truth
        # their data_source says HotpotQA for every row; source_file ("2WIKI_dev.json") tells the truth
        dataset = (row.get("source_file") or "").split("_")[0] or row.get("data_source") or dataset
        qid = None if qid is None else f"{dataset}/{qid}"  # their ids repeat across source datasets
    if qid is None:
        raise ValueError(f"{where}: missing field 'id'")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: field 'question' is missing or empty")
    if isinstance(golds, str):
        golds = [golds]
    if not golds or not all(isinstance(g, str) for g in golds):
        raise ValueError(f"{where}: field 'golden_answers' must be a non-empty list of strings")
    return {
        "id": str(qid),
        "question": question.strip(),
        "golden_answers": list(golds),
        "dataset": row.get("dataset", dataset),
        "metadata": row.get("metadata") or {},
    }


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line; bytes that are not UTF-8 or a cut .gz name the line
    (lines are decoded one by one: a text reader decodes ahead and would blame an earlier line)."""
    lineno = 0
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        while True:
            try:
                raw = f.readline()
            except (EOFError, OSError, zlib.error) as e:  # a cut or corrupt .gz (zlib.error is no OSError)
                kind = "corrupt gzip" if isinstance(e, zlib.error) else type(e).__name__
                raise ValueError(f"{path}:{lineno + 1}: unreadable ({kind}: {e})") from None
            if not raw:
                return
            lineno += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            yield lineno, value


def question_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, raw row) of a question file, jsonl(.gz) or parquet; ``where`` is ``FILE:LINE`` (``FILE:row N``)."""
    if path.suffix == ".parquet":
        with reading(path):
            table = pq.read_table(path)
        for i, row in enumerate(table.to_pylist(), start=1):
            yield f"{path}:row {i}", row
    else:
        for lineno, row in _json_lines(path):
            yield f"{path}:{lineno}", row


def unique_questions(path: str | Path, rows: list[dict]) -> list[dict]:
    """``rows`` with each id once: two different questions under one id are refused (every reader of question
    files goes through here); exact repeats are kept once (a test file may repeat its last row)."""
    unique: dict[str, dict] = {}
    for r in rows:
        first = unique.setdefault(r["id"], r)
        if first is not r and (first["question"], first["golden_answers"]) != (r["question"], r["golden_answers"]):
            raise BadInput(f"{path}: question id {r['id']!r} used for two different questions")
    return list(unique.values())


def load_questions(path: str | Path, limit: int | None = None, dataset: str | None = None) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"question file not found: {path}")
    name = dataset or path.name.split(".")[0].split("_")[0]
    rows: list[dict] = []
    for where, row in question_rows(path):
        rows.append(_normalise(row, where, name))
        if limit and len(rows) >= limit:
            break
    return unique_questions(path, rows)


def seed_ids(question: dict) -> set[str]:
    """The question's own id and, for a synthesised question (``synth.questions``), the seed questions it was
    built from (``metadata.seed_ids``): questions that share one share answers."""
    return {question["id"], *((question.get("metadata") or {}).get("seed_ids") or ())}


def evidence_ids(question: dict) -> list[str]:
    """The corpus ids of the passages a question's evidence names, in hop order, each once: its decomposition's
    ``evidence_id``s, then ``gold_paragraph_ids`` (FlashRAG HotpotQA; what ``synth.questions`` writes too)."""
    meta = question.get("metadata") or {}
    steps = [step.get("evidence_id") for step in meta.get("question_decomposition") or [] if isinstance(step, dict)]
    return list(dict.fromkeys(str(i) for i in [*steps, *(meta.get("gold_paragraph_ids") or [])] if i not in (None, "")))


def synthesised(question: dict) -> bool:
    """Written by ``synth.questions`` (its provenance names the proposer in ``metadata.generator``)."""
    return bool((question.get("metadata") or {}).get("generator"))


def split_questions(
    questions: list[dict], heldout: int, train: int = 0, seed: int = 0, train_synthesised: bool = True
) -> tuple[list[dict], list[dict], int]:
    """Split by question: a deterministic hash order (seeded), the first ``heldout`` for evaluation,
    the next ``train`` (0 = all the rest) for the training pool. No question is in both, and no training
    question shares a seed with a held-out one (a synthesised question built on a held-out question, or the
    seed of a held-out synthesised one, would teach a held-out answer): those are left out, and counted.
    ``train_synthesised=False`` keeps synthesised questions out of the training pool only (not counted as
    left out): the same held-out part, trained on the seeds alone, is the baseline of a question-synthesis
    experiment."""
    order = sorted(questions, key=lambda q: hashlib.sha1(f"{seed}:{q['id']}".encode()).hexdigest())
    held, rest = order[:heldout], order[heldout:]
    held_seeds = set().union(*(seed_ids(q) for q in held)) if held else set()
    pool = [q for q in rest if not seed_ids(q) & held_seeds]
    shared = len(rest) - len(pool)
    if not train_synthesised:
        pool = [q for q in pool if not synthesised(q)]
    return (pool[:train] if train else pool), held, shared


def write_questions(path: str | Path, questions: list[dict]) -> None:
    write_text(path, "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions))


@dataclass
class SplitConfig:
    """``python -m coa.questions split key=value ...`` (``params.yaml`` section ``split``): a training pool
    and held-out evaluation questions, disjoint by question, in a seeded hash order. Neither part may be
    empty; ``out`` must be new, empty or an earlier split's (its ``.autocoa-owner.json``), else ``overwrite=true``."""

    questions: str = field(
        default=str(DEFAULT_QUESTIONS),
        metadata={
            "help": "FlashRAG question file to split: params.yaml's top-level data.questions (or questions=PATH)",
            "shared": "data.questions",
        },
    )
    out: str = field(default=paths.SPLIT, metadata={"help": "writes train.jsonl, heldout.jsonl and split.json here"})
    heldout: int = field(default=300, metadata={"help": "held-out evaluation questions (never trained on)"})
    train: int = field(default=600, metadata={"help": "training pool size; 0 = all the rest (the paper's preset)"})
    seed: int = field(default=0, metadata={"help": "seeds the hash order (same seed, same split)"})
    train_synthesised: bool = field(
        default=True,
        metadata={
            "help": "false: synth.questions' questions may be held out but never trained on (the same held-out "
            "part; the baseline of a question-synthesis experiment)"
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "write into a non-empty out folder split did not write (same-name files replaced, nothing deleted)"
        },
    )

    def __post_init__(self) -> None:
        if self.heldout < 1:
            raise ValueError(f"heldout must be >= 1 (the held-out evaluation questions), got {self.heldout}")
        if self.train < 0:
            raise ValueError(f"train must be >= 0 (0 = all questions not held out), got {self.train}")


SPLIT_TOOL = "coa.questions split"  # the owner its marker names in ``out``


def check_parts(path: str, n_questions: int, heldout: int) -> None:
    """Neither part of the split may be empty (an empty part would only fail later, in synth or evaluate)."""
    if n_questions == 0:
        raise BadInput(f"{path}: holds no questions; there is nothing to split")
    if heldout >= n_questions:
        raise BadInput(
            f"heldout={heldout} leaves no training questions: {path} holds {n_questions}; "
            f"set heldout below {n_questions}"
        )


@entry_point("coa.questions")
def main(argv: list[str] | None = None) -> int:
    """``python -m coa.questions split questions=PATH out=DIR heldout=N train=M seed=S`` (--help for more)"""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "split":
        asked = args[:1] in (["--help"], ["-h"], ["help"])
        print(main.__doc__, file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    cfg = cli(SplitConfig, "split", args[1:], SplitConfig.__doc__)
    questions = load_questions(cfg.questions)
    check_parts(cfg.questions, len(questions), cfg.heldout)
    pool, held, shared = split_questions(questions, cfg.heldout, cfg.train, cfg.seed, cfg.train_synthesised)
    with owned_files(cfg.out, SPLIT_TOOL, "overwrite=true", cfg.overwrite) as out:
        write_questions(out / "train.jsonl", pool)
        write_questions(out / "heldout.jsonl", held)
        counts = {"train": len(pool), "heldout": len(held), "left_out_shared_seed": shared, "seed": cfg.seed}
        if any(map(synthesised, questions)):
            counts |= {
                "train_synthesised": sum(map(synthesised, pool)),
                "heldout_synthesised": sum(map(synthesised, held)),
            }
        write_json(out / "split.json", counts)
    note = f" ({shared} left out: they share a seed question with a held-out one)" if shared else ""
    print(f"train {len(pool)} / held-out {len(held)} questions{note} → {cfg.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
