import pytest

from coa.score import (
    autocoa_lenient,
    cover_exact_match,
    exact_match,
    extract_answer,
    f1,
    normalize_answer,
    score_all,
    subem,
)


def test_normalize():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"


def test_em_over_aliases():
    assert exact_match("the USA", ["United States", "USA"]) == 1.0
    assert exact_match("US", ["United States", "USA"]) == 0.0
    assert exact_match(None, ["x"]) == 0.0


def test_f1():
    assert f1("Gian Carlo Menotti", "Gian Carlo Menotti") == 1.0
    assert f1("Carlo Menotti", ["Gian Carlo Menotti"]) == pytest.approx(0.8)
    assert f1("yes it is", "yes") == 0.0  # HotpotQA: yes/no must match exactly
    assert f1("no", ["yes", "no"]) == 1.0


def test_cover_em_word_boundaries():
    assert cover_exact_match("It was James Madison, in 1812", ["james madison"]) == 1.0
    assert cover_exact_match("I know", ["no"]) == 0.0


def test_subem_is_search_r1_substring_rule():
    # Search-R1 qa_em.subem_check / FlashRAG acc: normalised gold in normalised prediction, no word boundaries
    assert subem("nobody knows", ["no"]) == 1.0 and cover_exact_match("nobody knows", ["no"]) == 0.0
    assert subem("It was James Madison, in 1812", ["james madison"]) == 1.0
    assert subem("Parisian", "Paris") == 1.0 and cover_exact_match("Parisian", "Paris") == 0.0
    assert subem("Madison", ["James Madison"]) == 0.0  # the gold must sit inside the prediction, not the reverse
    assert subem("anything", ["The"]) == 1.0  # a gold that normalises to "" matches, as in their code
    assert subem(None, ["x"]) == 0.0 and subem("x", []) == 0.0
    assert subem("\u201cParis\u201d", ["Paris"]) == 1.0 and exact_match("\u201cParis\u201d", ["Paris"]) == 0.0


def R(answer):  # an AutoCoA response with the answer boxed after </think>
    return f"<think>reasoning</think>\n\\boxed{{{answer}}}"


def test_autocoa_lenient_quirks():
    assert autocoa_lenient(R("Herman Wouk"), ["Herman Wouk"]) == 1.0
    # containment scores 0 in their scorer (substring rule)
    assert autocoa_lenient(R("Joanne Harris"), ["Joanne Michèle Sylvie Harris"]) == 0.0
    assert autocoa_lenient(R("Wouk"), ["Herman Wouk"]) == 0.0
    # ≥ 70% of the gold's distinct words present (and not a substring) → 1
    assert autocoa_lenient(R("author Herman Wouk born"), ["Herman Wouk"]) == 0.0  # substring again
    assert autocoa_lenient(R("Wouk, Herman"), ["Herman Wouk"]) == 1.0
    assert autocoa_lenient(R("one two three four x"), ["one two three four five"]) == 1.0  # 4/5 = 80%
    assert autocoa_lenient(R("one two three y z"), ["one two three four five"]) == 0.0  # 3/5 = 60%
    # curly quotes survive their normalisation; ASCII quotes do not
    assert autocoa_lenient(R("\u201cParis\u201d"), ["Paris"]) == 0.0
    assert autocoa_lenient(R('"Paris"'), ["Paris"]) == 1.0
    # \boxed{\text{...}} scores 0 (their regex forbids nested braces)
    assert autocoa_lenient(R("\\text{Paris}"), ["Paris"]) == 0.0
    # number words become digits
    assert autocoa_lenient(R("three"), ["3"]) == 1.0
    # no </think>, or a search after it → 0
    assert autocoa_lenient("\\boxed{Paris}", ["Paris"]) == 0.0
    assert autocoa_lenient("<think>x</think><begin_search> q </end_search>\\boxed{Paris}", ["Paris"]) == 0.0
    # no box: a cue phrase, else the second-to-last sentence
    assert autocoa_lenient("<think>x</think> The answer is Paris. Done.", ["Paris"]) == 1.0


def test_extract_and_score_all():
    text = "<think>a</think>\\boxed{\\text{Paris}}"
    assert extract_answer(text, "autocoa") == "Paris"
    assert score_all(text, ["Paris"]) == {"em": 1.0, "f1": 1.0, "cover_em": 1.0, "subem": 1.0, "autocoa_lenient": 0.0}
    assert extract_answer("<answer>Rome</answer>", "search_r1") == "Rome"
