"""The engine seam: everything that writes the model's part of an episode.

An engine (``coa.agent.Engine``) takes a ``coa.agent.Request`` (the ids so far, the token budget, the
stop strings, the episode itself and a seed) and returns a ``coa.agent.Generation`` (ids, text, log-probs, finish reason; a chat engine
also the raw tool calls and, for unusable output, a named ``error`` that ends the episode). Synthesis,
evaluation and RL rollouts drive episodes through ``coa.agent.run_episode`` / ``drive`` with whichever
engine is configured; an engine is one file plus its registration:

    @register("hf")
    class HFEngine: ...                     # coa/engines/hf.py: transformers generate, in-process
    make_engine("hf", model=..., tokenizer=...)

Registered here: ``completions`` (any OpenAI-compatible /v1/completions server; ids in, ids out where
the server returns them), ``chat`` (any /v1/chat/completions API, e.g. a reasoning model with native tool
calls, converted into the format preset), ``hf`` (transformers ``generate`` in-process, requests batched), ``vllm``
(``vllm.LLM`` in-process, with ``sync_weights`` for RL). ``synth.reference`` registers ``reference``
(the templated teacher acting on the episode's actions) when it is imported.

Errors an engine raises, and what the driver does with them:
  ``EngineFatal``       the engine can never answer (bad key, no permission, unknown model): the run
                        stops before writing anything for the request, with the cause;
  ``EngineUnavailable`` it stopped answering after its retries: the run stops, finished rows are kept;
  ``RequestRejected``   this one request cannot be served (e.g. longer than the context): only its
                        trajectory ends, with finish reason ``error``;
  ``BadResponse``       (a ``RequestRejected``) the server answered, but not with a usable completion (not
                        JSON, no ``choices``, a null message, negative usage): its trajectory ends with
                        finish reason ``bad_response``.
Each carries the exit code an entry point ends with when it reaches one (``coa.errors.entry_point``: one
line on stderr, no traceback unless ``COA_DEBUG=1``): 2 for ``EngineFatal`` (a setting to fix), 3 for
the others (the engine stopped or failed; a re-run resumes).
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Callable, Protocol, runtime_checkable

from coa.agent import Engine, Generation, Request

__all__ = [
    "Engine",
    "Generation",
    "Request",
    "Checked",
    "Reporting",
    "ENGINES",
    "register",
    "make_engine",
    "Batched",
    "EngineFatal",
    "EngineUnavailable",
    "RequestRejected",
    "BadResponse",
]


@runtime_checkable
class Checked(Protocol):
    """An engine that can tell before any work whether it will answer (API engines: key, model name)."""

    async def check(self) -> None: ...  # raises EngineFatal / EngineUnavailable


@runtime_checkable
class Reporting(Protocol):
    """An engine that keeps its own statistics (API engines: requests, tokens, errors per endpoint)."""

    def stats(self) -> dict: ...


class EngineFatal(RuntimeError):
    """The engine can never answer this run (authentication, permission, unknown model)."""

    exit_code = 2


class EngineUnavailable(RuntimeError):
    """The engine stopped answering after its retries: stop the run, keep what is done."""

    exit_code = 3


class RequestRejected(RuntimeError):
    """The engine rejected one request: that trajectory ends with finish reason ``reason``."""

    exit_code = 3
    reason = "error"


class BadResponse(RequestRejected):
    """The engine answered one request with something that is not a usable completion (HTML, invalid JSON,
    no ``choices``, a null message, negative token counts): that trajectory ends with "bad_response"."""

    reason = "bad_response"


ENGINES: dict[str, Callable[..., Engine]] = {}
# where each built-in engine lives: imported on first use, so a missing optional dependency (vllm,
# torch) only matters to whoever asks for that engine
# (``synth`` registers ``reference`` when it imports ``synth.reference``: the core names no stage package)
_MODULES = {
    "completions": "coa.engines.completions",
    "chat": "coa.engines.chat",
    "hf": "coa.engines.hf",
    "vllm": "coa.engines.vllm",
}


def register(name: str):
    def add(factory):
        ENGINES[name] = factory
        return factory

    return add


def make_engine(kind: str, **kwargs) -> Engine:
    if kind not in ENGINES and kind in _MODULES:
        importlib.import_module(_MODULES[kind])
    if kind not in ENGINES:
        raise ValueError(f"unknown engine {kind!r}; known: {', '.join(sorted(set(ENGINES) | set(_MODULES)))}")
    return ENGINES[kind](**kwargs)


class Batched:
    """For in-process engines: the requests that arrive while a batch runs form the next batch.

    ``generate_batch(requests) -> generations`` runs in a worker thread. Episodes driven together by
    ``coa.agent.drive`` reach the engine in the same event-loop turn (after a shared search batch),
    so rounds of one RL rollout become one batch each."""

    max_batch = 256
    threaded = True  # run batches in a worker thread (False: on the event loop's thread)

    def _queue(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        if getattr(self, "_loop", None) is not loop:  # a new event loop (each drive() call): a new worker
            self._loop, self._requests = loop, asyncio.Queue()
            self._worker = loop.create_task(self._run())
        return self._requests

    async def generate(self, request: Request):
        future = asyncio.get_running_loop().create_future()
        await self._queue().put((request, future))
        return await future

    async def _run(self) -> None:
        while True:
            items = [await self._requests.get()]
            while not self._requests.empty() and len(items) < self.max_batch:
                items.append(self._requests.get_nowait())
            try:
                batch = [r for r, _ in items]
                results = (
                    await asyncio.to_thread(self.generate_batch, batch) if self.threaded else self.generate_batch(batch)
                )
            except Exception as e:  # noqa: BLE001 - every waiting episode gets the error
                for _, future in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), result in zip(items, results):
                if not future.done():
                    future.set_result(result)

    def generate_batch(self, requests: list[Request]) -> list:
        raise NotImplementedError

    async def close(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None and not worker.done():
            worker.cancel()
