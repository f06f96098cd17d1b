"""Breakdowns of an evaluation: by question type, hops and searches, and retrieval coverage (the
intervals and paired differences themselves are ``coa.stats``).

    breakdown(rows, "qtype")                   # EM / F1 with intervals per question type
    searches_by(rows, "qtype")                 # searches per question (mean, interval, n) per question type
    multi_search_answers(rows)                 # share of bridge questions answered after >= 2 searches, EM on them
    tool_use(rows)                             # per tool: calls per question, failed calls, success rate
    dataset_power(rows)                        # the EM difference this n detects (coa.stats.power_statement)
    retrieval_coverage(passages, golds)        # share of questions with a gold answer in any passage
    evidence_found(rows)                       # mean share of each question's evidence passages its searches returned
    compact_metrics(datasets)                  # the DVC metrics file of one evaluated model (metrics/eval_<name>.json)

Question groups come from the question files' own fields (``question_groups``): HotpotQA and 2Wiki
``metadata.type`` (bridge / comparison; comparison / inference / compositional / bridge_comparison) and
hops (``metadata.hops`` of synthesised questions, MuSiQue's ``question_decomposition`` length or ``2hop__`` id
prefix, HotpotQA's gold paragraphs).
"""

from __future__ import annotations

import re
from typing import Sequence

from coa.questions import evidence_ids
from coa.score import cover_exact_match
from coa.stats import bootstrap_ci, power_statement
from coa.tools import tool_label
from coa.trajectory import evidence_recall, retrieved_ids

_HOPS = re.compile(r"^(\d)hop")


def question_groups(question: dict) -> dict:
    """``qtype`` and ``hops`` of a FlashRAG question from its own fields (None where it has none): hops are
    ``metadata.hops`` (``synth.questions``), the decomposition's length, the ``Nhop`` id prefix, or the count
    of gold paragraphs (HotpotQA's two)."""
    meta = question.get("metadata") or {}
    hops = None
    if isinstance(meta.get("hops"), int):
        hops = meta["hops"]
    elif isinstance(meta.get("question_decomposition"), list):
        hops = len(meta["question_decomposition"])
    elif m := _HOPS.match(str(question.get("id", ""))):
        hops = int(m.group(1))
    elif isinstance(meta.get("gold_paragraph_ids"), list) and meta["gold_paragraph_ids"]:
        hops = len(set(meta["gold_paragraph_ids"]))
    return {"qtype": meta.get("type"), "hops": hops}


def _groups(rows: Sequence[dict], key: str) -> dict[str, list[dict]]:
    """Rows by the value of ``key`` (as a string), sorted; rows without a value are left out."""
    groups: dict = {}
    for r in rows:
        if r.get(key) is not None:
            groups.setdefault(str(r[key]), []).append(r)
    return dict(sorted(groups.items()))


def breakdown(rows: Sequence[dict], key: str, resamples: int = 2000) -> dict:
    """EM (with its interval) and F1 per value of ``rows[i][key]``; rows without a value are left out."""
    return {
        g: {
            "n": len(v),
            "em": round(sum(r["em"] for r in v) / len(v), 4),
            "em_ci95": bootstrap_ci([r["em"] for r in v], resamples),
            "f1": round(sum(r["f1"] for r in v) / len(v), 4),
        }
        for g, v in _groups(rows, key).items()
    }


def mean_searches(rows: Sequence[dict], resamples: int = 2000) -> dict:
    """Searches per question (``n_actions``): mean, 95% bootstrap interval and n.

    >>> mean_searches([{"n_actions": 1}, {"n_actions": 2}], resamples=0)["mean"]
    1.5
    """
    x = [r["n_actions"] for r in rows]
    return {
        "n": len(x),
        "mean": round(sum(x) / len(x), 3) if x else None,
        "ci95": bootstrap_ci(x, resamples) if x else None,
    }


def searches_by(rows: Sequence[dict], key: str, resamples: int = 2000) -> dict:
    """``mean_searches`` per value of ``rows[i][key]`` (question type, hops); rows without a value are left out."""
    return {g: mean_searches(v, resamples) for g, v in _groups(rows, key).items()}


def multi_search_answers(
    rows: Sequence[dict], qtype: str = "bridge", min_searches: int = 2, resamples: int = 2000
) -> dict:
    """The share of ``qtype`` questions answered (a parsed answer, ``answered``) after ``min_searches`` or
    more searches, with its interval and n (the ``qtype`` questions); and EM on those answered questions
    (``em_n`` of them; None when there are none): the multi-step behaviour the method is for."""
    typed = [r for r in rows if r.get("qtype") == qtype]
    hits = [bool(r["answered"]) and r["n_actions"] >= min_searches for r in typed]
    ems = [r["em"] for r, hit in zip(typed, hits) if hit]
    return {
        "qtype": qtype,
        "min_searches": min_searches,
        "n": len(typed),
        "answered": sum(hits),
        "rate": round(sum(hits) / len(typed), 4) if typed else None,
        "ci95": bootstrap_ci([float(h) for h in hits], resamples) if typed else None,
        "em": round(sum(ems) / len(ems), 4) if ems else None,
        "em_n": len(ems),
    }


def call_outcomes(segments: Sequence[dict]) -> dict[str, dict[str, int]]:
    """Per tool, the calls a trajectory made (the segments answering one: observations and the simulated
    environment's openings) and how many of those came back with an error (refused, or ran and failed:
    ``coa.tools.ERRORS``), a name no tool has under ``coa.tools.UNKNOWN_TOOL``. Segments written before tools
    existed answer search calls (they have a ``query``)."""
    out: dict[str, dict[str, int]] = {}
    for seg in segments:
        tool = seg.get("tool") or ("search" if seg.get("query") is not None else None)
        if seg["kind"] == "model" or not tool:
            continue
        cell = out.setdefault(tool_label(tool), {"calls": 0, "failed": 0})
        cell["calls"] += 1
        cell["failed"] += bool(seg.get("error"))
    return out


def tool_use(rows: Sequence[dict]) -> dict:
    """Per tool over the rows' ``tool_calls`` (``call_outcomes``): calls per question (over every row),
    questions that called it, calls, failed calls and the success rate of its calls.

    >>> tool_use([{"tool_calls": {"python": {"calls": 2, "failed": 1}}}, {"tool_calls": {}}])["python"]
    {'calls_per_question': 1.0, 'questions_using': 1, 'calls': 2, 'failed': 1, 'success_rate': 0.5, 'n': 2}
    """
    tools = sorted({t for r in rows for t in r.get("tool_calls") or {}})
    out = {}
    for tool in tools:
        cells = [(r.get("tool_calls") or {}).get(tool) or {"calls": 0, "failed": 0} for r in rows]
        calls, failed = sum(c["calls"] for c in cells), sum(c["failed"] for c in cells)
        out[tool] = {
            "calls_per_question": round(calls / len(rows), 4),
            "questions_using": sum(c["calls"] > 0 for c in cells),
            "calls": calls,
            "failed": failed,
            "success_rate": round(1 - failed / calls, 4) if calls else None,
            "n": len(rows),
        }
    return out


def dataset_power(rows: Sequence[dict]) -> dict:
    """The EM difference this dataset's n detects at 80% power (``coa.stats.power_statement``), paired against a
    second model at the same EM p whose errors are independent of this one's: sd of the per-question
    differences √(2p(1−p)). Stages of one run agree more than that, so the report's statement from an observed
    pair is the sharper one; at EM 0 or 1 the worst case √0.5 (two models at 0.5) stands in."""
    n = len(rows)
    p = sum(r["em"] for r in rows) / n if n else 0.0
    sd = (2 * p * (1 - p)) ** 0.5
    if n and sd:
        return power_statement(
            n,
            sd,
            f"assumed for a second model at this EM {p:.3f} erring independently: "
            f"√(2p(1−p)); paired stages agree more, so this is an upper bound",
        )
    return power_statement(
        n,
        0.5**0.5,
        f"EM {p:.3f} has no spread: the worst case √0.5 (two models at EM 0.5 erring independently), an upper bound",
    )


def gold_in_passages(passages: Sequence[str], golds: Sequence[str]) -> bool:
    """A normalised gold answer appears, on word boundaries, in some passage (``coa.score.cover_exact_match``)."""
    return any(cover_exact_match(p, golds) for p in passages)


def retrieval_coverage(passages: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> dict:
    """Share of questions whose gold answer appears in any of their retrieved passages, with n."""
    hits = [gold_in_passages(p, g) for p, g in zip(passages, golds, strict=True)]
    return {"rate": round(sum(hits) / len(hits), 4) if hits else None, "n": len(hits)}


def question_rows(
    trajectories: Sequence[dict], scored: Sequence[dict], questions: Sequence[dict], dataset: str
) -> list[dict]:
    """One row per evaluated question: its scores, groups and whether the passages the model retrieved
    hold a gold answer (``gold_retrieved``) — what the report's paired statistics and breakdowns read."""
    by_id = {q["id"]: q for q in questions}
    rows = []
    for t, s in zip(trajectories, scored, strict=True):
        question = by_id.get(t["question_id"], {})
        observed = [seg["text"] for seg in t["segments"] if seg["kind"] == "observation"]
        rows.append(
            {
                "question_id": t["question_id"],
                "dataset": dataset,
                "em": s["em"],
                "f1": s["f1"],
                "n_actions": s["n_actions"],
                "well_formed": s["well_formed"],
                "answered": bool((t.get("answer") or "").strip()),  # the format parsed an answer
                **question_groups(question),
                "gold_retrieved": gold_in_passages(observed, t["golden_answers"]),
                # share of the question's evidence passages the environment returned (None: no evidence ids)
                "evidence_recall": evidence_recall(evidence_ids(question), retrieved_ids(t["segments"])),
                "tool_calls": call_outcomes(t["segments"]),
            }
        )
    return sorted(rows, key=lambda r: r["question_id"])


def dataset_breakdowns(rows: Sequence[dict], resamples: int = 2000) -> dict:
    """The metrics fields of one dataset: EM by question type, by hops and by searches (n per cell), searches
    per question overall, by question type and by hops, the bridge questions answered after two or more
    searches, retrieval coverage, the power statement for this n, and per tool its calls and success rate."""
    return {
        "by_qtype": breakdown(rows, "qtype", resamples),
        "by_hops": breakdown(rows, "hops", resamples),
        "by_searches": breakdown(rows, "n_actions", resamples),
        "searches": mean_searches(rows, resamples),
        "searches_by_qtype": searches_by(rows, "qtype", resamples),
        "searches_by_hops": searches_by(rows, "hops", resamples),
        "bridge_multi_search": multi_search_answers(rows, "bridge", 2, resamples),
        "retrieval_coverage": {
            "rate": round(sum(r["gold_retrieved"] for r in rows) / len(rows), 4) if rows else None,
            "n": len(rows),
        },
        "evidence_found": evidence_found(rows),
        "power": dataset_power(rows),
        "tools": tool_use(rows),
    }


def evidence_found(rows: Sequence[dict]) -> dict:
    """The mean share of each question's evidence passages that its trajectory's searches and opens returned, over
    the questions with evidence ids (n), and the share of them with all their evidence found."""
    shares = [r["evidence_recall"] for r in rows if r.get("evidence_recall") is not None]
    if not shares:
        return {"mean": None, "all": None, "n": 0}
    return {
        "mean": round(sum(shares) / len(shares), 4),
        "all": round(sum(s == 1 for s in shares) / len(shares), 4),
        "n": len(shares),
    }


def _interval(pair) -> dict | None:
    return {"low": pair[0], "high": pair[1]} if pair else None


def compact_metrics(datasets: dict) -> dict:
    """One evaluated model's DVC metrics (``metrics/eval_<name>.json``), per dataset of its ``metrics.json``:
    numbers only, nested as ``dvc metrics diff`` and ``dvc exp show`` flatten them (``heldout.em``,
    ``heldout.searches_by_qtype.bridge.mean``); intervals as ``{low, high}``."""
    out = {}
    for dataset, m in datasets.items():
        multi = m.get("bridge_multi_search") or {}
        out[dataset] = {
            "n": m.get("n", 0),
            "em": m.get("em"),
            "em_ci95": _interval(m.get("em_ci95")),
            "f1": m.get("f1"),
            "searches_per_question": m.get("mean_actions"),
            "well_formed": m.get("well_formed"),
            "searches_by_qtype": {
                g: {"n": v["n"], "mean": v["mean"]} for g, v in (m.get("searches_by_qtype") or {}).items()
            },
            "searches_by_hops": {
                g: {"n": v["n"], "mean": v["mean"]} for g, v in (m.get("searches_by_hops") or {}).items()
            },
            "em_by_qtype": {g: {"n": v["n"], "em": v["em"]} for g, v in (m.get("by_qtype") or {}).items()},
            "em_by_searches": {k: {"n": v["n"], "em": v["em"]} for k, v in (m.get("by_searches") or {}).items()},
            "bridge_answered_after_2plus_searches": {k: multi.get(k) for k in ("n", "answered", "rate", "em", "em_n")},
            "min_detectable_em_difference": (m.get("power") or {}).get("min_detectable_em_difference"),
            "evidence_found": m.get("evidence_found") or {"mean": None, "all": None, "n": 0},
            "tools": {
                t: {k: v[k] for k in ("calls_per_question", "success_rate", "questions_using")}
                for t, v in (m.get("tools") or {}).items()
            },
        }
    return out
