"""Statistics of an evaluation: paired differences, power, breakdowns, retrieval coverage.

Every function takes per-question values (0/1 EM, F1 in [0, 1]) in the same question order for the
models compared, so differences are paired: two models answered the same questions.

    paired_difference(em_sft2, em_sft3)        # {"diff": mean(b - a), "ci95": [lo, hi], "n"}
    min_detectable_difference(100, sd=0.4)     # smallest paired EM difference seen at 80% power
    breakdown(rows, "qtype")                   # EM / F1 with intervals per question type
    retrieval_coverage(passages, golds)        # share of questions with a gold answer in any passage

Question groups come from the question files' own fields (``question_groups``): HotpotQA and 2Wiki
``metadata.type`` (bridge / comparison; comparison / inference / compositional / bridge_comparison) and
MuSiQue hops (``metadata.question_decomposition`` length, else the ``2hop__`` id prefix).
"""
from __future__ import annotations

import re
from statistics import NormalDist
from typing import Sequence

from coa.score import cover_exact_match
from evaluate.run import bootstrap_ci

_HOPS = re.compile(r"^(\d)hop")


def paired_difference(a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of ``b - a`` over the same questions with its 95% paired bootstrap interval (questions are
    resampled, each keeping both models' answers)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same questions: {len(a)} vs {len(b)}")
    d = [y - x for x, y in zip(a, b)]
    return {"diff": round(sum(d) / len(d), 4) if d else None, "ci95": bootstrap_ci(d, resamples, seed), "n": len(d)}


def min_detectable_difference(n: int, sd: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest true mean difference a two-sided paired z-test at level ``alpha`` detects with ``power``:
    (z_{1-α/2} + z_{power}) · sd / √n, ``sd`` the standard deviation of the per-question differences.

    >>> round(min_detectable_difference(100, 0.5), 4)
    0.1401
    """
    if n <= 0:
        return None
    z = NormalDist()
    return (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * sd / n ** 0.5


def difference_sd(a: Sequence[float], b: Sequence[float]) -> float:
    """Sample standard deviation of the per-question differences (0 for fewer than two questions)."""
    d = [y - x for x, y in zip(a, b)]
    if len(d) < 2:
        return 0.0
    mean = sum(d) / len(d)
    return (sum((x - mean) ** 2 for x in d) / (len(d) - 1)) ** 0.5


def power_statement(n: int, sd: float, basis: str) -> dict:
    """The run's detectable EM difference, with how ``sd`` was obtained (``basis``)."""
    mdd = min_detectable_difference(n, sd)
    text = (f"With n = {n} held-out questions, the smallest EM difference detectable at 80% power (two-sided "
            f"α = 0.05, paired) is {mdd:.3f}" if mdd is not None else "No held-out questions: no power")
    return {"n": n, "sd_of_differences": round(sd, 4), "basis": basis,
            "min_detectable_em_difference": None if mdd is None else round(mdd, 4),
            "text": f"{text} (sd of per-question differences {sd:.3f}, {basis})."}


def question_groups(question: dict) -> dict:
    """``qtype`` and ``hops`` of a FlashRAG question from its own fields (None where it has none)."""
    meta = question.get("metadata") or {}
    hops = None
    if isinstance(meta.get("question_decomposition"), list):
        hops = len(meta["question_decomposition"])
    elif m := _HOPS.match(str(question.get("id", ""))):
        hops = int(m.group(1))
    return {"qtype": meta.get("type"), "hops": hops}


def breakdown(rows: Sequence[dict], key: str, resamples: int = 2000) -> dict:
    """EM (with its interval) and F1 per value of ``rows[i][key]``; rows without a value are left out."""
    groups: dict = {}
    for r in rows:
        if r.get(key) is not None:
            groups.setdefault(str(r[key]), []).append(r)
    return {g: {"n": len(v), "em": round(sum(r["em"] for r in v) / len(v), 4),
                "em_ci95": bootstrap_ci([r["em"] for r in v], resamples),
                "f1": round(sum(r["f1"] for r in v) / len(v), 4)} for g, v in sorted(groups.items())}


def gold_in_passages(passages: Sequence[str], golds: Sequence[str]) -> bool:
    """A normalised gold answer appears, on word boundaries, in some passage (``coa.score.cover_exact_match``)."""
    return any(cover_exact_match(p, golds) for p in passages)


def retrieval_coverage(passages: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> dict:
    """Share of questions whose gold answer appears in any of their retrieved passages, with n."""
    hits = [gold_in_passages(p, g) for p, g in zip(passages, golds, strict=True)]
    return {"rate": round(sum(hits) / len(hits), 4) if hits else None, "n": len(hits)}


def question_rows(trajectories: Sequence[dict], scored: Sequence[dict], questions: Sequence[dict],
                  dataset: str) -> list[dict]:
    """One row per evaluated question: its scores, groups and whether the passages the model retrieved
    hold a gold answer (``gold_retrieved``) — what the report's paired statistics and breakdowns read."""
    by_id = {q["id"]: q for q in questions}
    rows = []
    for t, s in zip(trajectories, scored, strict=True):
        observed = [seg["text"] for seg in t["segments"] if seg["kind"] == "observation"]
        rows.append({"question_id": t["question_id"], "dataset": dataset, "em": s["em"], "f1": s["f1"],
                     "n_actions": s["n_actions"], "well_formed": s["well_formed"],
                     **question_groups(by_id.get(t["question_id"], {})),
                     "gold_retrieved": gold_in_passages(observed, t["golden_answers"])})
    return sorted(rows, key=lambda r: r["question_id"])


def dataset_breakdowns(rows: Sequence[dict], resamples: int = 2000) -> dict:
    """The metrics fields of one dataset: by question type, by hops, by searches, and retrieval coverage."""
    return {"by_qtype": breakdown(rows, "qtype", resamples), "by_hops": breakdown(rows, "hops", resamples),
            "by_searches": breakdown(rows, "n_actions", resamples),
            "retrieval_coverage": {"rate": round(sum(r["gold_retrieved"] for r in rows) / len(rows), 4) if rows
                                   else None, "n": len(rows)}}
