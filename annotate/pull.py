"""``action=pull``: reviewers' answers → the review table ``curate sets`` reads; ``action=status``.

The table (``REVIEW_COLUMNS``; parquet, written atomically) has the contract columns ``row_id, decision,
corrected_answer`` and, for people and audits, reviewer counts, the resolved first bad step, comments,
agreement, the set and record it came from. A record counts once it has ``min_submitted`` submitted
answers (drafts and discards do not count).

Resolving several reviewers (``resolve``): the decision is the majority; any tie resolves to ``reject``
(a row people disagree on is not trained on). The corrected answer is the most common one among the
reviewers who gave the winning decision (a tie between different answers → none, counted). Pairs:
``swap`` (the rejected branch is the better one) goes to the table as it is; ``curate sets`` keeps the
pair with its sides exchanged.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from pathlib import Path

import httpx
import polars as pl

from annotate import datasets
from annotate.client import ServerDown, down_message
from annotate.config import ReviewConfig
from annotate.push import set_path
from annotate.render import n_steps, row_of
from coa.io import atomic_output, owned_files, write_json

REVIEW_COLUMNS = {
    "row_id": pl.String,
    "decision": pl.String,
    "corrected_answer": pl.String,
    "n_reviewers": pl.Int32,
    "n_accept": pl.Int32,
    "n_reject": pl.Int32,
    "n_swap": pl.Int32,
    "first_bad_step": pl.Int32,
    "comments": pl.String,
    "agreement": pl.Float64,
    "set": pl.String,
    "record_id": pl.String,
}


def resolve(answers: list[dict]) -> dict:
    """One decision from several reviewers' answers (``decision``, ``corrected_answer``, ``first_bad_step``,
    ``comment`` each). >>> resolve([{"decision": "accept"}, {"decision": "reject"}])["decision"] → 'reject'"""
    votes = Counter(a["decision"] for a in answers)
    top = max(votes.values())
    winners = [d for d, n in votes.items() if n == top]
    decision = winners[0] if len(winners) == 1 else "reject"
    fixes = Counter(
        a["corrected_answer"].strip()
        for a in answers
        if a["decision"] == decision and (a.get("corrected_answer") or "").strip()
    )
    corrected, conflict = None, False
    if fixes:
        best = fixes.most_common()
        conflict = len(best) > 1 and best[0][1] == best[1][1]
        corrected = None if conflict else best[0][0]
    steps = Counter(int(a["first_bad_step"]) for a in answers if a.get("first_bad_step") is not None)
    first_bad = min(s for s, n in steps.items() if n == max(steps.values())) if steps else None
    pairs = list(combinations([a["decision"] for a in answers], 2))
    return {
        "decision": decision,
        "corrected_answer": corrected,
        "correction_conflict": conflict,
        "n_reviewers": len(answers),
        "n_accept": votes["accept"],
        "n_reject": votes["reject"],
        "n_swap": votes["swap"],
        "first_bad_step": first_bad,
        "tie": len(winners) > 1,
        "comments": " | ".join(a["comment"].strip() for a in answers if (a.get("comment") or "").strip()) or None,
        "agreement": (sum(x == y for x, y in pairs) / len(pairs)) if pairs else None,
        "n_pairs": len(pairs),
    }


def _answer(record, response, kind: str, dataset_name: str) -> dict:
    values = {k: (v or {}).get("value") for k, v in (response.values or {}).items()}
    decision = values.get("decision")
    where = f"dataset {dataset_name!r}: record {record.external_id!r}"
    if decision not in datasets.DECISIONS[kind]:
        raise ValueError(
            f"{where}: decision {decision!r} is not one of {datasets.DECISIONS[kind]} (was a label added in the UI?)"
        )
    step = values.get("first_bad_step")
    if step is not None:
        if not str(step).isdigit():
            raise ValueError(f"{where}: first_bad_step {step!r} is not a step number")
        shown = n_steps(record.fields)
        if not 1 <= int(step) <= shown:  # the labels run to the dataset's longest record
            raise ValueError(
                f"{where}: first_bad_step {step} is past the record's {shown} steps; change that "
                "answer in the UI and pull again"
            )
    return {
        "decision": decision,
        "corrected_answer": values.get("corrected_answer"),
        "first_bad_step": int(step) if step is not None else None,
        "comment": values.get("comment"),
    }


def known_rows(cfg: ReviewConfig) -> tuple[set[str], list[str]]:
    """Row ids a review may name: the sets' rows and the upstream rows the sets were drawn from."""
    paths = [set_path(cfg, n) for n in cfg.sets] + [Path(p) for p in cfg.known_rows]
    found = [p for p in paths if p.exists()]
    ids = set()
    for p in found:
        ids.update(pl.read_parquet(p, columns=["id"])["id"].to_list())
    return ids, [str(p) for p in found]


def fetch(client, dataset, batch: int = 1000) -> list:
    models, offset = [], 0
    while True:
        page = client.api.records.list(
            dataset.id, offset=offset, limit=batch, with_suggestions=False, with_responses=True
        )
        models.extend(page)
        if len(page) < batch:
            return models
        offset += batch


def pull(client, cfg: ReviewConfig) -> dict:
    known, sources = known_rows(cfg)
    rows, metrics = [], {"min_submitted": cfg.min_submitted, "sets": {}}
    for name in cfg.sets:
        kind, dname = cfg.kind(name), cfg.dataset_name(name)
        try:
            dataset = datasets.find(client, dname, cfg)
            models = fetch(client, dataset) if dataset is not None else []
        except httpx.TransportError as e:
            raise ServerDown(down_message(cfg.api_url, type(e).__name__)) from None
        newest: dict[str, tuple] = {}
        counts = Counter()
        for m in models:
            answers = [_answer(m, r, kind, dname) for r in (m.responses or []) if r.status == "submitted"]
            counts["records"] += 1
            counts["answers"] += len(answers)
            if not answers:
                continue
            row_id = row_of(str(m.external_id))
            if row_id not in known:
                raise ValueError(
                    f"dataset {dname!r}: record {m.external_id!r} has answers for row {row_id!r}, which "
                    f"no longer exists in {sources or 'any set file'}; re-curate or delete that record"
                )
            if len(answers) < cfg.min_submitted:
                counts["pending"] += 1
                continue
            key = (m.inserted_at.isoformat() if m.inserted_at else "", str(m.external_id))
            if row_id in newest:
                counts["superseded"] += 1  # an older content version of the same row; the newest wins
                if newest[row_id][0] > key:
                    continue
            newest[row_id] = (key, m.external_id, resolve(answers))
        agreeing = total_pairs = 0
        for row_id, (_, rid, r) in sorted(newest.items()):
            counts[f"decision_{r['decision']}"] += 1
            counts["ties"] += r["tie"]
            counts["correction_conflicts"] += r["correction_conflict"]
            if r["agreement"] is not None:
                agreeing += r["agreement"] * r["n_pairs"]
                total_pairs += r["n_pairs"]
            rows.append(
                {"row_id": row_id, "set": name, "record_id": str(rid), **{k: r[k] for k in REVIEW_COLUMNS if k in r}}
            )
        metrics["sets"][name] = {
            "dataset": dname,
            "resolved": len(newest),
            **dict(sorted(counts.items())),
            "pairwise_agreement": round(agreeing / total_pairs, 4) if total_pairs else None,
        }
    table = pl.DataFrame(rows, schema=REVIEW_COLUMNS)
    dup = table.filter(pl.col("row_id").is_duplicated())
    if dup.height:
        raise ValueError(f"row {dup['row_id'][0]!r} is reviewed in two sets ({', '.join(dup['set'].to_list())})")
    with owned_files(Path(cfg.review).parent, PULL_TOOL, "overwrite=true", cfg.overwrite):
        write(table, metrics, Path(cfg.review))
    metrics["rows"] = table.height
    print(
        f"pull: {table.height} reviewed rows → {cfg.review} "
        + "; ".join(
            f"{n}: {m['resolved']} resolved, agreement {m['pairwise_agreement']}" for n, m in metrics["sets"].items()
        ),
        flush=True,
    )
    return metrics


PULL_TOOL = "annotate.run action=pull"  # the owner its folder's marker names (data/review/ carries one)


def write(table: pl.DataFrame, metrics: dict, path: Path) -> None:
    """Table and metrics, each replaced atomically: a reader (dvc, curate) never sees half a file."""
    with atomic_output(path) as tmp:
        table.write_parquet(tmp)
    write_json(path.with_name("metrics.json"), {"rows": table.height, **metrics})


def status(client, cfg: ReviewConfig) -> dict:
    out = {}
    for name in cfg.sets:
        dname = cfg.dataset_name(name)
        try:
            dataset = datasets.find(client, dname, cfg)
            progress = dataset.progress(with_users_distribution=True) if dataset is not None else None
        except httpx.TransportError as e:
            raise ServerDown(down_message(cfg.api_url, type(e).__name__)) from None
        if progress is None:
            print(f"{name}: no dataset {dname!r} yet (run action=push)")
            continue
        done, total = progress.get("completed", 0), progress.get("total", 0)
        users = progress.get("users") or {}
        who = ", ".join(
            f"{u}: {c.get('completed', {}).get('submitted', 0) if isinstance(c.get('completed'), dict) else c}"
            for u, c in users.items()
        )
        print(
            f"{name} ({dname}): {done}/{total} records complete ({100 * done / total if total else 0:.0f}%), "
            f"{progress.get('pending', 0)} pending; min_submitted={dataset.settings.distribution.min_submitted}"
            + (f"; by reviewer: {who}" if who else "")
        )
        out[name] = progress
    return out
