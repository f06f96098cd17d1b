"""MinHash near-duplicates and question-level decontamination on real questions."""

import numpy as np
import polars as pl
import pytest

from coa.questions import DEFAULT_QUESTIONS, load_questions
from curate.decontam import content_key, find_contamination, load_eval_questions, normalize_question
from curate.dedup import minhash, near_duplicates
from curate.filters import words
from tests.curate.helpers import EVAL_SETS


def _sig(texts, perms=64):
    return minhash(pl.select(words(pl.Series(texts))).to_series(), perms=perms)


def test_minhash_estimates_jaccard():
    base = " ".join(f"w{i}" for i in range(200))
    edited = base.replace("w100 ", "x100 ")  # one word changed: 197 of 203 shingles shared
    sig = _sig([base, edited, "something else entirely, about other things and more words here"], perms=128)
    assert abs((sig[0] == sig[1]).mean() - 195 / 201) < 0.06
    assert (sig[0] == sig[2]).mean() < 0.1


def test_near_duplicates_only_within_a_question():
    text = (
        "I need the director of the film first, then where that director was born. The search result names "
        "the director; a second search gives the birthplace, which answers the question."
    )
    sig = _sig([text, text + " Done.", text, "Completely different reasoning about a river and a city."])
    flag, of = near_duplicates(pl.Series(["q1", "q1", "q2", "q1"]), sig, bands=8, threshold=0.8)
    assert flag.tolist() == [False, True, False, False]  # row 2 matches row 0 but belongs to another question
    assert of[1] == 0


def test_question_normalisation():
    assert normalize_question("Who's the  Italian-American composer?") == "who s the italian american composer"
    assert content_key("which films were directed by him") == "directed film him"


@pytest.fixture(scope="module")
def evals():
    return load_eval_questions(EVAL_SETS)


def test_paraphrased_copy_is_caught(evals):
    rows = evals.filter(pl.col("eval_set").str.contains("bamboogle"))
    original = rows["eval_question"][0]  # a real Bamboogle question
    paraphrases = {
        "exact": original.upper().rstrip("?") + " ?",
        "reorder": "Which magazine was started first, First for Women or Arthur's Magazine?",
        "fuzzy": "Who was the first presidnet of the Unted States?",
    }
    ours = evals.vstack(
        pl.DataFrame(
            {
                "eval_set": ["x", "x"],
                "eval_id": ["a", "b"],
                "eval_question": [
                    "Which magazine was started first Arthur's Magazine or First for Women?",
                    "Who was the first president of the United States?",
                ],
            }
        )
    )
    found = find_contamination(list(paraphrases.values()), ours)
    got = dict(found.select("question", "contamination").iter_rows())
    assert {k: got[q] for k, q in paraphrases.items()} == {k: k for k in paraphrases}
    assert find_contamination(
        ["Are Ajuga and Cypress both genera?"],
        ours.vstack(
            pl.DataFrame({"eval_set": ["x"], "eval_id": ["c"], "eval_question": ["Are both Cypress and Ajuga genera?"]})
        ),
    )["contaminated"].item()


def test_no_false_matches_across_real_datasets(evals):
    """HotpotQA dev questions that are not verbatim in the eval sets match none of them."""
    hotpot = [q["question"] for q in load_questions(DEFAULT_QUESTIONS)]
    found = find_contamination(hotpot, evals)
    kinds = found.group_by("contamination").len()
    counts = dict(kinds.iter_rows())
    assert counts.get("exact", 0) >= 150  # the AutoCoA test set holds 500 HotpotQA dev questions
    assert counts.get("fuzzy", 0) == 0 and counts.get("reorder", 0) == 0, (
        found.filter(pl.col("contamination").is_in(["fuzzy", "reorder"])).select("question", "eval_question").to_dicts()
    )
    assert np.isclose(found.filter(pl.col("contamination") == "exact")["similarity"].min(), 100)
