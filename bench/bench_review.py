"""Review throughput: push and pull of N trajectory rows (default 5,000) against the real Argilla server,
with ratios against the raw SDK on the same records, measured in the same run.

    python bench/bench_review.py [N]

push     annotate.run push (read parquet, render, list what is there, bulk-upsert in 500s)
         baseline: ``dataset.records.log`` of the same records, pre-rendered (rendering not timed)
pull     annotate.run pull (fetch with responses, validate, resolve, write the review table)
         baseline: iterating ``dataset.records(with_responses=True)`` (nothing resolved or written)
Rows are a real curated CoA set (real questions and passages) repeated under new ids.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl  # noqa: E402

from annotate import credentials, datasets  # noqa: E402
from annotate.client import connect  # noqa: E402
from annotate.config import ReviewConfig  # noqa: E402
from annotate.pull import pull  # noqa: E402
from annotate.push import push, read_set, render_set  # noqa: E402
from annotate.serve import ReviewStack, ReviewServerConfig  # noqa: E402
from coa.procs import free_ports  # noqa: E402


def main(n: int = 5000) -> None:
    import argilla as rg

    from tests.fixtures.review_run import build
    from coa.questions import DEFAULT_QUESTIONS, load_questions
    from coa.search import DEFAULT_CORPUS, build_index, load_searcher

    scratch = tempfile.TemporaryDirectory(prefix="bench_review_")  # removed at exit
    work = Path(scratch.name)
    index = build_index(DEFAULT_CORPUS, work / "index", show_progress=False)
    sample = build(work / "sample", load_questions(DEFAULT_QUESTIONS)[:24], load_searcher(index))
    base = pl.read_parquet(sample / "sets" / "coa.parquet")
    rows = pl.concat(
        [base.with_columns(id=pl.format("b{}-{}", pl.lit(i), pl.col("id"))) for i in range(n // base.height + 1)]
    ).head(n)
    (work / "sets").mkdir()
    rows.write_parquet(work / "sets" / "coa.parquet")

    port, search_port, redis_port = free_ports(3)
    serve = ReviewServerConfig(
        data_dir=str(work / "argilla"), port=port, search_port=search_port, redis_port=redis_port
    )
    with ReviewStack(serve) as stack:
        print(f"cold start: {stack.cold_start_s:.1f} s")
        cfg = ReviewConfig(
            api_url=serve.api_url,
            data_dir=serve.data_dir,
            sets_dir=str(work / "sets"),
            sets=["coa"],
            batch_size=500,
            review=str(work / "review.parquet"),
            known_rows=[],
        )
        client = connect(serve.api_url, credentials.owner_api_key(serve.data_dir))

        # baseline push: the raw SDK with pre-rendered records
        rendered = render_set(cfg, "coa", read_set(cfg, "coa"))
        baseline = rg.Dataset(
            name="baseline-coa", workspace="argilla", settings=datasets.settings("trajectories", cfg), client=client
        ).create()
        records = [
            rg.Record(
                id=r["id"],
                fields=r["fields"],
                metadata=r["metadata"],
                suggestions=[rg.Suggestion("decision", r["verdict"][0], score=r["verdict"][2], agent=r["verdict"][1])],
            )
            for r in rendered
        ]
        t = time.perf_counter()
        baseline.records.log(records, batch_size=500)
        raw_push = time.perf_counter() - t

        t = time.perf_counter()
        push(client, ReviewConfig(**{**cfg.__dict__, "dataset_prefix": "bench-"}))
        our_push = time.perf_counter() - t
        t = time.perf_counter()
        again = push(client, ReviewConfig(**{**cfg.__dict__, "dataset_prefix": "bench-"}))
        re_push = time.perf_counter() - t
        assert again["coa"]["sent"] == 0

        # one submitted answer per record (setup, not timed)
        dataset = client.datasets(name="bench-coa", workspace="argilla")
        me = client.me.id
        answered = []
        for i, record in enumerate(dataset.records(batch_size=1000)):
            record.responses.add(
                rg.Response("decision", "reject" if i % 7 == 0 else "accept", user_id=me, status="submitted")
            )
            answered.append(record)
        for i in range(0, len(answered), 1000):
            dataset.records.log(answered[i : i + 1000], batch_size=500)

        t = time.perf_counter()
        fetched = list(dataset.records(with_responses=True, batch_size=1000))
        raw_pull = time.perf_counter() - t
        t = time.perf_counter()
        metrics = pull(
            client,
            ReviewConfig(
                **{**cfg.__dict__, "dataset_prefix": "bench-", "known_rows": [str(work / "sets" / "coa.parquet")]}
            ),
        )
        our_pull = time.perf_counter() - t
        assert len(fetched) == n and metrics["rows"] == n, (len(fetched), metrics["rows"])

    print(f"rows: {n}")
    print(
        f"push   annotate {n / our_push:8.0f} records/s   raw SDK log {n / raw_push:8.0f} records/s   ratio {raw_push / our_push:.2f}x"
    )
    print(f"re-push (nothing new) {re_push:.1f} s")
    print(
        f"pull   annotate {n / our_pull:8.0f} records/s   raw SDK iterate {n / raw_pull:8.0f} records/s   ratio {raw_pull / our_pull:.2f}x"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
