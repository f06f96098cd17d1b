"""Batch concurrent calls: whatever queues while one batch runs is the next batch.

``Batcher`` is the queue and its worker; ``SearchBatcher`` batches search calls for the retrieval server
(concurrent HTTP requests) and for synthesis (searches of many in-flight trajectories), and
``coa.tools.batching.ToolBatcher`` the tool calls of the agent loop. Callers await a coroutine; each batch
runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from coa.search.types import Doc, Searcher

MAX_BATCH = 1024


class Batcher:
    """Callers ``submit`` a list of inputs with an option; one ``process`` call in a worker thread answers
    every call that queued meanwhile (up to ``max_batch`` inputs), and ``answer`` cuts each caller's share."""

    def __init__(self, max_batch: int):
        self.max_batch = max_batch
        self.queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0  # process() calls made
        self.requests = 0  # submit() calls served

    def process(self, inputs: list, options: list) -> list:
        """One result per input, in order (``options``: the option of each call in the batch)."""
        raise NotImplementedError

    def answer(self, results: list, option: Any) -> list:
        """One caller's share of the batch's results."""
        return results

    def start(self):
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

    async def __aenter__(self):
        return self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def submit(self, inputs: Sequence, option: Any = None) -> list:
        if self.queue is None:
            raise RuntimeError(f"{type(self).__name__}.start() must run inside the event loop first")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((list(inputs), option, future))
        return await future

    async def _run(self) -> None:
        while True:
            items = [await self.queue.get()]
            while not self.queue.empty() and sum(len(i) for i, _, _ in items) < self.max_batch:
                items.append(self.queue.get_nowait())
            inputs = [x for xs, _, _ in items for x in xs]
            try:
                results = await asyncio.to_thread(self.process, inputs, [o for _, o, _ in items])
            except Exception as e:  # noqa: BLE001 - every waiting caller gets the error (the environment broke)
                for _, _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            self.requests += len(items)
            start = 0
            for xs, option, fut in items:
                if not fut.done():
                    fut.set_result(self.answer(results[start : start + len(xs)], option))
                start += len(xs)


class SearchBatcher(Batcher):
    def __init__(self, searcher: Searcher, max_batch: int = MAX_BATCH):
        super().__init__(max_batch)
        self.searcher = searcher

    def process(self, inputs: list, options: list) -> list[list[Doc]]:
        return self.searcher.search(inputs, max(options))  # the deepest k asked; each caller gets its own

    def answer(self, results: list, option: int) -> list[list[Doc]]:
        return [docs[:option] for docs in results]

    async def search(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        return await self.submit(queries, k)
