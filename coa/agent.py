"""The one agent loop: synthesis, evaluation and RL rollouts all run it.

generate until the search-close tag or the end → if a search call: run the searcher and append the
observation (the simulated environment appends only the observation's opening tag and the policy writes
the rest) → repeat within the action and token budgets.

Episodes are token-first. The prompt is held as ids and every segment carries the ids it stands for:
a model segment holds exactly the ids the engine generated (its text is decoded from them), prefill
and observation segments hold their text's ids encoded on their own. An engine always continues from
``Episode.ids`` (prompt ids + every segment's ids), which are the ids ``coa.tokenize`` gives SFT for the
stored trajectory: a model is trained, rolled out and evaluated on the same sequences.

The loop's logic lives in two functions over an ``Episode`` (``record_generation`` and
``record_observation``); ``run_episode`` drives one episode with any engine (``coa.engines``) and an
async search (``SearchBatcher.search`` shares one batch between concurrent episodes); ``drive`` runs
many episodes at once from synchronous code (RL rollouts, in-process evaluation).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol, Sequence

from coa.formats import FormatPreset, completion_text
from coa.search.batching import SearchBatcher
from coa.search.types import Doc, Searcher
from coa.tokenize import encode, segment_ids
from coa.trajectory import segment


@dataclass
class Budget:
    max_actions: int = 4  # search calls executed; one more call gets the preset's budget message
    max_tokens: int = 1024  # model-written tokens over the whole trajectory
    topk: int = 3  # documents per search

    def with_written_observations(self, observation_tokens: int) -> "Budget":
        """The simulated environment's budget (RL-1, the fidelity probe): the policy writes its own
        observations, so they get the room real ones take outside ``max_tokens``, ``observation_tokens``
        per allowed search. Without it a trajectory that searches cannot finish."""
        return Budget(self.max_actions, self.max_tokens + self.max_actions * observation_tokens, self.topk)


OBSERVATION_TOKENS = 400  # room per written observation: about one top-3 observation of the embedded corpus


@dataclass
class Generation:
    """What an engine wrote for one request. ``token_ids`` are the generated ids without a final EOS
    (``eos`` says one ended the turn); ``text`` is their decoding (or, for servers that return no ids,
    the server's text, encoded by the episode's tokenizer)."""

    text: str
    finish_reason: str  # "stop" (a stop string or EOS) | "length"
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None  # per token of token_ids, when the engine reports them
    eos: bool = False
    eos_logprob: float = 0.0
    n_tokens: int = 0  # tokens generated (billed), EOS and any overshoot past a stop included
    prompt_tokens: int = 0  # tokens of the prompt as the server billed them (0 in-process)
    tool_calls: list | None = None  # structured calls of chat engines, as the API returned them
    error: str = ""  # the engine's output was unusable (chat: bad_tool_call, unknown_tool, empty_answer): the
    # episode ends with this as its finish reason, after ``text`` (what could be converted) is recorded


@dataclass
class Episode:
    """An in-flight trajectory. ``tools``: "real" (stop at searches and run them), "simulated" (stop at
    searches and open the observation tag; the policy writes the observation itself), "forbid" (a search
    call ends it as invalid)."""

    prompt: str
    prompt_ids: list[int]
    tokenizer: object = field(repr=False)
    question: dict = field(default_factory=dict)  # id, question, golden_answers, ... (engines may read it)
    segments: list[dict] = field(default_factory=list)
    tools: str = "real"
    frozen: int = 0  # leading segments given as a prefix: generated text never merges into them
    n_actions: int = 0  # searches executed
    budget_notices: int = 0  # searches refused with the budget message
    completion_tokens: int = 0  # generated tokens (billed) over every call
    prompt_tokens: int = 0  # prompt tokens billed over every call
    calls: int = 0
    eos: bool = False  # the last generation ended the turn with EOS
    eos_logprob: float = 0.0
    finish_reason: str = ""
    latency_s: float = 0.0
    engine_state: dict = field(default_factory=dict, repr=False)  # what an engine keeps per episode (chat:
    # the raw API turns for an exact replay, and the transcript stored with the row)

    @property
    def done(self) -> bool:
        return bool(self.finish_reason)

    @property
    def completion(self) -> str:
        return completion_text(self.segments)

    @property
    def text(self) -> str:
        return self.prompt + self.completion

    @property
    def ids(self) -> list[int]:
        """What an engine continues from: the prompt's ids, then every segment's, in order."""
        return self.prompt_ids + [t for s in self.segments for t in s["token_ids"]]

    def rollout(self) -> dict:
        """The token-level record RL trains on: prompt ids (the prompt and a leading prefill), the ids
        after them with ``env_mask`` 1 on model-written tokens and 0 on toolkit/environment tokens, the
        model tokens' log-probs (0 elsewhere) and the EOS that ended the turn, if any."""
        lead = 1 if self.segments and self.segments[0]["kind"] == "prefill" and not self.frozen else 0
        prompt_ids = self.prompt_ids + [t for s in self.segments[:lead] for t in s["token_ids"]]
        ids, mask, logprobs = [], [], []
        for s in self.segments[lead:]:
            model = s["kind"] == "model"
            ids += s["token_ids"]
            mask += [int(model)] * len(s["token_ids"])
            logprobs += (s.get("logprobs") or [0.0] * len(s["token_ids"])) if model else [0.0] * len(s["token_ids"])
        if self.eos:
            ids.append(self.tokenizer.eos_token_id)
            mask.append(1)
            logprobs.append(self.eos_logprob)
        return {"prompt_ids": prompt_ids, "completion_ids": ids, "env_mask": mask, "logprobs": logprobs}


@dataclass
class Request:
    """What the loop asks an engine for: continue ``ids`` (prompt + every segment's ids) for at most
    ``max_tokens``, stopping at ``stop``. Text-only servers send ``episode.text``; the reference teacher
    reads the episode's actions."""

    ids: list[int]
    max_tokens: int
    stop: list[str]
    episode: Episode
    seed: int | None = None
    fmt: FormatPreset | None = None


class Engine(Protocol):
    """Writes the model's part of an episode (``coa.engines`` registers the implementations)."""

    name: str  # recorded as the trajectory's teacher / model

    async def generate(self, request: Request) -> Generation: ...

    async def close(self) -> None: ...


def start_episode(prompt: str, tokenizer, prefill: str = "", tools: str = "real",
                  prefix: Sequence[dict] = (), question: dict | None = None) -> Episode:
    """A new episode. ``prefix``: segments of an earlier trajectory to continue from (a branch);
    the continuation starts a new segment, so ``segments[len(prefix):]`` is exactly the branch."""
    if tools not in ("real", "simulated", "forbid"):
        raise ValueError(f"tools must be 'real', 'simulated' or 'forbid', got {tools!r}")
    segments = [dict(s, token_ids=segment_ids(tokenizer, s)) for s in prefix]
    ep = Episode(prompt=prompt, prompt_ids=encode(tokenizer, prompt), tokenizer=tokenizer, tools=tools,
                 segments=segments, frozen=len(prefix), question=dict(question or {}))
    if prefill:  # toolkit-written: its own segment, so training treats it as context, never as output
        ep.segments.append(segment("prefill", prefill, token_ids=encode(tokenizer, prefill)))
    return ep


def step_text(segments: Sequence[dict]) -> str:
    """The text of the current step: every segment after the last observation (model and prefill)."""
    start = max((i + 1 for i, seg in enumerate(segments) if seg["kind"] == "observation"), default=0)
    return completion_text(segments[start:])


def search_query(step: str, fmt: FormatPreset) -> str | None:
    """The query of the search call that closes ``step`` (its open tag may sit in a prefill just before:
    a forced search); None if the step does not end with one. Whatever follows the close tag inside the
    same token (SmolLM2 writes ``>.`` as one token) may trail it."""
    end = step.rfind(fmt.search_close)
    start = step.rfind(fmt.search_open, 0, max(end, 0))
    if end < 0 or start < 0 or any(c.isalnum() or c == "<" for c in step[end + len(fmt.search_close):]):
        return None
    return step[start + len(fmt.search_open): end].strip()


def pending_search(ep: Episode, fmt: FormatPreset) -> str | None:
    """The query of a search call that closes the text so far and has no observation yet."""
    if len(ep.segments) <= ep.frozen or ep.segments[-1]["kind"] != "model":
        return None
    return search_query(step_text(ep.segments[ep.frozen:]), fmt)


def cut_at_tag(tokenizer, ids: list[int], tag: str) -> int:
    """The fewest leading ids whose decoding contains ``tag`` (len(ids) if none does). The stop is resolved
    at the token level: when the tag ends inside a merged token (``</search>.``), that whole token is
    kept, so the kept ids decode to exactly the kept text."""
    lo, hi = 1, len(ids)
    if tag not in tokenizer.decode(ids, skip_special_tokens=False):
        return len(ids)
    while lo < hi:  # "the decoding contains the tag" is monotone in the prefix length
        mid = (lo + hi) // 2
        if tag in tokenizer.decode(ids[:mid], skip_special_tokens=False):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _kept(ep: Episode, gen: Generation, fmt: FormatPreset) -> tuple[list[int], str, list[float] | None, bool]:
    """(ids, text, log-probs, eos) of the generation kept in the episode: up to the search-close tag."""
    tok = ep.tokenizer
    if gen.token_ids is None:  # a server that returns text only: cut the text, encode what is kept
        text = gen.text
        cut = text.find(fmt.search_close)
        if cut >= 0:
            text = text[: cut + len(fmt.search_close)]
        return encode(tok, text), text, None, gen.eos and cut < 0
    ids, logprobs = list(gen.token_ids), gen.logprobs
    keep = cut_at_tag(tok, ids, fmt.search_close)
    cut = keep < len(ids) or fmt.search_close in gen.text
    ids = ids[:keep]
    return ids, tok.decode(ids, skip_special_tokens=False), logprobs[:keep] if logprobs else None, gen.eos and not cut


def _append_model(ep: Episode, ids: list[int], text: str, logprobs: list[float] | None) -> None:
    if not ids:  # an immediate EOS writes nothing: no zero-token segment
        return
    logprobs = list(logprobs) if logprobs else [0.0] * len(ids)
    last = ep.segments[-1] if len(ep.segments) > ep.frozen else None
    if last is not None and last["kind"] == "model":
        last["text"] += text
        last["token_ids"] += ids
        last["logprobs"] = last.get("logprobs", [0.0] * (len(last["token_ids"]) - len(ids))) + logprobs
    else:
        ep.segments.append(segment("model", text, token_ids=ids, logprobs=logprobs))


def record_generation(ep: Episode, gen: Generation, fmt: FormatPreset, budget: Budget) -> str | None:
    """Append what was generated (up to the search-close tag); return the query to run next, or None
    if the episode ended."""
    ids, text, logprobs, eos = _kept(ep, gen, fmt)
    _append_model(ep, ids, text, logprobs)
    ep.eos, ep.eos_logprob = eos, gen.eos_logprob if eos else 0.0
    ep.completion_tokens += gen.n_tokens or len(ids) + eos
    ep.prompt_tokens += gen.prompt_tokens
    ep.calls += 1
    if gen.error:
        ep.finish_reason = gen.error
        return None
    query = pending_search(ep, fmt)
    if query is not None:
        if ep.tools == "forbid":
            ep.finish_reason = "forbidden_search"
            return None
        if ep.completion_tokens >= budget.max_tokens:
            ep.finish_reason = "max_tokens"
            return None
        return query
    answered = fmt.parse(ep.completion).answer is not None
    if gen.finish_reason == "length" or ep.completion_tokens >= budget.max_tokens:
        ep.finish_reason = "answer" if answered else "max_tokens"
    else:
        ep.finish_reason = "answer" if answered else "eos"
    return None


def record_observation(ep: Episode, fmt: FormatPreset, query: str, docs: Sequence[Doc] | None,
                       budget: Budget) -> None:
    """Append the environment's observation (or the budget message once actions are used up). In the
    simulated environment the environment only opens the observation (``fmt.observation_opening``, a
    toolkit-written prefill segment carrying the query); the policy writes its contents and closing tag.
    Without the opening a policy that never saw itself open one (SFT-3 trains on observations the
    environment inserted) goes from the search call straight to the next step and writes no observation."""
    if ep.n_actions >= budget.max_actions:
        if ep.budget_notices:  # the model ignored the budget message: stop here
            ep.finish_reason = "max_actions"
            return
        ep.budget_notices += 1
        kind, text, doc_ids = "observation", fmt.budget_observation(), []
    elif ep.tools == "simulated":
        ep.n_actions += 1
        kind, text, doc_ids = "prefill", fmt.observation_opening, []
    else:
        ep.n_actions += 1
        kind, text, doc_ids = "observation", fmt.observation(docs or []), [d.id for d in docs or []]
    ep.segments.append(segment(kind, text, query=query, doc_ids=doc_ids, token_ids=encode(ep.tokenizer, text)))


def written_observations(ep: Episode, fmt: FormatPreset) -> int:
    """Observations the policy wrote and closed itself (simulated environment): the completion's parsed
    observations less those the environment inserted."""
    parsed = sum(step.kind == "observation" for step in fmt.parse(ep.completion).steps)
    return parsed - sum(s["kind"] == "observation" for s in ep.segments)


def needs_search_budget(ep: Episode, budget: Budget) -> bool:
    return ep.n_actions < budget.max_actions


AsyncSearch = Callable[[list, int], Awaitable[list]]


async def run_episode(ep: Episode, engine: Engine, search: AsyncSearch, fmt: FormatPreset, budget: Budget,
                      seed: int | None = None) -> Episode:
    """Drive one episode to its end with an engine and an async (batched) search; the k-th call of the
    episode samples with ``seed + k``."""
    started = time.perf_counter()
    while not ep.done:
        remaining = budget.max_tokens - ep.completion_tokens
        if remaining <= 0:
            ep.finish_reason = "max_tokens"
            break
        call_seed = None if seed is None else seed + ep.calls
        gen = await engine.generate(Request(ep.ids, remaining, fmt.stop_strings, ep, call_seed, fmt))
        query = record_generation(ep, gen, fmt, budget)
        if query is None:
            break
        real = ep.tools == "real" and needs_search_budget(ep, budget)
        docs = (await search([query], budget.topk))[0] if real else None
        record_observation(ep, fmt, query, docs, budget)
    ep.latency_s = time.perf_counter() - started
    return ep


def drive(episodes: list[Episode], engine: Engine, searcher: Searcher | None, fmt: FormatPreset, budget: Budget,
          seeds: Sequence[int | None] | None = None) -> list[Episode]:
    """Run every episode to its end from synchronous code: all in flight at once, their searches
    batched (``searcher``: None when no episode may search)."""
    async def no_search(queries, k):
        raise RuntimeError("no searcher was given, but an episode asked for a search")

    async def go() -> None:
        batcher = SearchBatcher(searcher).start() if searcher is not None else None
        try:
            await asyncio.gather(*(run_episode(ep, engine, batcher.search if batcher else no_search, fmt, budget,
                                               seed) for ep, seed in zip(episodes, seeds or [None] * len(episodes))))
        finally:
            if batcher is not None:
                await batcher.stop()

    asyncio.run(go())
    return episodes
