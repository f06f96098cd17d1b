"""Drive jobs through the one agent loop (``coa.agent.run_episode``) with many in flight, on any engine.

``concurrency`` workers share one job iterator; each runs one episode at a time, so at most
``concurrency`` trajectories are in flight. Their searches go through one ``SearchBatcher``, so
searches of concurrent trajectories are run as one batch. Finished rows go to a ``ShardWriter``.

Each row's seed derives from the base seed and the row key (``row_seed``), and the k-th call of a
trajectory uses ``seed + k``, so a re-run of a missing row samples the same way.

An engine error that belongs to one request (``RequestRejected``) ends that row with finish reason
``error`` (``bad_response`` for a reply that was no completion, ``BadResponse``), its message kept in the
row's ``transcript``; such rows (``ENGINE_ERRORS``) are generated again by a re-run unless
``retry_errors=false``. ``EngineFatal`` and ``EngineUnavailable`` stop the run (``RunStats.stopped``)
without writing the rows in flight, so a re-run after the fix does them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Sequence

from coa.agent import Budget, Episode, run_episode, start_episode
from coa.engines import Engine, EngineFatal, EngineUnavailable, RequestRejected
from coa.formats import FormatPreset
from coa.search.batching import SearchBatcher
from coa.tools.batching import ToolBatcher
from coa.tools.toolbox import Toolbox
from coa.search.types import Searcher
from coa.trajectory import Trajectory, count_calls
from synth.jobs import Job
from synth.protocol import settle

ENGINE_ERRORS = ("error", "bad_response")  # finish reasons of rows an engine failure ended: a re-run retries them


@dataclass
class RunStats:
    """Totals of the rows finished by this run."""

    rows: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    searches: int = 0
    calls: int = 0
    errors: int = 0
    search_batches: int = 0
    wall_s: float = 0.0
    stopped: str = ""  # why the run stopped early ("" = every job finished)
    fatal: bool = False  # stopped by a configuration error (key, model): nothing more can succeed
    unavailable: bool = False  # stopped because the engine or the retriever stopped answering (or never answered)
    finish_reasons: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)  # the engine's own stats (API engines: per endpoint)
    protocol: dict = field(default_factory=dict)  # a teacher's protocol breaks, repaired or named (synth.protocol)

    def add(self, t: Trajectory, calls: int, new_searches: int, protocol: str | None = None) -> None:
        if protocol:
            self.protocol[protocol] = self.protocol.get(protocol, 0) + 1
        self.rows += 1
        self.prompt_tokens += t.prompt_tokens
        self.completion_tokens += t.completion_tokens
        self.searches += new_searches
        self.calls += calls
        self.errors += t.finish_reason in ENGINE_ERRORS
        self.finish_reasons[t.finish_reason] = self.finish_reasons.get(t.finish_reason, 0) + 1


def row_seed(base: int, key: str) -> int:
    return int(hashlib.sha1(f"{base}:{key}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def prefix_searches(job: Job) -> int:
    return sum(1 for s in job.prefix if s["kind"] == "observation")


def to_trajectory(
    job: Job, ep: Episode, fmt: FormatPreset, teacher: str, sampling: dict, retriever: str, latency_s: float
) -> Trajectory:
    q = job.question
    return Trajectory(
        question_id=q["id"],
        question=q["question"],
        golden_answers=list(q["golden_answers"]),
        dataset=q.get("dataset") or "",
        prompt=job.prompt,
        segments=ep.segments,
        mode=job.mode,
        sample=job.sample,
        branch_id=job.branch_id,
        parent_id=job.parent_id,
        decision_index=job.decision_index,
        format=fmt.name,
        answer=fmt.extract_answer(ep.completion),
        n_actions=ep.n_actions,
        finish_reason=ep.finish_reason,
        teacher=teacher,
        prompt_id=job.prompt_id,
        prompt_hash=job.prompt_hash,
        sampling=json.dumps(sampling, sort_keys=True),
        retriever=retriever,
        prompt_tokens=ep.prompt_tokens,
        completion_tokens=ep.completion_tokens,
        latency_s=latency_s,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        transcript=transcript_of(ep),
        tool_calls=json.dumps(count_calls(ep.segments), sort_keys=True),
    )


def transcript_of(ep: Episode) -> str | None:
    """The engine's transcript of the row (chat engines), with the engine error that ended it, if any."""
    transcript, error = ep.engine_state.get("transcript"), ep.engine_state.get("error")
    if not error:
        return transcript
    record = json.loads(transcript) if transcript else {}
    return json.dumps(
        {**(record if isinstance(record, dict) else {"transcript": record}), "error": error}, ensure_ascii=False
    )


async def run_job(
    job: Job,
    engine: Engine,
    search,
    fmt: FormatPreset,
    budget: Budget,
    sampling: dict,
    retriever: str,
    tokenizer,
    tools: ToolBatcher | None = None,
    teacher: bool = False,
) -> tuple[Trajectory, int, str | None]:
    """One trajectory, the engine calls it took and (``teacher``: data is being written) the protocol break it
    repaired or named (``synth.protocol.settle``); a request the engine rejects ends it with finish_reason
    "error"."""
    started = time.perf_counter()
    ep = start_episode(
        job.prompt, tokenizer, prefill=job.prefill, tools=job.tools, prefix=job.prefix, question=job.question
    )
    ep.n_actions = prefix_searches(job)  # a branch's action budget covers the whole trajectory
    seed = row_seed(sampling.get("seed", 0), job.id)
    try:
        await run_episode(ep, engine, search, fmt, budget, seed, tools)
    except RequestRejected as e:  # BadResponse included: "bad_response"
        ep.finish_reason, ep.engine_state["error"] = e.reason, str(e)
    protocol = settle(ep, fmt) if teacher else None  # an evaluated policy's text is scored as written
    row_sampling = {**sampling, "base_seed": sampling.get("seed", 0), "seed": seed}
    trajectory = to_trajectory(job, ep, fmt, engine.name, row_sampling, retriever, time.perf_counter() - started)
    return trajectory, ep.calls, protocol


async def run_jobs(
    jobs: Sequence[Job],
    engine: Engine,
    searcher: Searcher | None,
    fmt: FormatPreset,
    budget: Budget,
    sampling: dict,
    retriever: str,
    on_row: Callable[[Trajectory], None],
    concurrency: int,
    tokenizer,
    progress=None,
    over_budget: Callable[[RunStats], str] | None = None,
    tools: Toolbox | None = None,
    teacher: bool = False,
) -> RunStats:
    """Run every job (``tools``: the enabled tools beyond search, ``SearchEnvConfig.loop_tools``; ``teacher``: the rows
    are teacher data, whose protocol breaks are repaired or named, ``synth.protocol``); stop cleanly (``RunStats.stopped``) if the engine or the retriever is gone, or when
    ``over_budget(stats)`` names a reason: no new job starts then, those in flight finish and are kept."""
    stats = RunStats()
    started = time.perf_counter()
    pending = iter(jobs)
    batcher = SearchBatcher(searcher) if searcher is not None else None
    runner = ToolBatcher(tools) if tools is not None else None

    async def no_search(queries, k):  # cot jobs forbid tools: reaching this is a bug
        raise RuntimeError("this run has no searcher, but a trajectory asked for a search")

    search = batcher.search if batcher is not None else no_search

    async def worker() -> None:
        for job in pending:  # one shared iterator: each job is taken by exactly one worker
            if over_budget is not None:
                stats.stopped = stats.stopped or over_budget(stats)
                if stats.stopped:
                    return
            t, calls, protocol = await run_job(
                job, engine, search, fmt, budget, sampling, retriever, tokenizer, runner, teacher
            )
            on_row(t)
            stats.add(t, calls, t.n_actions - prefix_searches(job), protocol)
            if progress is not None:
                elapsed = time.perf_counter() - started
                progress.set_postfix(
                    tok_s=f"{stats.completion_tokens / elapsed:.0f}", searches=stats.searches, refresh=False
                )
                progress.update(1)

    for b in (batcher, runner):
        if b is not None:
            b.start()
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(jobs))):
                group.create_task(worker())
    except* EngineFatal as eg:
        stats.stopped, stats.fatal = str(eg.exceptions[0]), True
    except* EngineUnavailable as eg:
        stats.stopped, stats.unavailable = str(eg.exceptions[0]), True
    except* ConnectionError as eg:  # the retrieval server, after its own retries: nothing more can succeed
        stats.stopped, stats.unavailable = f"retriever unavailable: {eg.exceptions[0]}", True
    finally:
        if batcher is not None:
            stats.search_batches = batcher.batches
            await batcher.stop()
        if runner is not None:
            await runner.stop()
    stats.wall_s = time.perf_counter() - started
    return stats
