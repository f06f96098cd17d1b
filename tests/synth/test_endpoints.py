"""Several endpoints and budgets, through ``python -m synth.run``'s ``main`` against ``FakeReasoningAPI``
stand-ins (hosted reasoning APIs cannot be reached here): load spread to the least-loaded endpoint, an
endpoint dying mid-run (the run completes on the other, no row lost or duplicated), ``Retry-After``
honoured, every endpoint gone (the run stops, a re-run resumes), and token budgets (stop cleanly, counted
over the whole output, resume with a larger one)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from coa.agent import Budget, run_episode, start_episode
from coa.engines import make_engine
from coa.formats import SEARCH_R1
from coa.questions import DEFAULT_QUESTIONS, load_questions
from coa.trajectory import read_table, row_id
from synth.run import main
from tests.fixtures.chat_api import FakeReasoningAPI


def args(out, urls, index_dir, *extra):
    return [
        "mode=coa",
        "format=search_r1",
        f"search.index={index_dir}",
        f"out={out}",
        f"teacher.base_url=[{', '.join(urls)}]",
        "teacher.api=chat",
        "teacher.model=fake-reasoner",
        "teacher.retries=1",
        "teacher.backoff_s=60",
        "progress=false",
        "search.max_tokens=4000",
        "rows_per_shard=1",
        *extra,
    ]


def expected_ids(limit: int, n: int) -> list[str]:
    return sorted(row_id(q["id"], "coa", s) for q in load_questions(DEFAULT_QUESTIONS, limit=limit) for s in range(n))


def ids(out) -> list[str]:
    return sorted(read_table(out).column("id").to_pylist())


def summary(out) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_an_endpoint_dying_mid_run_loses_and_duplicates_nothing(index_dir, tmp_path):
    out = tmp_path / "out"
    with FakeReasoningAPI(die_after=5, latency_s=0.05) as dying, FakeReasoningAPI(latency_s=0.05) as alive:
        assert main(args(out, [dying.url, alive.url], index_dir, "limit=6", "n=2", "concurrency=4")) == 0
    assert ids(out) == expected_ids(6, 2)  # every question exactly n times
    run = summary(out)["run"]
    assert run["complete"] and not run["stopped"] and run["finish_reasons"] == {"answer": 12}
    endpoints = run["endpoints"]
    assert endpoints[dying.url]["errors"] >= 1 and endpoints[alive.url]["errors"] == 0
    assert endpoints[alive.url]["requests"] > endpoints[dying.url]["requests"] >= 5
    assert {"latency_p50_s", "latency_p90_s", "latency_p99_s", "prompt_tokens"} <= set(endpoints[alive.url])


def test_requests_go_to_the_least_loaded_endpoint(tokenizer, searcher):
    with FakeReasoningAPI(latency_s=0.1, searches=0) as a, FakeReasoningAPI(latency_s=0.1, searches=0) as b:
        engine = make_engine("chat", base_url=[a.url, b.url], model=a.model, tokenizer=tokenizer, retries=0)

        async def go():
            episodes = [start_episode("P ", tokenizer, question={"question": f"q{i}"}) for i in range(8)]
            await asyncio.gather(*(run_episode(ep, engine, None, SEARCH_R1, Budget()) for ep in episodes))
            await engine.close()

        asyncio.run(go())
    assert len(a.requests) == len(b.requests) == 4  # 8 at once: each new one went to the emptier endpoint


def test_retry_after_of_a_429_is_honoured(tokenizer):
    with FakeReasoningAPI(rate_limited=1, retry_after=1.5, searches=0) as api:
        engine = make_engine("chat", base_url=api.url, model=api.model, tokenizer=tokenizer, retries=2)
        ep = start_episode("P ", tokenizer, question={"question": "q"})
        started = time.perf_counter()
        asyncio.run(run_episode(ep, engine, None, SEARCH_R1, Budget()))
        waited = time.perf_counter() - started
    assert ep.finish_reason == "answer" and len(api.requests) == 2 and waited >= 1.5


@pytest.mark.slow
def test_every_endpoint_gone_stops_the_run_and_a_rerun_resumes(index_dir, tmp_path, capsys):
    out = tmp_path / "out"
    with FakeReasoningAPI(die_after=4) as api:
        assert main(args(out, [api.url], index_dir, "limit=4", "concurrency=1")) == 3
    assert "STOPPED EARLY" in capsys.readouterr().out
    kept = ids(out)
    assert 1 <= len(kept) < 4
    with FakeReasoningAPI() as api:
        assert main(args(out, [api.url], index_dir, "limit=4", "concurrency=1")) == 0
    assert ids(out) == expected_ids(4, 1) and summary(out)["run"]["skipped_done"] == len(kept)


@pytest.mark.slow
def test_a_token_budget_stops_cleanly_and_a_larger_one_finishes(index_dir, tmp_path, capsys):
    out = tmp_path / "out"
    with FakeReasoningAPI() as api:
        assert (
            main(args(out, [api.url], index_dir, "limit=6", "n=2", "concurrency=2", "teacher.max_total_tokens=1")) == 3
        )
        run = summary(out)["run"]
        assert run["stopped"].startswith("budget reached") and "teacher.max_total_tokens=1" in run["stopped"]
        first = ids(out)
        assert 1 <= len(first) <= 2  # the rows in flight when the budget was reached finish and are kept
        # the tokens already in the output count: the same budget starts nothing new
        assert (
            main(args(out, [api.url], index_dir, "limit=6", "n=2", "concurrency=2", "teacher.max_total_tokens=1")) == 3
        )
        assert ids(out) == first and summary(out)["run"]["finished"] == 0
        assert (
            main(
                args(out, [api.url], index_dir, "limit=6", "n=2", "concurrency=2", "teacher.max_total_tokens=100000000")
            )
            == 0
        )
    assert ids(out) == expected_ids(6, 2)
    assert "budget reached" in capsys.readouterr().out


def test_a_cost_budget_stops_the_run_and_needs_prices(index_dir, tmp_path):
    import pytest

    from synth.teacher import TeacherConfig

    with pytest.raises(ValueError, match="max_cost_usd needs teacher.price_prompt"):
        TeacherConfig(max_cost_usd=1.0)
    assert (
        TeacherConfig(price_prompt=1e6, max_cost_usd=2.0)
        .over_budget(2, 0)
        .startswith("budget reached: cost 2.0000 USD")
    )
    assert TeacherConfig(price_prompt=1e6, max_cost_usd=2.0).over_budget(1, 0) == ""
    out = tmp_path / "out"
    with FakeReasoningAPI() as api:
        assert (
            main(
                args(
                    out,
                    [api.url],
                    index_dir,
                    "limit=4",
                    "concurrency=1",
                    "teacher.price_prompt=1",
                    "teacher.price_completion=1",
                    "teacher.max_cost_usd=0.000001",
                )
            )
            == 3
        )
    run = summary(out)["run"]
    assert len(ids(out)) == 1 and "teacher.max_cost_usd=1e-06" in run["stopped"] and run["cost"] > 0
