"""Answer scoring over gold alias lists.

``exact_match``, ``f1`` and ``normalize_answer`` follow the SQuAD/HotpotQA evaluation scripts;
``subem`` is Search-R1's ``subem_check`` (``qa_em.py``) and FlashRAG's "acc" exactly: a normalised gold
is a substring of the normalised prediction, so gold "no" matches "nobody"; ``cover_exact_match`` is
the same test on word boundaries (gold "no" does not match "nobody"); ``autocoa_lenient`` reproduces the scorer of the AutoCoA repo
(``verl/utils/reward_score/hotpotqa.py``, "flexible" extraction), quirks included — it takes the
whole response text because it checks ``</think>`` itself. Every function takes a gold string or a
list of aliases and returns the best score over the aliases.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable

from coa.formats import AUTOCOA, get_format

Golds = str | Iterable[str]

PUNCT = set(string.punctuation)
ARTICLES = re.compile(r"\b(a|an|the)\b")


def _aliases(golds: Golds) -> list[str]:
    return [golds] if isinstance(golds, str) else [g for g in golds if g is not None]


def normalize_answer(s: str | None) -> str:
    """Lowercase, drop punctuation and articles, collapse whitespace (SQuAD)."""
    if s is None:
        return ""
    s = "".join(ch for ch in s.lower() if ch not in PUNCT)
    return " ".join(ARTICLES.sub(" ", s).split())


def exact_match(pred: str | None, golds: Golds) -> float:
    p = normalize_answer(pred)
    return float(pred is not None and any(p == normalize_answer(g) for g in _aliases(golds)))


def _f1(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred), normalize_answer(gold)
    # HotpotQA rule: yes/no/noanswer only score when they match exactly
    if (p in ("yes", "no", "noanswer") or g in ("yes", "no", "noanswer")) and p != g:
        return 0.0
    common = Counter(p.split()) & Counter(g.split())
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p.split()), same / len(g.split())
    return 2 * precision * recall / (precision + recall)


def f1(pred: str | None, golds: Golds) -> float:
    if pred is None:
        return 0.0
    return max((_f1(pred, g) for g in _aliases(golds)), default=0.0)


def cover_exact_match(pred: str | None, golds: Golds) -> float:
    """1 if some normalised gold appears in the normalised prediction as whole words."""
    if pred is None:
        return 0.0
    p = f" {normalize_answer(pred)} "
    return float(any(normalize_answer(g) and f" {normalize_answer(g)} " in p for g in _aliases(golds)))


def subem(pred: str | None, golds: Golds) -> float:
    """1 if some normalised gold is a substring of the normalised prediction (Search-R1 / FlashRAG).

    Kept exactly as they define it, quirks included: no word boundaries, and a gold that normalises
    to "" (e.g. "The") matches every prediction.

    >>> subem("nobody knows", ["no"]), cover_exact_match("nobody knows", ["no"])
    (1.0, 0.0)
    """
    if pred is None:
        return 0.0
    p = normalize_answer(pred)
    return float(any(normalize_answer(g) in p for g in _aliases(golds)))


# ---- AutoCoA's lenient scorer ---------------------------------------------------------------
AUTOCOA_SPECIAL = re.compile(r"[\"'()\[\]{}「」『』]")  # ASCII quotes only: curly quotes survive
NUMBERS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine".split())}
_NUMBER_RE = re.compile(r"\b(" + "|".join(NUMBERS) + r")\b")
FILLERS = re.compile(r"\b(well|so|basically|actually|literally|simply|just|um|uh)\b")
BOXED_FLAT = re.compile(r"\\boxed{([^}]*)}")  # no nesting: \boxed{\text{x}} yields "\text{x"
CUE = re.compile(r"(The answer is|Therefore,|Thus,|So,|In conclusion,|Hence,)[:\s]+([^\.]+)", re.IGNORECASE)


def autocoa_normalize(s: str | None) -> str:
    """AutoCoA's normalisation: lowercase → ASCII punctuation → articles → brackets/quotes →
    number words → filler words → whitespace."""
    if s is None:
        return ""
    s = "".join(ch for ch in s.lower() if ch not in PUNCT)
    s = ARTICLES.sub(" ", s)
    s = AUTOCOA_SPECIAL.sub("", s)
    s = _NUMBER_RE.sub(lambda m: NUMBERS[m.group(1)], s)
    s = FILLERS.sub(" ", s)
    return " ".join(s.split())


def autocoa_extract(response: str) -> str | None:
    """Their "flexible" extraction from the text after the last ``</think>``."""
    tail = response.strip().split(AUTOCOA.think_close)[-1].strip()
    boxes = BOXED_FLAT.findall(tail)
    if boxes:
        return autocoa_normalize(boxes[-1].strip())
    cue = CUE.search(tail)
    if cue:
        return autocoa_normalize(cue.group(2).strip())
    if tail:
        sentences = tail.split(".")
        return autocoa_normalize(sentences[-2].strip() if len(sentences) > 1 else sentences[-1].strip())
    return None


def _autocoa_one(response: str, gold: str) -> float:
    if not response or not gold:
        return 0.0
    if AUTOCOA.think_close not in response or AUTOCOA.search_open in response.split(AUTOCOA.think_close)[-1]:
        return 0.0
    answer = autocoa_extract(response)
    g = autocoa_normalize(gold)
    if answer is None:
        return 0.0
    if answer == g:
        return 1.0
    if g in answer or answer in g:  # containment scores 0 in their code
        return 0.0
    gold_words = set(g.split())
    return float(len(gold_words & set(answer.split())) >= 0.7 * len(gold_words))


def autocoa_lenient(response: str | None, golds: Golds) -> float:
    """AutoCoA's reward on a whole response (needs ``</think>``; no search after it)."""
    if response is None:
        return 0.0
    return max((_autocoa_one(response, g) for g in _aliases(golds)), default=0.0)


def applies(metric: str, format: str) -> bool:
    """Whether ``metric`` can score answers written in ``format``: AutoCoA's lenient scorer reads only
    ``\\boxed{}`` after ``</think>`` (the autocoa preset), so under any other preset it scores 0 whatever
    the answer; report it as n/a there, never as 0."""
    return metric != "autocoa_lenient" or format == "autocoa"


def extract_answer(text: str, format: str = "autocoa") -> str | None:
    """The answer written in ``text`` under a format preset (``\\boxed{}`` or ``<answer>``)."""
    return get_format(format).extract_answer(text)


# the answer metrics a stage reports, selects on or rewards with (score_all also gives subem, a curation column)
METRICS = ("em", "f1", "cover_em", "autocoa_lenient")


def score_all(completion: str, golds: Golds, format: str = "autocoa") -> dict[str, float]:
    """All five scores of one completion; all but ``autocoa_lenient`` use the preset's extracted answer."""
    answer = extract_answer(completion, format)
    return {
        "em": exact_match(answer, golds),
        "f1": f1(answer, golds),
        "cover_em": cover_exact_match(answer, golds),
        "subem": subem(answer, golds),
        "autocoa_lenient": autocoa_lenient(completion, golds),
    }
