"""Question-level decontamination against every evaluation question set in use.

n-gram overlap rules (e.g. 13-grams) never fire on short questions, so each training question is
compared with each evaluation question three ways, on unique question texts:

  exact    equal after lower-casing and turning punctuation into spaces
  fuzzy    rapidfuzz ``ratio`` of the normalised texts ≥ ``threshold`` (typos, small edits)
  reorder  the same ratio over the sorted set of content words (stop words and single letters dropped,
           a plural "s" cut): reordered clauses, swapped function words, "wrote"/"written" score high

Measured on the embedded data at the default threshold (85): none of the 1,825 HotpotQA dev questions
that are not verbatim in the AutoCoA test set + Bamboogle (3,060 questions) matches one of them
(at 80, two template twins do: "What county is X located in?"), while reworded copies score 86–100
(``tests/curate/test_decontam.py``). Synonym swaps ("U.S." for "United States") are not caught.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
from rapidfuzz import fuzz, process

from coa.questions import load_questions, split_questions

_STOP = frozenset(
    "a an the of in on at to for from by with and or is was were are be been being do does did which what who "
    "whom whose when where why how that this these those it its as than then there their his her he she they "
    "them also into about has have had".split()
)
_NON_WORD = re.compile(r"[^\w\s]")


def normalize_question(q: str) -> str:
    return " ".join(_NON_WORD.sub(" ", q.lower()).split())


def content_key(normalized: str) -> str:
    words = {
        w[:-1] if len(w) > 3 and w.endswith("s") else w for w in normalized.split() if w not in _STOP and len(w) > 1
    }
    return " ".join(sorted(words))


def eval_question_ids(question_ids, n: int, seed: int) -> set[str]:
    """The curated eval split: the first ``n`` questions in the core's seeded hash order."""
    _, held, _ = split_questions([{"id": q} for q in sorted(set(question_ids))], n, seed=seed)
    return {q["id"] for q in held}


def load_eval_questions(paths) -> pl.DataFrame:
    """``eval_set, eval_id, eval_question`` rows from FlashRAG-form question files (jsonl(.gz)/parquet)."""
    rows = []
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(
                f"evaluation question set not found: {path} "
                "(set eval_sets=[...] to the evaluation question files in use)"
            )
        rows += [
            {"eval_set": str(path), "eval_id": q["id"], "eval_question": q["question"]} for q in load_questions(path)
        ]
    return pl.DataFrame(rows, schema={"eval_set": pl.String, "eval_id": pl.String, "eval_question": pl.String})


def _scores(
    queries: list[str], choices: list[str], threshold: float, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Best match per query (index into choices, score), in chunks to bound the score matrix."""
    best_i = np.full(len(queries), -1, dtype=np.int64)
    best_s = np.zeros(len(queries), dtype=np.float32)
    if not queries or not choices:
        return best_i, best_s
    for lo in range(0, len(queries), chunk):
        m = process.cdist(
            queries[lo : lo + chunk], choices, scorer=fuzz.ratio, score_cutoff=threshold, dtype=np.float32, workers=2
        )
        best_i[lo : lo + chunk] = np.where(m.max(axis=1) > 0, m.argmax(axis=1), -1)
        best_s[lo : lo + chunk] = m.max(axis=1)
    return best_i, best_s


def find_contamination(questions: list[str], evals: pl.DataFrame, threshold: float = 85.0) -> pl.DataFrame:
    """For each unique training question text: ``contaminated``, ``contamination`` ("exact" | "fuzzy" |
    "reorder" | null), the matched ``eval_set``/``eval_id``/``eval_question`` and ``similarity`` (0-100)."""
    uniq = sorted(set(questions))
    norm = [normalize_question(q) for q in uniq]
    ev_q = evals["eval_question"].to_list()
    ev_norm = [normalize_question(q) for q in ev_q]
    exact = {n: i for i, n in reversed(list(enumerate(ev_norm)))}
    fuzzy_i, fuzzy_s = _scores(norm, ev_norm, threshold)
    key_i, key_s = _scores([content_key(n) for n in norm], [content_key(n) for n in ev_norm], threshold)
    out = []
    for k, (q, n) in enumerate(zip(uniq, norm)):
        if n in exact:
            kind, j, s = "exact", exact[n], 100.0
        elif fuzzy_i[k] >= 0 and fuzzy_s[k] >= key_s[k]:
            kind, j, s = "fuzzy", int(fuzzy_i[k]), float(fuzzy_s[k])
        elif key_i[k] >= 0:
            kind, j, s = "reorder", int(key_i[k]), float(key_s[k])
        else:
            kind, j, s = None, -1, 0.0
        out.append(
            {
                "question": q,
                "contaminated": kind is not None,
                "contamination": kind,
                "eval_set": evals["eval_set"][j] if j >= 0 else None,
                "eval_id": evals["eval_id"][j] if j >= 0 else None,
                "eval_question": ev_q[j] if j >= 0 else None,
                "similarity": s,
            }
        )
    return pl.DataFrame(
        out,
        schema={
            "question": pl.String,
            "contaminated": pl.Boolean,
            "contamination": pl.String,
            "eval_set": pl.String,
            "eval_id": pl.String,
            "eval_question": pl.String,
            "similarity": pl.Float32,
        },
    )
