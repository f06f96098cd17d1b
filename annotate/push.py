"""``action=push``: each set → one Argilla dataset; only rows not already there are sent.

Resumable by construction: the server is the record of what arrived. Each run lists the record ids the
dataset holds and sends the rest in bulk calls of ``batch_size`` (≤ 1,000); a run cut off after some
batches sends only what is still missing next time. A row whose content changed has a new record id
(``render.record_id``) and arrives as a new record; the old record stays, with its answers, and pull
reads the newest.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import polars as pl

from annotate import datasets
from annotate.client import ServerDown, down_message
from annotate.config import ReviewConfig
from annotate.render import PAIR_COLUMNS, TRAJECTORY_COLUMNS, pair_record, trajectory_record


def set_path(cfg: ReviewConfig, name: str) -> Path:
    return Path(cfg.sets_dir) / f"{name}.parquet"


def read_set(cfg: ReviewConfig, name: str) -> pl.DataFrame:
    path = set_path(cfg, name)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: set {name!r} not found (run `python -m curate.run step=sets`, or set sets_dir=)"
        )
    df = pl.read_parquet(path)
    need = PAIR_COLUMNS if cfg.kind(name) == "pairs" else TRAJECTORY_COLUMNS
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} for a {cfg.kind(name)} set")
    dup = df.filter(pl.col("id").is_duplicated())
    if dup.height:
        raise ValueError(f"{path}: row id {dup['id'][0]!r} repeats")
    return df


def render_set(cfg: ReviewConfig, name: str, df: pl.DataFrame) -> list[dict]:
    make = pair_record if cfg.kind(name) == "pairs" else trajectory_record
    out = []
    for i, row in enumerate(df.iter_rows(named=True), start=1):
        try:
            rec = make(row, cfg.metric, cfg.threshold, cfg.observation_chars)
        except Exception as e:
            raise ValueError(f"{set_path(cfg, name)}: row {i} (id {row.get('id')!r}): cannot render: {e}") from e
        if rec["n_steps"] > cfg.max_steps:
            raise ValueError(
                f"{set_path(cfg, name)}: row {i} (id {row['id']!r}) has {rec['n_steps']} steps but the "
                f"most a record may have is max_steps={cfg.max_steps}; set max_steps={rec['n_steps']} or more"
            )
        out.append(rec)
    return out


def existing_ids(client, dataset, batch: int = 1000) -> set[str]:
    """Every record id the dataset holds (fields come along: the list endpoint has no id-only mode)."""
    ids, offset = set(), 0
    while True:
        page = client.api.records.list(
            dataset.id, offset=offset, limit=batch, with_suggestions=False, with_responses=False
        )
        ids.update(str(m.external_id) for m in page)
        if len(page) < batch:
            return ids
        offset += batch


def to_argilla(rec: dict, dataset):
    import argilla as rg

    label, agent, score = rec["verdict"]
    record = rg.Record(
        id=rec["id"],
        fields=rec["fields"],
        metadata=rec["metadata"],
        suggestions=[rg.Suggestion("decision", label, score=score, agent=agent)],
    )
    record.dataset = dataset
    return record.api_model()


def send(client, dataset, records: list[dict], batch_size: int, api_url: str, on_batch=None) -> int:
    """Bulk-upsert ``records`` in batches; returns how many were sent. Stops at the first failure: what
    was sent is on the server, the rest goes next run."""
    sent = 0
    for start in range(0, len(records), batch_size):
        chunk = [to_argilla(r, dataset) for r in records[start : start + batch_size]]
        try:
            client.api.records.bulk_upsert(dataset.id, chunk)
        except httpx.TransportError as e:
            raise ServerDown(
                down_message(
                    api_url,
                    f"{type(e).__name__} after {sent} of {len(records)} new records of {dataset.name!r} arrived",
                )
            ) from None
        sent += len(chunk)
        if on_batch:
            on_batch(sent)
    return sent


def push(client, cfg: ReviewConfig) -> dict:
    report = {}
    for name in cfg.sets:
        t0 = time.perf_counter()
        records = render_set(cfg, name, read_set(cfg, name))
        try:
            dataset = datasets.ensure(client, name, cfg, max((r["n_steps"] for r in records), default=0))
            have = existing_ids(client, dataset)
        except httpx.TransportError as e:
            raise ServerDown(down_message(cfg.api_url, type(e).__name__)) from None
        rows_there = {r.rsplit("-", 1)[0] for r in have}
        new = [r for r in records if r["id"] not in have]
        changed = sum(r["row_id"] in rows_there for r in new)
        sent = send(client, dataset, new, cfg.batch_size, cfg.api_url)
        report[name] = {
            "dataset": dataset.name,
            "rows": len(records),
            "already_there": len(records) - len(new),
            "sent": sent,
            "changed_content": changed,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        print(
            f"push {name} → {dataset.name}: {len(records)} rows, {sent} sent "
            f"({len(records) - len(new)} already there, {changed} with changed content)",
            flush=True,
        )
    return report
