"""Batch the tool calls of concurrent trajectories: whatever queues while one batch runs is the next batch.

The agent loop's counterpart of ``coa.search.batching.SearchBatcher``: ``run`` is a coroutine, and each
batch is one ``Toolbox.run`` in a worker thread, so every tool's calls of the batch go to one
``execute_batch`` (one searcher call for search, ``python.workers`` sandboxes at once for python).
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from coa.tools import Observation
from coa.tools.toolbox import Call, Toolbox

MAX_BATCH = 256


class ToolBatcher:
    def __init__(self, box: Toolbox, max_batch: int = MAX_BATCH):
        self.box, self.max_batch = box, max_batch
        self.queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0  # Toolbox.run calls made

    def start(self) -> "ToolBatcher":
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

    async def __aenter__(self) -> "ToolBatcher":
        return self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def run(self, calls: Sequence[Call]) -> list[Observation]:
        if self.queue is None:
            raise RuntimeError("ToolBatcher.start() must run inside the event loop first")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((list(calls), future))
        return await future

    async def _run(self) -> None:
        while True:
            items = [await self.queue.get()]
            while not self.queue.empty() and sum(len(c) for c, _ in items) < self.max_batch:
                items.append(self.queue.get_nowait())
            calls = [c for cs, _ in items for c in cs]
            try:
                results = await asyncio.to_thread(self.box.run, calls)
            except Exception as e:  # noqa: BLE001 - every waiting caller gets the error (the environment broke)
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            start = 0
            for cs, fut in items:
                if not fut.done():
                    fut.set_result(results[start : start + len(cs)])
                start += len(cs)
