"""The one agent loop: synthesis, evaluation and RL rollouts all run it.

generate until the search-close tag or the end → if a search call: run the searcher and append the
observation (the simulated environment appends only the observation's opening tag and the policy writes
the rest) → repeat within the action and token budgets.

With a ``Toolbox`` of more tools than search (``coa.tools``; ``run_episode(..., tools=ToolBatcher(box))``,
``drive(..., tools=box)``) generation also stops at the preset's generic call (``fmt.call_close``): the call's
JSON is checked (``Toolbox.prepare_json``), run (calls of concurrent episodes batched per tool) and its
result inserted in the preset's response tags. A call the policy got wrong (not JSON, an unknown tool, bad
arguments, over the total or the tool's budget) gets an observation that says so; the second budget
refusal ends the episode (``max_actions``), as does one refused call more than ``max_actions``
(``bad_tool_call``). Search calls keep their own tags and path, so a search-only run is byte for byte the
same with or without a toolbox.

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
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol, Sequence

from coa.formats import FormatPreset, completion_text, read_call
from coa.search.batching import SearchBatcher
from coa.search.types import Doc, Searcher
from coa.tokenize import encode, segment_ids
from coa.tools import Observation, ToolBudget
from coa.tools.batching import ToolBatcher
from coa.tools.toolbox import Call, Toolbox
from coa.trajectory import segment


@dataclass
class Budget:
    max_actions: int = 4  # tool calls executed, all tools together (searches); one more gets the budget message
    max_tokens: int = 1024  # model-written tokens over the whole trajectory
    topk: int = 3  # documents per search
    per_tool: dict = field(default_factory=dict)  # {tool: calls} beside max_actions (e.g. {"python": 2})

    def with_written_observations(self, observation_tokens: int) -> "Budget":
        """The simulated environment's budget (RL-1, the fidelity probe): the policy writes its own
        observations, so they get the room real ones take outside ``max_tokens``, ``observation_tokens``
        per allowed search. Without it a trajectory that searches cannot finish."""
        return Budget(
            self.max_actions, self.max_tokens + self.max_actions * observation_tokens, self.topk, dict(self.per_tool)
        )

    @property
    def tool_budget(self) -> ToolBudget:
        return ToolBudget(self.max_actions, dict(self.per_tool))


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
    """An in-flight trajectory. ``tools``: "real" (stop at calls and run them), "simulated" (stop at calls
    and open the observation tag; the policy writes the observation itself), "forbid" (a call, search or
    any other tool, ends it as invalid: ``forbidden_search``)."""

    prompt: str
    prompt_ids: list[int]
    tokenizer: object = field(repr=False)
    question: dict = field(default_factory=dict)  # id, question, golden_answers, ... (engines may read it)
    segments: list[dict] = field(default_factory=list)
    tools: str = "real"
    frozen: int = 0  # leading segments given as a prefix: generated text never merges into them
    n_actions: int = 0  # tool calls executed (searches), all tools together
    tool_calls: Counter = field(default_factory=Counter)  # calls executed per tool (those of a given prefix aside)
    refused: Counter = field(default_factory=Counter)  # calls refused before running, per error (coa.tools.ERRORS)
    budget_notices: int = 0  # calls refused with the budget message
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
    tools: tuple[str, ...] = ("search",)  # the enabled tools (a chat teacher declares each)


class Engine(Protocol):
    """Writes the model's part of an episode (``coa.engines`` registers the implementations)."""

    name: str  # recorded as the trajectory's teacher / model

    async def generate(self, request: Request) -> Generation: ...

    async def close(self) -> None: ...


def start_episode(
    prompt: str,
    tokenizer,
    prefill: str = "",
    tools: str = "real",
    prefix: Sequence[dict] = (),
    question: dict | None = None,
) -> Episode:
    """A new episode. ``prefix``: segments of an earlier trajectory to continue from (a branch);
    the continuation starts a new segment, so ``segments[len(prefix):]`` is exactly the branch."""
    if tools not in ("real", "simulated", "forbid"):
        raise ValueError(f"tools must be 'real', 'simulated' or 'forbid', got {tools!r}")
    segments = [dict(s, token_ids=segment_ids(tokenizer, s)) for s in prefix]
    ep = Episode(
        prompt=prompt,
        prompt_ids=encode(tokenizer, prompt),
        tokenizer=tokenizer,
        tools=tools,
        segments=segments,
        frozen=len(prefix),
        question=dict(question or {}),
    )
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
    if end < 0 or start < 0 or any(c.isalnum() or c == "<" for c in step[end + len(fmt.search_close) :]):
        return None
    return step[start + len(fmt.search_open) : end].strip()


def pending_search(ep: Episode, fmt: FormatPreset) -> str | None:
    """The query of a search call that closes the text so far and has no observation yet."""
    if len(ep.segments) <= ep.frozen or ep.segments[-1]["kind"] != "model":
        return None
    return search_query(step_text(ep.segments[ep.frozen :]), fmt)


@dataclass(frozen=True)
class ToolCall:
    """A generic call (any tool in the preset's call form) that closes the text so far: its JSON body."""

    body: str


def call_body(step: str, fmt: FormatPreset) -> str | None:
    """The JSON of the generic call that closes ``step`` (as ``search_query`` reads a search call), or None."""
    end = step.rfind(fmt.call_close)
    start = step.rfind(fmt.call_open, 0, max(end, 0))
    if (
        not fmt.call_open
        or end < 0
        or start < 0
        or any(c.isalnum() or c == "<" for c in step[end + len(fmt.call_close) :])
    ):
        return None
    return step[start + len(fmt.call_open) : end].strip()


def pending_action(ep: Episode, fmt: FormatPreset, tools: Sequence[str] = ("search",)) -> str | ToolCall | None:
    """The call that closes the text so far and has no observation yet: a search's query, a ``ToolCall``
    (only when a tool besides search is enabled), or None."""
    query = pending_search(ep, fmt)
    if query is not None or all(t == "search" for t in tools):
        return query
    if len(ep.segments) <= ep.frozen or ep.segments[-1]["kind"] != "model":
        return None
    body = call_body(step_text(ep.segments[ep.frozen :]), fmt)
    return None if body is None else ToolCall(body)


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


def _kept(
    ep: Episode, gen: Generation, fmt: FormatPreset, closes: Sequence[str] = ()
) -> tuple[list[int], str, list[float] | None, bool]:
    """(ids, text, log-probs, eos) of the generation kept in the episode: up to the first close tag of a call
    (``closes``: the search-close tag, and the generic call's when other tools are enabled)."""
    tok = ep.tokenizer
    closes = list(closes) or [fmt.search_close]
    if gen.token_ids is None:  # a server that returns text only: cut the text, encode what is kept
        text = gen.text
        found = [(i + len(c)) for c in closes if (i := text.find(c)) >= 0]
        if found:
            text = text[: min(found)]
        return encode(tok, text), text, None, gen.eos and not found
    ids, logprobs = list(gen.token_ids), gen.logprobs
    keep = min(cut_at_tag(tok, ids, c) for c in closes)
    cut = keep < len(ids) or any(c in gen.text for c in closes)
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


def record_generation(
    ep: Episode, gen: Generation, fmt: FormatPreset, budget: Budget, tools: Sequence[str] = ("search",)
) -> str | ToolCall | None:
    """Append what was generated (up to a call's close tag); return the call to run next (a search's query, or
    a ``ToolCall`` when ``tools`` holds more than search), or None if the episode ended."""
    ids, text, logprobs, eos = _kept(ep, gen, fmt, fmt.call_closes(tools))
    _append_model(ep, ids, text, logprobs)
    ep.eos, ep.eos_logprob = eos, gen.eos_logprob if eos else 0.0
    ep.completion_tokens += gen.n_tokens or len(ids) + eos
    ep.prompt_tokens += gen.prompt_tokens
    ep.calls += 1
    if gen.error:
        ep.finish_reason = gen.error
        return None
    query = pending_action(ep, fmt, tools)
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


def record_observation(ep: Episode, fmt: FormatPreset, query: str, docs: Sequence[Doc] | None, budget: Budget) -> None:
    """Append the environment's observation (or the budget message once actions are used up). In the
    simulated environment the environment only opens the observation (``fmt.observation_opening``, a
    toolkit-written prefill segment carrying the query); the policy writes its contents and closing tag.
    Without the opening a policy that never saw itself open one (SFT-3 trains on observations the
    environment inserted) goes from the search call straight to the next step and writes no observation."""
    error = ""
    if not needs_search_budget(ep, budget):
        if ep.budget_notices:  # the model ignored the budget message: stop here
            ep.finish_reason = "max_actions"
            return
        ep.budget_notices += 1
        ep.refused["budget"] += 1
        kind, text, doc_ids, error = "observation", fmt.budget_observation(), [], "budget"
    elif ep.tools == "simulated":
        kind, text, doc_ids = "prefill", fmt.observation_opening, []
    else:
        kind, text, doc_ids = "observation", fmt.observation(docs or []), [d.id for d in docs or []]
    if not error:
        ep.n_actions += 1
        ep.tool_calls["search"] += 1
    ep.segments.append(
        segment(kind, text, query=query, doc_ids=doc_ids, error=error, token_ids=encode(ep.tokenizer, text))
    )


def _used(ep: Episode) -> Counter:
    """Calls so far per tool, for the budget: calls of a given prefix (counted in ``n_actions`` only) under ""."""
    used = Counter(ep.tool_calls)
    if ep.n_actions > sum(used.values()):
        used[""] = ep.n_actions - sum(used.values())
    return used


def refuse(
    ep: Episode, fmt: FormatPreset, refusal: Observation, name: str, args: str, budget: Budget, generic: bool = True
) -> None:
    """Append the observation that refuses a call (``refusal.error`` says why), or end the episode: at the
    second budget refusal (``max_actions``), or at a refused call more than ``max_actions`` (``bad_tool_call``)."""
    if refusal.error == "budget":
        if ep.budget_notices:
            ep.finish_reason = "max_actions"
            return
        ep.budget_notices += 1
    elif sum(n for e, n in ep.refused.items() if e != "budget") >= budget.max_actions:
        ep.finish_reason = "bad_tool_call"
        return
    ep.refused[refusal.error] += 1
    text = fmt.tool_result(refusal.text) if generic else fmt.wrap_observation(refusal.text)
    ep.segments.append(
        segment("observation", text, tool=name, args=args, error=refusal.error, token_ids=encode(ep.tokenizer, text))
    )


def prepare_tool_call(ep: Episode, fmt: FormatPreset, call: ToolCall, budget: Budget, box: Toolbox) -> Call | None:
    """Check a generic call against the toolbox and the budgets: the ``Call`` to run, or None when there is
    nothing to run (a refusal was appended or ended the episode; the simulated environment opened the result
    for the policy to write)."""
    prepared = box.prepare_json(call.body, _used(ep), budget.tool_budget)
    if isinstance(prepared, Observation):
        name, args = read_call(call.body)
        refuse(ep, fmt, prepared, name, args or (call.body if not name else ""), budget)
        return None
    ep.n_actions += 1
    ep.tool_calls[prepared.name] += 1
    if ep.tools == "simulated":
        ep.segments.append(
            segment(
                "prefill",
                fmt.response_opening,
                **_call_fields(prepared),
                token_ids=encode(ep.tokenizer, fmt.response_opening),
            )
        )
        return None
    return prepared


def _call_fields(call: Call) -> dict:
    query = call.args.get("query") if call.name == "search" else None
    return {"tool": call.name, "args": json.dumps(call.args, ensure_ascii=False), "query": query}


def record_tool_result(ep: Episode, fmt: FormatPreset, call: Call, result: Observation) -> None:
    """Append a generic call's result in the preset's response tags (its text neutralised: it is data)."""
    text = fmt.tool_result(result.text)
    ep.segments.append(
        segment(
            "observation",
            text,
            doc_ids=result.provenance.get("doc_ids") or [],
            error=result.error,
            **_call_fields(call),
            token_ids=encode(ep.tokenizer, text),
        )
    )


def written_observations(ep: Episode, fmt: FormatPreset) -> int:
    """Observations the policy wrote and closed itself (simulated environment): the completion's parsed
    observations less those the environment inserted."""
    parsed = sum(step.kind == "observation" for step in fmt.parse(ep.completion).steps)
    return parsed - sum(s["kind"] == "observation" for s in ep.segments)


def needs_search_budget(ep: Episode, budget: Budget) -> bool:
    cap = budget.per_tool.get("search")
    return ep.n_actions < budget.max_actions and (cap is None or ep.tool_calls["search"] < cap)


AsyncSearch = Callable[[list, int], Awaitable[list]]


async def run_episode(
    ep: Episode,
    engine: Engine,
    search: AsyncSearch,
    fmt: FormatPreset,
    budget: Budget,
    seed: int | None = None,
    tools: ToolBatcher | None = None,
) -> Episode:
    """Drive one episode to its end with an engine and an async (batched) search; the k-th call of the
    episode samples with ``seed + k``. ``tools``: the enabled tools (their calls batched across episodes);
    without it, search only."""
    started = time.perf_counter()
    names = tuple(tools.box.names) if tools is not None else ("search",)
    # a forbidden episode ends at a call of any tool, enabled or not ("*": the generic call form is watched)
    watched = (*names, "*") if ep.tools == "forbid" else names
    stops = fmt.stop_strings_for(watched)
    while not ep.done:
        remaining = budget.max_tokens - ep.completion_tokens
        if remaining <= 0:
            ep.finish_reason = "max_tokens"
            break
        call_seed = None if seed is None else seed + ep.calls
        gen = await engine.generate(Request(ep.ids, remaining, stops, ep, call_seed, fmt, names))
        query = record_generation(ep, gen, fmt, budget, watched)
        if query is None:
            break
        if isinstance(query, ToolCall):
            call = prepare_tool_call(ep, fmt, query, budget, tools.box)
            if call is not None:
                record_tool_result(ep, fmt, call, (await tools.run([call]))[0])
            continue
        if "search" not in names:  # search tags, and search is not enabled
            refuse(
                ep,
                fmt,
                tools.box.prepare("search", {"query": query}),
                "search",
                json.dumps({"query": query}),
                budget,
                generic=False,
            )
            continue
        real = ep.tools == "real" and needs_search_budget(ep, budget)
        docs = (await search([query], budget.topk))[0] if real else None
        record_observation(ep, fmt, query, docs, budget)
    ep.latency_s = time.perf_counter() - started
    return ep


def drive(
    episodes: list[Episode],
    engine: Engine,
    searcher: Searcher | None,
    fmt: FormatPreset,
    budget: Budget,
    seeds: Sequence[int | None] | None = None,
    tools: Toolbox | None = None,
) -> list[Episode]:
    """Run every episode to its end from synchronous code: all in flight at once, their searches
    batched (``searcher``: None when no episode may search; else the toolbox's search tool's searcher) and
    their other tool calls too (``tools``: the enabled tools; None = search only)."""

    async def no_search(queries, k):
        raise RuntimeError("no searcher was given, but an episode asked for a search")

    if searcher is None and tools is not None and "search" in tools.tools:
        searcher = getattr(tools.tools["search"], "searcher", None)

    async def go() -> None:
        batcher = SearchBatcher(searcher).start() if searcher is not None else None
        runner = ToolBatcher(tools).start() if tools is not None else None
        try:
            await asyncio.gather(
                *(
                    run_episode(ep, engine, batcher.search if batcher else no_search, fmt, budget, seed, runner)
                    for ep, seed in zip(episodes, seeds or [None] * len(episodes))
                )
            )
        finally:
            for b in (batcher, runner):
                if b is not None:
                    await b.stop()

    asyncio.run(go())
    return episodes
