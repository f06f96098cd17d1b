"""Reading pairs (synth/reading_pairs.py) on hand-built CoA rows: the prefix is the row's up to its last observation,
token for token; the rejected side quotes another document of the same results and answers from it."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from coa.formats import get_format
from coa.search.types import Doc
from coa.tokenize import encode, tokenize_segments
from coa.trajectory import Trajectory, segment, write_trajectories
from synth.reading_pairs import main, reading_pair, wrong_answer
from synth.reference import QUOTE_LEAD
from train.data import pair_features

FMT = get_format("search_r1")
QUESTION = "Which rapper from Lauderhill, Florida used Soundcloud rap?"
DOCS = [
    Doc("d1", '"Soundcloud rap"\nSoundcloud rap is a genre of hip hop. It began on Soundcloud.'),
    Doc("d2", '"XXXTentacion"\nJahseh Dwayne Onfroy, known as XXXTentacion, was a rapper from Lauderhill, Florida.'),
    Doc("d3", '"Lauderhill, Florida"\nLauderhill is a city in Broward County, Florida. It was founded in 1959.'),
]
GOLD = "Jahseh Dwayne Onfroy"
SENTENCE = "Jahseh Dwayne Onfroy, known as XXXTentacion, was a rapper from Lauderhill, Florida."


def coa_row(tokenizer, answer: str = GOLD, docs=DOCS, quote: str = SENTENCE) -> Trajectory:
    call = f"<think>\nI will search.\n</think>\n{FMT.search_call(QUESTION)}"
    obs = FMT.observation(docs)
    last = f'<think>\n{QUOTE_LEAD}"{quote}" So the answer is {answer}.\n</think>\n{FMT.answer_text(answer)}'
    segments = [
        segment("model", call, token_ids=encode(tokenizer, call)),
        segment("observation", obs, query=QUESTION, doc_ids=[d.id for d in docs], token_ids=encode(tokenizer, obs)),
        segment("model", last, token_ids=encode(tokenizer, last)),
    ]
    return Trajectory(
        "q1", QUESTION, [GOLD], "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n", segments,
        format="search_r1", answer=answer, n_actions=1, finish_reason="answer", teacher="reference",
    )  # fmt: skip


def test_a_reading_pair_shares_the_rows_prefix_and_quotes_the_first_other_document(tokenizer):
    row = coa_row(tokenizer)
    pair, reason = reading_pair(row)
    assert reason == ""
    assert pair["prefix"] == row.segments[:2] and pair["decision_index"] == 2
    assert (
        pair_features(tokenizer, pair)["prompt_ids"]
        == tokenize_segments(tokenizer, row.prompt, row.segments[:2]).input_ids
    )
    assert pair["chosen"] == row.segments[2]["text"]
    # the first document not stating the gold, its first sentence, its title as the answer; the rest unchanged
    expected = (
        row.segments[2]["text"]
        .replace(SENTENCE, "Soundcloud rap is a genre of hip hop.")
        .replace(GOLD, "Soundcloud rap")
    )
    assert pair["rejected"] == expected
    assert pair["direction"] == "read" and pair["chosen_ends_turn"] and pair["rejected_ends_turn"]


def test_a_number_gold_is_answered_wrong_with_a_number_of_its_shape():
    assert wrong_answer("1901", "It was founded in 1959, on 3 May.", "Lauderhill, Florida") == "1959"
    assert wrong_answer("1901", "It was founded on 3 May.", "Lauderhill, Florida") is None  # no 4-digit number
    assert wrong_answer("Charmed", "Jawbreaker is a 1999 film.", "Jawbreaker (film)") == "Jawbreaker"
    assert wrong_answer("Charmed", "Charmed is a series.", "Charmed (TV series)") is None  # the title states the gold


@pytest.mark.parametrize(
    "change, reason",
    [
        (dict(answer="Miami"), "wrong"),
        (dict(quote=SENTENCE, docs=[DOCS[1]]), "no_other_document"),
        (dict(docs=[Doc("d9", '"Jahseh Dwayne Onfroy discography"\nA list of songs.'), DOCS[1]]), "no_wrong_answer"),
    ],
)
def test_rows_that_give_no_pair_are_counted_with_their_reason(tokenizer, change, reason):
    row = coa_row(tokenizer, **change)
    assert reading_pair(row) == (None, reason)


def test_a_step_that_is_no_quote_gives_no_pair(tokenizer):
    row = coa_row(tokenizer)
    row.segments[2] = segment("model", f"<think>\nI know it.\n</think>\n{FMT.answer_text(GOLD)}")
    assert reading_pair(row) == (None, "not_a_quoted_answer")


def test_the_command_writes_pairs_train_reads_and_counts_the_drops(tokenizer, tmp_path):
    wrong = coa_row(tokenizer, answer="Miami")
    wrong.id = "wrong-row"
    write_trajectories(tmp_path / "coa.parquet", [coa_row(tokenizer), wrong])
    assert main([f"coa={tmp_path / 'coa.parquet'}", f"out={tmp_path / 'reading'}"]) == 0
    pairs = pq.read_table(tmp_path / "reading" / "pairs.parquet").to_pylist()
    assert len(pairs) == 1 and pair_features(tokenizer, pairs[0])["chosen_ids"]
    assert json.loads((tmp_path / "reading" / "metrics.json").read_text())["dropped"]["wrong"] == 1


def test_a_missing_set_is_one_line_and_exit_2(tmp_path, capsys):
    assert main([f"coa={tmp_path / 'none.parquet'}", f"out={tmp_path / 'reading'}"]) == 2
    assert "none.parquet" in capsys.readouterr().err and not (tmp_path / "reading").exists()
