"""bench/reading_errors.py classifies a wrong answer by the sentence its last step quoted (hand-built rows)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from synth.reference import QUOTE_LEAD

SPEC = importlib.util.spec_from_file_location(
    "reading_errors", Path(__file__).resolve().parents[2] / "bench" / "reading_errors.py"
)
reading = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(reading)

FIRST = "\n\n<information>Doc 1(Title: Lake Park) Lake Park is a park. It lies near Fletcher Avenue.</information>\n\n"
LAST = (
    "\n\n<information>Doc 1(Title: Fletcher Avenue) Fletcher Avenue is a road. It runs east."
    "\nDoc 2(Title: Hillsborough) Hillsborough County is in Florida. Its largest city is Tampa.</information>\n\n"
)


def row(final: str, answer: str) -> dict:
    return {
        "format": "search_r1",
        "golden_answers": ["Tampa"],
        "answer": answer,
        "segments": [
            {"kind": "model", "text": "<search>lake park</search>"},
            {"kind": "observation", "text": FIRST},
            {"kind": "model", "text": "<search>hillsborough</search>"},
            {"kind": "observation", "text": LAST},
            {"kind": "model", "text": f"<think>\n{final}\n</think>\n<answer>{answer}</answer>"},
        ],
    }


def quoting(sentence: str, answer: str) -> dict:
    return row(f'{QUOTE_LEAD}"{sentence}" So the answer is {answer}.', answer)


@pytest.mark.parametrize(
    "case, expected",
    [
        (quoting("Its largest city is Tampa.", "Tampa"), (True, True, None, "obs-0 doc-2 sent-1")),
        (quoting("Its largest city is Tampa.", "Florida"), (False, True, "quote_holds_gold", "obs-0 doc-2 sent-1")),
        (
            quoting("Hillsborough County is in Florida.", "Florida"),
            (False, True, "quote_other_sentence", "obs-0 doc-2 sent-0"),
        ),
        (quoting("It runs east.", "east"), (False, True, "quote_other_document", "obs-0 doc-1 sent-1")),
        (quoting("Lake Park is a park.", "park"), (False, True, "quote_other_document", "obs-1 doc-1 sent-0")),
        (quoting("Its capital is Orlando.", "Orlando"), (False, True, "quote_not_in_results", "not in results")),
        (row("I know it.", "Miami"), (False, True, "no_quote", "no quote")),
    ],
    ids=[
        "right",
        "right_sentence_wrong_span",
        "other_sentence",
        "other_document",
        "earlier_observation",
        "invented",
        "no_quote",
    ],
)
def test_each_wrong_answer_is_classed_by_the_sentence_it_quoted(case, expected):
    assert reading.classify(case) == expected


def test_a_wrong_answer_without_the_gold_in_its_results_is_no_reading_error():
    case = quoting("It runs east.", "east")
    case["golden_answers"] = ["Orlando"]
    assert reading.classify(case)[1:3] == (False, None)


def test_an_answer_that_repeats_the_last_query_is_counted_and_one_from_the_results_is_not():
    case = quoting("Hillsborough County is in Florida.", "Hillsborough")
    case["segments"][1]["query"], case["segments"][3]["query"] = "lake park", "Hillsborough"
    assert reading.answers_last_query(case)
    case["segments"][1]["query"] = "Hillsborough"
    case["segments"][3]["query"] = "Fletcher Avenue"
    assert not reading.answers_last_query(case)  # the first query, not the last
    assert not reading.answers_last_query(quoting("Its largest city is Tampa.", "Tampa"))  # no query recorded
