"""The one agent loop: synthesis, evaluation and RL-2 rollouts all run it.

generate until the search-close tag or the end → if a search call: run the searcher and append the
observation → repeat within the action and token budgets.

The loop's logic lives in two pure functions over an ``Episode`` (``record_generation`` and
``record_observation``); two drivers feed them:

* ``run_episode``   async, one trajectory, for OpenAI-compatible servers (many in flight at once;
                    pass a batched search such as ``SearchBatcher`` to share search calls);
* ``run_batch``     sync, rounds over a batch, for HF/TRL ``generate`` (RL-2 rollouts), keeping the
                    generated token ids exactly as generated and the observation ids beside them.

Plug points (contracts):

``AsyncGenerate = async (text: str, max_tokens: int, stop: list[str]) -> Generation``
``BatchGenerate = (texts: list[str], max_tokens: list[int], stop: list[str]) -> list[Generation]``
``Search        = (queries: list[str], k: int) -> list[list[Doc]]``  (``Searcher.search``; async for
                  run_episode, e.g. ``SearchBatcher.search``)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence

from coa.formats import FormatPreset, completion_text
from coa.search.types import Doc
from coa.trajectory import segment


@dataclass
class Budget:
    max_actions: int = 4  # search calls executed; one more call gets the preset's budget message
    max_tokens: int = 1024  # model-written tokens over the whole trajectory
    topk: int = 3  # documents per search


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" (a stop string or EOS) | "length"
    n_tokens: int
    token_ids: list[int] | None = None  # kept by token-level drivers (RL)
    logprobs: list[float] | None = None


@dataclass
class Episode:
    """An in-flight trajectory. ``tools``: "real" (stop at searches and run them), "simulated" (the
    policy writes its own observations: nothing stops), "forbid" (a search call ends it as invalid)."""

    prompt: str
    segments: list[dict] = field(default_factory=list)
    tools: str = "real"
    frozen: int = 0  # leading segments given as a prefix: generated text never merges into them
    n_actions: int = 0  # searches executed
    budget_notices: int = 0  # searches refused with the budget message
    completion_tokens: int = 0
    finish_reason: str = ""
    latency_s: float = 0.0
    # token-level record (only when the driver gives token ids): ids after the prompt, with
    # env_mask 1 on model-written tokens and 0 on inserted observation tokens
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return bool(self.finish_reason)

    @property
    def completion(self) -> str:
        return completion_text(self.segments)

    @property
    def text(self) -> str:
        return self.prompt + self.completion


def start_episode(prompt: str, prefill: str = "", tools: str = "real", prefix: Sequence[dict] = ()) -> Episode:
    """A new episode. ``prefix``: segments of an earlier trajectory to continue from (a branch);
    the continuation starts a new segment, so ``segments[len(prefix):]`` is exactly the branch."""
    if tools not in ("real", "simulated", "forbid"):
        raise ValueError(f"tools must be 'real', 'simulated' or 'forbid', got {tools!r}")
    ep = Episode(prompt=prompt, tools=tools, segments=[dict(s) for s in prefix], frozen=len(prefix))
    if prefill:  # toolkit-written: its own segment, so training treats it as context, never as output
        ep.segments.append(segment("prefill", prefill))
    return ep


def _append_model(ep: Episode, text: str) -> None:
    if not text:  # an immediate EOS writes nothing: no zero-token segment
        return
    if len(ep.segments) > ep.frozen and ep.segments[-1]["kind"] == "model":
        ep.segments[-1]["text"] += text
    else:
        ep.segments.append(segment("model", text))


def step_text(segments: Sequence[dict]) -> str:
    """The text of the current step: every segment after the last observation (model and prefill)."""
    start = max((i + 1 for i, seg in enumerate(segments) if seg["kind"] == "observation"), default=0)
    return completion_text(segments[start:])


def pending_search(ep: Episode, fmt: FormatPreset) -> str | None:
    """The query of a search call that closes the text so far and has no observation yet (its open
    tag may sit in a prefill segment just before: a forced search)."""
    if len(ep.segments) <= ep.frozen or ep.segments[-1]["kind"] != "model":
        return None
    text = step_text(ep.segments[ep.frozen:])
    if not text.rstrip().endswith(fmt.search_close):
        return None
    start = text.rfind(fmt.search_open)
    if start < 0:
        return None
    return text[start + len(fmt.search_open): text.rstrip().rfind(fmt.search_close)].strip()


def record_generation(ep: Episode, gen: Generation, fmt: FormatPreset, budget: Budget) -> str | None:
    """Append generated text; return the query to run next, or None if the episode ended."""
    text = gen.text
    if ep.tools != "simulated":
        cut = text.find(fmt.search_close)
        if cut >= 0:  # engines may overshoot a stop string inside one token: keep up to the tag
            text = text[: cut + len(fmt.search_close)]
    _append_model(ep, text)
    ep.completion_tokens += gen.n_tokens
    if gen.token_ids is not None:
        ep.completion_ids += gen.token_ids
        ep.env_mask += [1] * len(gen.token_ids)
        ep.logprobs += gen.logprobs or [0.0] * len(gen.token_ids)
    query = pending_search(ep, fmt) if ep.tools != "simulated" else None
    if query is not None:
        if ep.tools == "forbid":
            ep.finish_reason = "forbidden_search"
            return None
        if ep.completion_tokens >= budget.max_tokens:
            ep.finish_reason = "max_tokens"
            return None
        return query
    if gen.finish_reason == "length" or ep.completion_tokens >= budget.max_tokens:
        ep.finish_reason = "answer" if fmt.parse(ep.completion).answer is not None else "max_tokens"
    else:
        ep.finish_reason = "answer" if fmt.parse(ep.completion).answer is not None else "eos"
    return None


def record_observation(ep: Episode, fmt: FormatPreset, query: str, docs: Sequence[Doc] | None,
                       budget: Budget, tokenizer=None) -> None:
    """Append the environment's observation (or the budget message once actions are used up)."""
    if ep.n_actions >= budget.max_actions:
        if ep.budget_notices:  # the model ignored the budget message: stop here
            ep.finish_reason = "max_actions"
            return
        ep.budget_notices += 1
        text, ids = fmt.budget_observation(), []
    else:
        ep.n_actions += 1
        text, ids = fmt.observation(docs or []), [d.id for d in docs or []]
    ep.segments.append(segment("observation", text, query=query, doc_ids=ids))
    if tokenizer is not None:
        obs_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ep.completion_ids += obs_ids
        ep.env_mask += [0] * len(obs_ids)
        ep.logprobs += [0.0] * len(obs_ids)


def needs_search_budget(ep: Episode, budget: Budget) -> bool:
    return ep.n_actions < budget.max_actions


AsyncGenerate = Callable[[str, int, list], Awaitable[Generation]]
AsyncSearch = Callable[[list], Awaitable[list]]


async def run_episode(ep: Episode, generate: AsyncGenerate, search: AsyncSearch,
                      fmt: FormatPreset, budget: Budget) -> Episode:
    """Drive one episode to its end with an async engine and an async (batched) searcher."""
    started = time.perf_counter()
    stop = [] if ep.tools == "simulated" else fmt.stop_strings
    while not ep.done:
        remaining = budget.max_tokens - ep.completion_tokens
        if remaining <= 0:
            ep.finish_reason = "max_tokens"
            break
        gen = await generate(ep.text, remaining, stop)
        query = record_generation(ep, gen, fmt, budget)
        if query is None:
            break
        docs = (await search([query], budget.topk))[0] if needs_search_budget(ep, budget) else None
        record_observation(ep, fmt, query, docs, budget)
    ep.latency_s = time.perf_counter() - started
    return ep


BatchGenerate = Callable[[list, list, list], list]
BatchSearch = Callable[[list], list]


def run_batch(episodes: list[Episode], generate: BatchGenerate, search: BatchSearch,
              fmt: FormatPreset, budget: Budget, tokenizer=None) -> list[Episode]:
    """Drive a batch in rounds: generate for every live episode, then one batched search."""
    started = time.perf_counter()
    live = [ep for ep in episodes if not ep.done]
    while live:
        remaining = [budget.max_tokens - ep.completion_tokens for ep in live]
        for ep, r in zip(live, remaining):
            if r <= 0:
                ep.finish_reason = "max_tokens"
        live = [ep for ep in live if not ep.done]
        if not live:
            break
        stop = [] if all(ep.tools == "simulated" for ep in live) else fmt.stop_strings
        gens = generate([ep.text for ep in live], [budget.max_tokens - ep.completion_tokens for ep in live], stop)
        searching = []
        for ep, gen in zip(live, gens):
            query = record_generation(ep, gen, fmt, budget)
            if query is not None:
                searching.append((ep, query))
        to_run = [(ep, q) for ep, q in searching if needs_search_budget(ep, budget)]
        results = search([q for _, q in to_run], budget.topk) if to_run else []
        docs_of = {id(ep): docs for (ep, _), docs in zip(to_run, results)}
        for ep, query in searching:
            record_observation(ep, fmt, query, docs_of.get(id(ep)), budget, tokenizer)
        live = [ep for ep, _ in searching if not ep.done]
    for ep in episodes:
        ep.latency_s = time.perf_counter() - started
    return episodes
