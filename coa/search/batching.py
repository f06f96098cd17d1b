"""Batch concurrent search calls: whatever queues while one batch runs is searched as the next batch.

Used by the retrieval server (concurrent HTTP requests) and by synthesis (searches of many
in-flight trajectories). ``search`` is a coroutine; the searcher runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from coa.search.types import Doc, Searcher

MAX_BATCH = 1024


class SearchBatcher:
    def __init__(self, searcher: Searcher, max_batch: int = MAX_BATCH):
        self.searcher, self.max_batch = searcher, max_batch
        self.queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0  # searcher calls made
        self.requests = 0  # search() calls served

    def start(self) -> "SearchBatcher":
        self.queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def __aenter__(self) -> "SearchBatcher":
        return self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def search(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        if self.queue is None:
            raise RuntimeError("SearchBatcher.start() must run inside the event loop first")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((list(queries), k, future))
        return await future

    async def _run(self) -> None:
        while True:
            items = [await self.queue.get()]
            while not self.queue.empty() and sum(len(q) for q, _, _ in items) < self.max_batch:
                items.append(self.queue.get_nowait())
            queries = [q for qs, _, _ in items for q in qs]
            k = max(k for _, k, _ in items)
            try:
                results = await asyncio.to_thread(self.searcher.search, queries, k)
            except Exception as e:  # noqa: BLE001 - every waiting caller gets the error
                for _, _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            self.requests += len(items)
            start = 0
            for qs, k_i, fut in items:
                if not fut.done():
                    fut.set_result([docs[:k_i] for docs in results[start : start + len(qs)]])
                start += len(qs)
