"""Batch the tool calls of concurrent trajectories: whatever queues while one batch runs is the next batch.

The agent loop's counterpart of ``coa.search.batching.SearchBatcher``: ``run`` is a coroutine, and each
batch is one ``Toolbox.run`` in a worker thread, so every tool's calls of the batch go to one
``execute_batch`` (one searcher call for search, ``python.workers`` sandboxes at once for python).
"""

from __future__ import annotations

from typing import Sequence

from coa.search.batching import Batcher
from coa.tools import Observation
from coa.tools.toolbox import Call, Toolbox

MAX_BATCH = 256


class ToolBatcher(Batcher):
    def __init__(self, box: Toolbox, max_batch: int = MAX_BATCH):
        super().__init__(max_batch)
        self.box = box

    def process(self, inputs: list, options: list) -> list[Observation]:
        return self.box.run(inputs)

    async def run(self, calls: Sequence[Call]) -> list[Observation]:
        return await self.submit(calls)
