"""Polars expressions for the core's text rules, so whole columns are normalised and parsed at once.

The definitions stay in ``coa.score`` (normalisation, the AutoCoA scorer) and ``coa.formats`` (tags,
parsing); this module rewrites them as expressions over string columns and reuses their constants.
Python's ``re`` and polars' Rust regex agree on everything used here except the Unicode notion of a
word character (``\\b``) and whitespace (``\\s``, ``str.split``, ``str.strip``): whitespace is spelled
out as Python's exact set, and strings holding a character whose word-ness differs between the two
engines are flagged (``word_mismatch``) so the caller computes them with the core functions instead.
``tests/curate/test_answers.py`` checks them against the core on real, teacher-written and adversarial text.
"""

from __future__ import annotations

import re

import polars as pl

from coa import score as core
from coa.formats import AUTOCOA, TEXT_MARKUP, FormatPreset

# Python's whitespace (str.isspace, str.split, str.strip, re's \s), as a regex class and a strip set
WS = "".join(c for c in map(chr, range(0x110000)) if c.isspace())
WS_CLASS = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in WS) + "]"
_PUNCT_CLASS = "[" + re.escape("".join(sorted(core.PUNCT))) + "]"
# characters that are word characters for exactly one of Python's re (str.isalnum or "_") and Rust's
# regex (Alphabetic, marks, Nd, Pc, Join_Control): a \b next to them may fall differently
WORD_MISMATCH = r"[[\p{M}\p{No}\p{Pc}\p{Join_Control}\p{Alphabetic}]--[\p{L}\p{Nl}\p{Nd}_]]"
# their cue regex with Python's \s spelled out, case-insensitive as in coa.score
CUE = "(?i)" + core.CUE.pattern.replace(r"\s", WS_CLASS[1:-1])
# coa.score.BOXED_FLAT with its braces escaped: Rust reads an unescaped "{" after a letter as a repetition
BOXED_FLAT = core.BOXED_FLAT.pattern.replace("{(", r"\{(").replace(")}", r")\}")
_TEXT = TEXT_MARKUP.pattern  # the preset's \text{…} unwrapping
_THINK_CLOSE, _SEARCH_OPEN = AUTOCOA.think_close, AUTOCOA.search_open  # the AutoCoA scorer reads these tags


def strip(e: pl.Expr) -> pl.Expr:
    return e.str.strip_chars(WS)


def collapse_ws(e: pl.Expr) -> pl.Expr:
    """``" ".join(s.split())``."""
    return e.str.replace_all(WS_CLASS + "+", " ").str.strip_chars(" ")


def normalize_answer(e: pl.Expr) -> pl.Expr:
    """``coa.score.normalize_answer`` (null stays null)."""
    e = e.str.to_lowercase().str.replace_all(_PUNCT_CLASS, "")
    return collapse_ws(e.str.replace_all(core.ARTICLES.pattern, " "))


def autocoa_normalize(e: pl.Expr) -> pl.Expr:
    """``coa.score.autocoa_normalize`` (null stays null)."""
    e = e.str.to_lowercase().str.replace_all(_PUNCT_CLASS, "").str.replace_all(core.ARTICLES.pattern, " ")
    e = e.str.replace_all(core.AUTOCOA_SPECIAL.pattern, "")
    for word, digit in core.NUMBERS.items():  # one word at a time: a digit never forms a later number word
        e = e.str.replace_all(rf"\b{word}\b", digit)
    return collapse_ws(e.str.replace_all(core.FILLERS.pattern, " "))


def word_mismatch(e: pl.Expr) -> pl.Expr:
    return e.str.contains(WORD_MISMATCH).fill_null(False)


def autocoa_tail(completion: pl.Expr) -> pl.Expr:
    """The text after the last ``</think>`` (what their scorer reads), not yet stripped."""
    return completion.str.split(_THINK_CLOSE).list.last()


def autocoa_gate(completion: pl.Expr, tail: pl.Expr) -> pl.Expr:
    """Their precondition: a ``</think>`` exists and no search call follows the last one; a response
    failing it scores 0 whatever is extracted."""
    return completion.str.contains(_THINK_CLOSE, literal=True) & ~tail.str.contains(_SEARCH_OPEN, literal=True)


def autocoa_extract_raw(tail: pl.Expr) -> pl.Expr:
    """``coa.score.autocoa_extract`` before its final normalisation, from the stripped tail: the last
    flat box, else a cue phrase, else the second-to-last sentence; null when the tail is empty/null."""
    boxed = tail.str.extract_all(BOXED_FLAT).list.last().str.extract(BOXED_FLAT, 1)
    cue = tail.str.extract(CUE, 2)
    parts = tail.str.split(".")
    sentence = pl.when(parts.list.len() > 1).then(parts.list.get(-2, null_on_oob=True)).otherwise(parts.list.get(0))
    return (
        pl.when(boxed.is_not_null())
        .then(strip(boxed))
        .when(cue.is_not_null())
        .then(strip(cue))
        .when(tail.str.len_bytes() > 0)
        .then(strip(sentence))
    )


# ---- the format preset's tags ---------------------------------------------------------------------
# parse() is a small state machine over tags; when the tags in a text form the plain grammar below
# (every search/observation open immediately followed by its close, answers holding no tags) its
# outcome is a function of the tag sequence alone, which regexes over a one-letter code can decide.


def tag_codes(fmt: FormatPreset) -> dict[str, str]:
    codes = {
        fmt.think_open: "T",
        fmt.think_close: "t",
        fmt.search_open: "S",
        fmt.search_close: "s",
        fmt.result_open: "R",
        fmt.result_close: "r",
        fmt.answer_open: "A",
    }
    if fmt.answer_close != "}":
        codes[fmt.answer_close] = "a"
    if fmt.call_open:  # generic calls are outside the plain grammar: rows with one go to the core parser
        codes |= {fmt.call_open: "K", fmt.call_close: "k", fmt.response_open: "Q", fmt.response_close: "q"}
    return codes


def tag_regex(fmt: FormatPreset) -> str:
    return "|".join(re.escape(t) for t in sorted(tag_codes(fmt), key=len, reverse=True))


def tag_sequence(completion: pl.Expr, fmt: FormatPreset) -> pl.Expr:
    """The tags of a text in order, one letter each (``<think>…<begin_search>…`` → ``"TSsRrtA"``)."""
    codes = tag_codes(fmt)
    return (
        completion.str.extract_all(tag_regex(fmt))
        .list.eval(pl.element().replace_strict(list(codes), list(codes.values()), return_dtype=pl.String))
        .list.join("")
    )


def plain_grammar(fmt: FormatPreset) -> str:
    answer = "A" if fmt.answer_close == "}" else "Aa"
    return rf"^(?:T|t|Ss|Rr|{answer})*$"


def answer_regex(fmt: FormatPreset) -> str:
    """One answer span: ``\\boxed{…}`` with braces nested one level, or ``<answer>…</answer>``."""
    if fmt.answer_close == "}":
        return re.escape(fmt.answer_open) + r"(?:[^{}]|\{[^{}]*\})*\}"
    return "(?s)" + re.escape(fmt.answer_open) + ".*?" + re.escape(fmt.answer_close)


def unwrap_answer(span: pl.Expr, fmt: FormatPreset) -> pl.Expr:
    """``FormatPreset.extract_answer`` from the answer span: inner text stripped, ``\\text{}`` unwrapped."""
    inner = strip(span.str.strip_prefix(fmt.answer_open).str.strip_suffix(fmt.answer_close))
    return strip(inner.str.replace_all(_TEXT, "${1}"))


def queries(model_text: pl.Expr, fmt: FormatPreset) -> pl.Expr:
    """The search queries written in a text (stripped, as ``parse`` reports them)."""
    call = "(?s)" + re.escape(fmt.search_open) + ".*?" + re.escape(fmt.search_close)
    return model_text.str.extract_all(call).list.eval(
        strip(pl.element().str.strip_prefix(fmt.search_open).str.strip_suffix(fmt.search_close))
    )
