"""``python -m synth.reading_pairs``: pairs on which result the answer is read from (a signal on the choice itself).

    python -m synth.reading_pairs coa=runs/curate/sets/coa.parquet out=runs/reading
    python -m train.run stage=sft1 model=runs/train/sft2 sets_dir=runs/reading runs_dir=runs/reading/train

The student's wrong answers with the gold in its results mostly quote a document that does not state the answer,
the first sentence of the first result about as often as the teacher's data does
(docs/experiments/reading_errors.md): it has learnt where an answer usually is, not to match the question against
what the results say. A reading pair puts the choice itself in SFT-1's contrastive loss. For each right CoA row whose
last step answers from a quoted sentence (the reference teacher's grounded answer, ``synth.reference.QUOTE_LEAD``):

  prefix    the row up to its last observation, token for token (the segments with their ids)
  chosen    the row's last step: the sentence that states the gold, then the gold
  rejected  the same step quoting instead the first sentence of the first document of those results that does not
            state the gold (the student's most frequent wrong choice), and answering from it: a number of the gold's
            shape from that sentence where the gold is a number, else that document's title

Drop reasons (``metrics.json``): ``wrong`` (the row's answer is wrong), ``not_a_quoted_answer`` (its last step is no
grounded quote: a yes/no comparison, a CoT row, an LLM teacher's own words), ``no_other_document`` (every retrieved
document states the gold), ``no_wrong_answer`` (no number of the gold's shape in the other sentence, or its title
states the gold). Writes ``pairs.parquet`` (``PAIR_SCHEMA``, direction ``read``) and ``metrics.json`` into ``out``.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from coa.config import cli
from coa.errors import BadInput, entry_point
from coa.formats import completion_text, get_format
from coa.io import atomic_output, write_json
from coa.score import exact_match
from coa.trajectory import PAIR_SCHEMA, Trajectory, read_trajectories, row_id
from synth.reference import (
    ANSWER_LEAD,
    QUOTE_LEAD,
    SENTENCE,
    grounded_reasoning,
    retrieved_documents,
    supporting_sentence,
)

DROPS = ("wrong", "not_a_quoted_answer", "no_other_document", "no_wrong_answer")
NUMBER = re.compile(r"\d[\d,.]*")


@dataclass
class ReadingPairsConfig:
    coa: str = field(default="runs/curate/sets/coa.parquet", metadata={"help": "the CoA trajectories (curated)"})
    out: str = field(default="runs/reading", metadata={"help": "folder for pairs.parquet and metrics.json"})


def last_observation(segments: list[dict]) -> int:
    """Index of the last observation segment (-1: none)."""
    return max((k for k, s in enumerate(segments) if s["kind"] == "observation"), default=-1)


def wrong_answer(gold: str, sentence: str, title: str) -> str | None:
    """A wrong answer read from ``sentence`` of the document ``title``: a number of the gold's shape where the gold
    is a number, else the title without its parenthesis; None where that would state the gold."""
    if NUMBER.fullmatch(gold.strip()):
        digits = len(re.sub(r"\D", "", gold))
        numbers = [n.rstrip(".,") for n in NUMBER.findall(sentence)]
        answer = next((n for n in numbers if len(re.sub(r"\D", "", n)) == digits), None)
    else:
        answer = re.sub(r"\s*\([^)]*\)\s*$", "", title).strip() or None
    if answer is None or supporting_sentence([gold], [answer]) or supporting_sentence([answer], [gold]):
        return None
    return answer


def reading_pair(row: Trajectory) -> tuple[dict | None, str]:
    """(the pair of a CoA row, "") or (None, its drop reason)."""
    if not row.answer or not exact_match(row.answer, row.golden_answers):
        return None, "wrong"
    fmt = get_format(row.format)
    segments = [dict(s) for s in row.segments]
    last = last_observation(segments)
    step = "".join(s["text"] for s in segments[last + 1 :])
    answer_tag = fmt.answer_text(row.answer)
    said = re.search(re.escape(QUOTE_LEAD) + r"(.*?)" + re.escape(ANSWER_LEAD + row.answer) + r"\.", step, re.S)
    if last < 0 or not said or step.count(answer_tag) != 1 or any(s["kind"] != "model" for s in segments[last + 1 :]):
        return None, "not_a_quoted_answer"
    gold = row.answer
    others = [
        (title, text)
        for title, text in retrieved_documents([segments[last]], fmt)
        if not supporting_sentence([gold], [text])
    ]
    if not others:
        return None, "no_other_document"
    title, text = others[0]
    sentence = SENTENCE.split(text.strip())[0].strip()
    wrong = wrong_answer(gold, sentence, title)
    if wrong is None:
        return None, "no_wrong_answer"
    rejected = (
        step[: said.start()]
        + grounded_reasoning((wrong, sentence, 0), [title])
        + step[said.end() :].replace(answer_tag, fmt.answer_text(wrong))
    )
    prefix = segments[: last + 1]
    return {
        "id": row_id(row.question_id, "pair", 0, f"{row.id}:{last + 1}:read"),
        "question_id": row.question_id,
        "question": row.question,
        "golden_answers": list(row.golden_answers),
        "format": row.format,
        "prompt": row.prompt + completion_text(prefix),
        "chat_prompt": row.prompt,
        "prefix": prefix,
        "chosen": step,
        "rejected": rejected,
        "chosen_ends_turn": True,
        "rejected_ends_turn": True,
        "direction": "read",
        "decision_index": last + 1,
        "chosen_id": row.id,
        "rejected_id": "",
        "chosen_score": 1.0,
        "rejected_score": 0.0,
    }, ""


def mine(rows: list[Trajectory]) -> tuple[list[dict], Counter]:
    """The pairs of ``rows`` and how many rows each drop reason took."""
    pairs, dropped = [], Counter()
    for row in rows:
        pair, reason = reading_pair(row)
        if pair is None:
            dropped[reason] += 1
        else:
            pairs.append(pair)
    return pairs, dropped


@entry_point("synth.reading_pairs")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(ReadingPairsConfig, "reading_pairs", sys.argv[1:] if argv is None else argv, __doc__)
    if not Path(cfg.coa).is_file():
        raise BadInput(f"coa={cfg.coa}: no such file (the curated CoA set, runs/curate/sets/coa.parquet)")
    rows = [r for r in read_trajectories(cfg.coa) if r.mode == "coa"]
    pairs, dropped = mine(rows)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / "pairs.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(pairs, schema=PAIR_SCHEMA), tmp)
    metrics = {"coa_rows": len(rows), "pairs": len(pairs), "dropped": {d: dropped[d] for d in DROPS}}
    write_json(out / "metrics.json", metrics)
    print(metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
