"""Where a student's wrong answers come from when the gold answer was in its own search results.

The reference teacher ends every grounded trajectory by quoting one sentence of the results and reading the answer
from it (``synth.reference.QUOTE_LEAD``; ``TITLED_LEAD`` with ``reference.quote=titled``). A student trained on
those trajectories does the same, so each of its wrong answers with the gold in its results falls in one of five
classes, read off its last reasoning step:

- ``quote_holds_gold``: it quoted a sentence that states the gold answer and read the wrong span from it;
- ``quote_other_sentence``: it quoted another sentence of a document that states the gold (it chose the wrong
  sentence);
- ``quote_other_document``: it quoted a sentence of a document that does not state the gold (the wrong document);
- ``quote_not_in_results``: it quoted a sentence its results do not hold (it wrote its own evidence);
- ``no_quote``: it answered without quoting.

It also prints where each quoted sentence sits (the observation counted from the last, the document's rank in it,
the sentence's index in the document), for the student's right and wrong answers and for the teacher's trajectories,
so a positional habit learned from the teacher shows as the same distribution on the student's wrong answers.
Last, it counts the answers that repeat the query of the last search (the entity the student went looking for,
given back as the answer), for the student and the teacher.

    python bench/reading_errors.py runs/eval/sft2/trajectories --teacher runs/curate/sets/coa.parquet
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl  # noqa: E402

from coa.formats import get_format  # noqa: E402
from coa.score import normalize_answer  # noqa: E402
from synth.reference import (  # noqa: E402
    QUOTE_LEAD,
    SENTENCE,
    TITLED_LEAD,
    retrieved,
    retrieved_documents,
    supporting_sentence,
)

LEADS = "|".join((re.escape(QUOTE_LEAD), re.escape(TITLED_LEAD).replace(re.escape("{title}"), ".+?")))
QUOTED = re.compile(f'(?:{LEADS})"(.*)"\\s*So the answer is', re.S)


def rows(path: str) -> pl.DataFrame:
    files = [Path(path)] if path.endswith(".parquet") else sorted(Path(path).rglob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")


def quote_of(segments: list[dict]) -> str | None:
    steps = [s["text"] for s in segments if s["kind"] == "model"]
    found = QUOTED.findall(steps[-1]) if steps else []
    return normalize_answer(found[-1]) if found else None


def documents(observations: list[dict], fmt) -> list[tuple[int, int, str]]:
    """(observation counted from the last, document rank from 1, text) of every document the results hold."""
    return [
        (k, d, text)
        for k, obs in enumerate(reversed(observations))
        for d, (_, text) in enumerate(retrieved_documents([obs], fmt), 1)
    ]


def position(quote: str, docs: list[tuple[int, int, str]]) -> tuple[int, int, int] | None:
    """(observation, document, sentence index) of the sentence quoted, or None when no result holds it."""
    for k, d, text in docs:
        for s, sentence in enumerate(SENTENCE.split(text)):
            said = normalize_answer(sentence)
            if said and (quote in said or (said in quote and 2 * len(said) >= len(quote))):
                return k, d, s
    return None


def label(where: tuple[int, int, int] | None) -> str:
    if where is None:
        return "not in results"
    k, d, s = where
    return f"obs-{k} doc-{d} sent-{min(s, 3)}{'+' if s >= 3 else ''}"


def states(text: str, golds: list[str]) -> bool:
    """Whether a normalised text holds a normalised gold answer as whole words."""
    return any(f" {g} " in f" {text} " for g in golds)


def classify(row: dict) -> tuple[bool, bool, str | None, str]:
    """(right, gold in results, error class or None, where the quote sits)."""
    fmt = get_format(row["format"])
    observations = [s for s in row["segments"] if s["kind"] == "observation"]
    golds = [g for g in map(normalize_answer, row["golden_answers"]) if g]
    right = normalize_answer(row["answer"] or "") in golds
    gold_in_results = supporting_sentence(list(row["golden_answers"]), retrieved(observations, fmt)[2]) is not None
    quote = quote_of(row["segments"])
    docs = documents(observations, fmt)
    where = None if quote is None else position(quote, docs)
    shown = "no quote" if quote is None else label(where)
    if right or not gold_in_results:
        error = None
    elif quote is None:
        error = "no_quote"
    elif where is None:
        error = "quote_not_in_results"
    elif states(quote, golds):
        error = "quote_holds_gold"
    else:
        stating = {(k, d) for k, d, text in docs if states(normalize_answer(text), golds)}
        error = "quote_other_sentence" if where[:2] in stating else "quote_other_document"
    return right, gold_in_results, error, shown


def answers_last_query(row: dict) -> bool:
    """Whether the answer is, normalised, the query of the trajectory's last search."""
    queries = [s.get("query") for s in row["segments"] if s["kind"] == "observation" and s.get("query")]
    return bool(queries) and normalize_answer(row["answer"] or "") == normalize_answer(queries[-1])


def echo_line(name: str, frame: pl.DataFrame, classes: list[tuple]) -> str:
    """How many of a set's answers repeat the last query, how many of those are right (``classes``: ``classify``
    of each row, in order), and how many answers had a second action to repeat (the core schema's ``n_actions``)."""
    echoes = [c for r, c in zip(frame.iter_rows(named=True), classes) if answers_last_query(r)]
    searched_twice = frame.filter(pl.col("n_actions") >= 2).height
    return (
        f"{name}: {len(echoes)} of {frame.height} answers repeat the last search's query "
        f"({sum(c[0] for c in echoes)} of them right); {searched_twice} answers came after two or more actions"
    )


def table(counts: Counter, total: int, top: int = 8) -> str:
    return "\n".join(f"  {k:<28}{n:>5}  {n / max(total, 1):6.1%}" for k, n in counts.most_common(top))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("student", help="the student's trajectories: a parquet file or a folder of them (evaluate.run's)")
    ap.add_argument("--teacher", default="", help="the teacher's trajectories (a curated set), for the positions")
    args = ap.parse_args()
    student_rows = rows(args.student)
    student = [classify(r) for r in student_rows.iter_rows(named=True)]
    wrong_with_gold = [c for c in student if not c[0] and c[1]]
    print(
        f"{args.student}: {len(student)} answers, {sum(c[0] for c in student)} right, "
        f"{len(wrong_with_gold)} wrong with the gold in the results"
    )
    print(table(Counter(c[2] for c in wrong_with_gold), len(wrong_with_gold)))
    for name, group in (("right", [c for c in student if c[0]]), ("wrong", [c for c in student if not c[0]])):
        print(f"where the student's quote sits, {name} answers ({len(group)}):")
        print(table(Counter(c[3] for c in group), len(group)))
    print(echo_line("the student", student_rows, student))
    if args.teacher:
        teacher_rows = rows(args.teacher)
        teacher = [classify(r) for r in teacher_rows.iter_rows(named=True)]
        print(echo_line("the teacher", teacher_rows, teacher))
        quoting = [c for c in teacher if c[3] != "no quote"]
        print(f"where the teacher's quote sits ({args.teacher}, {len(quoting)} trajectories that quote):")
        print(table(Counter(c[3] for c in quoting), len(quoting)))


if __name__ == "__main__":
    main()
