"""The end-of-run summary (also written as ``summary.json`` in the output folder).

``dataset`` describes every row of the run's jobs that is in the folder (this run's and earlier
runs'); ``run`` describes this invocation only (rows it finished, wall time, throughput, rows of earlier
runs it generated again because an engine failure had ended them: ``retried_errors``).

Budgets: when ``teacher.max_total_tokens`` / ``max_cost_usd`` is reached no trajectory starts, but those in
flight finish (at most ``concurrency - 1`` besides the one that reached it, each within its own
``search.max_tokens`` completion tokens plus its calls' prompt tokens). By how much the output went over
is ``run.tokens_over_budget`` / ``run.cost_over_budget_usd`` (present when that budget is set).

Row measures: ``well_formed`` = the completion parses under the format preset with no error (an
answer, balanced tags, no search after the answer); ``em``/``f1``/``cover_em`` score the extracted
answer against the gold aliases, ``autocoa_lenient`` is the AutoCoA repo's scorer on the whole text.
"""

from __future__ import annotations

from collections import Counter
from statistics import mean

import pyarrow as pa

from coa.formats import completion_text, get_format
from coa.score import score_all
from synth.synthesize import RunStats
from synth.teacher import TeacherConfig


def _share(values: list[bool]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def dataset_summary(table: pa.Table) -> dict:
    rows = table.to_pylist()
    if not rows:
        return {"rows": 0}
    wf, searched, scores = [], [], []
    for r in rows:
        completion = completion_text(r["segments"])
        wf.append(get_format(r["format"]).parse(completion).well_formed)
        searched.append(r["n_actions"] > 0)
        scores.append(score_all(completion, r["golden_answers"], r["format"]))
    return {
        "rows": len(rows),
        "questions": len({r["question_id"] for r in rows}),
        "by_mode": dict(Counter(r["mode"] for r in rows)),
        "finish_reasons": dict(Counter(r["finish_reason"] for r in rows)),
        "well_formed": _share(wf),
        "with_search": _share(searched),
        "searches_per_row": round(mean(r["n_actions"] for r in rows), 3),
        **{k: round(mean(s[k] for s in scores), 4) for k in scores[0]},
        "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
        "completion_tokens": sum(r["completion_tokens"] for r in rows),
        "completion_tokens_per_row": round(mean(r["completion_tokens"] for r in rows), 1),
    }


def run_summary(
    stats: RunStats,
    teacher: TeacherConfig,
    expected: int,
    skipped: int,
    spent: tuple[int, int] = (0, 0),
    retried: int = 0,
) -> dict:
    """``spent``: (prompt, completion) tokens of the output's earlier rows, which count against the budgets."""
    minutes = stats.wall_s / 60 if stats.wall_s else 0.0
    out = {
        "expected_rows": expected,
        "skipped_done": skipped,
        "retried_errors": retried,
        "finished": stats.rows,
        "complete": not stats.stopped and skipped + stats.rows >= expected,
        "stopped": stats.stopped,
        "wall_s": round(stats.wall_s, 2),
        "trajectories_per_min": round(stats.rows / minutes, 2) if minutes else 0.0,
        "completion_tokens_per_s": round(stats.completion_tokens / stats.wall_s, 1) if stats.wall_s else 0.0,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "teacher_calls": stats.calls,
        "search_calls": stats.searches,
        "search_batches": stats.search_batches,
        "errors": stats.errors,
        "finish_reasons": stats.finish_reasons,
        "protocol": stats.protocol,  # protocol breaks repaired (think_closed) or named (synth.protocol)
        **stats.engine,  # API engines: "endpoints" {url: requests, tokens, errors, latency p50/p90/p99}; chat turns
    }
    if teacher.price_prompt or teacher.price_completion:
        out["cost"] = round(teacher.cost(stats.prompt_tokens, stats.completion_tokens), 6)
    prompt, completion = spent[0] + stats.prompt_tokens, spent[1] + stats.completion_tokens
    if teacher.max_total_tokens:
        out["tokens_over_budget"] = max(0, prompt + completion - teacher.max_total_tokens)
    if teacher.max_cost_usd:
        out["cost_over_budget_usd"] = round(max(0.0, teacher.cost(prompt, completion) - teacher.max_cost_usd), 6)
    return out


def format_summary(summary: dict) -> str:
    d, r = summary["dataset"], summary["run"]
    lines = [
        f"synth {summary['mode']} → {summary['out']}",
        f"  this run: {r['finished']} rows in {r['wall_s']:.1f}s ({r['trajectories_per_min']}/min, "
        f"{r['completion_tokens_per_s']} tok/s), {r['search_calls']} searches in {r['search_batches']} "
        f"batches, {r['skipped_done']} already done" + (f", cost {r['cost']}" if "cost" in r else ""),
    ]
    if d.get("rows"):
        lines.append(
            f"  dataset: {d['rows']}/{r['expected_rows']} rows, well-formed {d['well_formed']:.1%}, "
            f"with search {d['with_search']:.1%}, {d['searches_per_row']} searches/row, "
            f"EM {d['em']:.3f}, F1 {d['f1']:.3f}, lenient {d['autocoa_lenient']:.3f}, "
            f"tokens {d['prompt_tokens']}+{d['completion_tokens']}"
        )
        lines.append(f"  finish: {d['finish_reasons']}")
        if r.get("protocol"):
            lines.append(f"  protocol breaks (synth.protocol): {r['protocol']}")
    if r.get("neutralised_tags"):
        lines.append(f"  teacher text: {r['neutralised_tags']} format tags in its reasoning or prose made plain text")
    over = [
        f"{r[k]} {unit}" for k, unit in (("tokens_over_budget", "tokens"), ("cost_over_budget_usd", "USD")) if r.get(k)
    ]
    if over:
        lines.append(f"  over budget by {' and '.join(over)} (the trajectories in flight when it was reached finished)")
    for url, e in r.get("endpoints", {}).items():
        lines.append(
            f"  endpoint {url}: {e['requests']} requests, {e['errors']} errors, tokens "
            f"{e['prompt_tokens']}+{e['completion_tokens']}, latency p50/p90/p99 "
            f"{e['latency_p50_s']}/{e['latency_p90_s']}/{e['latency_p99_s']} s"
        )
    if r["stopped"]:
        lines.append(f"  STOPPED EARLY: {r['stopped']}\n  finished rows are kept; re-run the same command to finish")
    return "\n".join(lines)
