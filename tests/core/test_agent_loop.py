"""The agent loop's own logic, driven by ScriptedEngine (a fake engine that replays fixed completions as
the real tokenizer's ids, the way a token-level engine would) and the real BM25 searcher."""

import asyncio

import pytest

from coa.agent import (
    Budget,
    Generation,
    cut_at_tag,
    drive,
    record_generation,
    run_episode,
    start_episode,
    written_observations,
)
from coa.formats import AUTOCOA, SEARCH_R1
from coa.tokenize import encode, tokenize_segments


class ScriptedEngine:
    """Fake engine: returns the next scripted completion as token ids, cut after the token that completes
    a stop string (as vLLM and HF generate do: the whole token, so it may overshoot the tag)."""

    name = "scripted"

    def __init__(self, tokenizer, *outputs, ids_out: bool = True):
        self.tok, self.outputs, self.ids_out = tokenizer, list(outputs), ids_out
        self.requests = []

    async def generate(self, request):
        self.requests.append(request)
        ids = encode(self.tok, self.outputs.pop(0))
        keep = min([cut_at_tag(self.tok, ids, s) for s in request.stop] or [len(ids)])
        ids = ids[:keep]
        text = self.tok.decode(ids)
        if not self.ids_out:  # a text-only server (OpenAI style keeps the stop string with vLLM's option)
            return Generation(text, "stop", n_tokens=len(ids))
        return Generation(text, "stop", token_ids=ids, n_tokens=len(ids))

    async def close(self):
        pass


def run(ep, engine, searcher, budget=Budget(), fmt=AUTOCOA):
    async def search(queries, k):
        assert searcher is not None, "the episode searched without a searcher"
        return searcher.search(queries, k)

    return asyncio.run(run_episode(ep, engine, search, fmt, budget))


@pytest.mark.slow
def test_search_then_answer_continues_from_ids(searcher, tokenizer):
    engine = ScriptedEngine(
        tokenizer,
        "Need facts. <begin_search> Maria Golovin </end_search> IGNORED",
        "Menotti.</think>\\boxed{Gian Carlo Menotti}",
    )
    ep = run(start_episode("PROMPT", tokenizer, prefill="<think>"), engine, searcher)
    assert ep.finish_reason == "answer" and ep.n_actions == 1
    # the toolkit's prefill is its own segment (context, never trained), the model's text the next one
    assert [s["kind"] for s in ep.segments] == ["prefill", "model", "observation", "model"]
    assert ep.segments[1]["text"] == "Need facts. <begin_search> Maria Golovin </end_search>"
    expected = AUTOCOA.observation(searcher.search(["Maria Golovin"], 3)[0])
    assert ep.segments[2]["text"] == expected and ep.segments[2]["query"] == "Maria Golovin"
    # the second call continues from the exact ids: prompt + prefill + generated + observation ids ...
    second = engine.requests[1].ids
    assert second == (
        encode(tokenizer, "PROMPT")
        + encode(tokenizer, "<think>")
        + ep.segments[1]["token_ids"]
        + encode(tokenizer, expected)
    )
    # ... which are the ids SFT trains on for the stored trajectory
    trained = tokenize_segments(tokenizer, ep.prompt, ep.segments).input_ids
    assert trained == ep.ids and trained[: len(second)] == second


def test_merged_token_after_the_close_tag(searcher, tokenizer):
    """SmolLM2 writes ``>.`` as one token: a generation ending ``</search>.`` keeps that whole token, and
    the kept ids decode to exactly the kept text, so the reward (text) and the loss (ids) agree."""
    ids = encode(tokenizer, "I check. <search> Maria Golovin </search>. then more")
    assert tokenizer.decode(ids[: cut_at_tag(tokenizer, ids, "</search>")]).endswith("</search>.")  # merged
    engine = ScriptedEngine(
        tokenizer,
        "I check. <search> Maria Golovin </search>. then more",
        "It is Menotti.</think>\n<answer>Gian Carlo Menotti</answer>",
    )
    ep = run(start_episode("P", tokenizer), engine, searcher, fmt=SEARCH_R1)
    model = ep.segments[0]
    assert model["text"] == "I check. <search> Maria Golovin </search>."
    assert tokenizer.decode(model["token_ids"]) == model["text"]
    assert ep.segments[1]["kind"] == "observation" and ep.segments[1]["query"] == "Maria Golovin"
    rollout = ep.rollout()
    assert tokenizer.decode(rollout["completion_ids"]) == ep.completion  # the loss's ids are the reward's text
    assert SEARCH_R1.parse(ep.completion).answer == "Gian Carlo Menotti"


def test_text_only_engine_is_encoded(searcher, tokenizer):
    """A server that returns text (a hosted API): the loop cuts the text and encodes what it keeps."""
    engine = ScriptedEngine(tokenizer, "x <begin_search> Menotti </end_search>", "y</think>\\boxed{z}", ids_out=False)
    ep = run(start_episode("P", tokenizer), engine, searcher)
    assert all(tokenizer.decode(s["token_ids"]) == s["text"] for s in ep.segments)
    assert ep.finish_reason == "answer"


def test_empty_generation_writes_no_segment(searcher, tokenizer):
    """An engine that ends at once after a search result (EOS first) must not leave a zero-token segment."""
    engine = ScriptedEngine(tokenizer, "<begin_search> Maria Golovin </end_search>", "")
    ep = run(start_episode("P", tokenizer), engine, searcher)
    assert [s["kind"] for s in ep.segments] == ["model", "observation"] and ep.finish_reason == "eos"
    assert all(s["text"] for s in ep.segments)


def test_budget_message_then_stop(searcher, tokenizer):
    call = "<begin_search> Menotti </end_search>"
    ep = run(
        start_episode("P", tokenizer), ScriptedEngine(tokenizer, call, call, call), searcher, Budget(max_actions=1)
    )
    assert ep.n_actions == 1 and ep.budget_notices == 1 and ep.finish_reason == "max_actions"
    assert [s["kind"] for s in ep.segments] == ["model", "observation", "model", "observation", "model"]
    assert ep.segments[3]["text"] == AUTOCOA.budget_observation()


def test_forbidden(searcher, tokenizer):
    ep = run(
        start_episode("P", tokenizer, tools="forbid"),
        ScriptedEngine(tokenizer, "x <begin_search> q </end_search>"),
        searcher,
    )
    assert ep.finish_reason == "forbidden_search" and ep.n_actions == 0


def test_simulated_environment_opens_the_observation_and_the_policy_writes_it(tokenizer):
    """The simulated environment stops at the search call like the real one, but runs no search: it writes
    only the observation's opening tag (a prefill: env_mask 0) and the policy writes the rest."""
    engine = ScriptedEngine(
        tokenizer,
        "<think>Who? <begin_search> Maria Golovin </end_search> CUT",
        'result 1: "Maria Golovin"\nAn opera by Menotti. </search_result>\n\nSo Menotti.</think>\\boxed{Menotti}',
    )
    ep = run(start_episode("P", tokenizer, tools="simulated"), engine, searcher=None)
    assert [(s["kind"], s["text"]) for s in ep.segments[:2]] == [
        ("model", "<think>Who? <begin_search> Maria Golovin </end_search>"),
        ("prefill", AUTOCOA.observation_opening),
    ]
    assert ep.segments[1]["query"] == "Maria Golovin" and ep.segments[2]["kind"] == "model"
    assert ep.n_actions == 1 and ep.finish_reason == "answer"
    assert all(r.stop == AUTOCOA.stop_strings for r in engine.requests)
    # the written observation parses as one and is the policy's own (in the loss); the opening is not
    assert written_observations(ep, AUTOCOA) == 1
    assert AUTOCOA.documents(ep.completion[ep.completion.index("<search_result>") :]) == [
        ("Maria Golovin", "An opera by Menotti.")
    ]
    rollout = ep.rollout()
    opening = encode(tokenizer, AUTOCOA.observation_opening)
    start = len(ep.segments[0]["token_ids"])
    assert rollout["env_mask"][start : start + len(opening)] == [0] * len(opening)
    assert rollout["completion_ids"][start : start + len(opening)] == opening
    assert rollout["env_mask"].count(0) == len(opening)


def test_simulated_budget_is_the_real_one(tokenizer):
    """Past max_actions the simulated environment answers with the budget message, as the real one does."""
    call = "<begin_search> Menotti </end_search>"
    engine = ScriptedEngine(tokenizer, call, "made up </search_result> " + call, call)
    ep = run(start_episode("P", tokenizer, tools="simulated"), engine, None, Budget(max_actions=1))
    assert [s["kind"] for s in ep.segments] == ["model", "prefill", "model", "observation", "model"]
    assert ep.segments[3]["text"] == AUTOCOA.budget_observation()
    assert ep.n_actions == 1 and ep.finish_reason == "max_actions"
    assert written_observations(ep, AUTOCOA) == 1


def test_branch_prefix_is_kept_apart(searcher, tokenizer):
    prefix = [{"kind": "model", "text": "<think>I think", "query": None, "doc_ids": [], "token_ids": []}]
    ep = run(
        start_episode("P", tokenizer, prefill="<begin_search> ", prefix=prefix),
        ScriptedEngine(tokenizer, "Menotti </end_search>", "ok</think>\\boxed{x}"),
        searcher,
    )
    assert ep.segments[0]["text"] == prefix[0]["text"]
    assert ep.segments[0]["token_ids"] == encode(tokenizer, "<think>I think")  # ids filled in from the text
    # a forced call: its open tag is the toolkit's prefill, the query and close tag the model's
    assert [(s["kind"], s["text"]) for s in ep.segments[1:3]] == [
        ("prefill", "<begin_search> "),
        ("model", "Menotti </end_search>"),
    ]
    assert ep.segments[3]["query"] == "Menotti"
    assert ep.n_actions == 1 and ep.finish_reason == "answer"


def test_token_budget_and_eos(tokenizer):
    ep = start_episode("P", tokenizer)
    assert (
        record_generation(
            ep,
            Generation("rambling", "length", token_ids=encode(tokenizer, "rambling"), n_tokens=10),
            AUTOCOA,
            Budget(max_tokens=10),
        )
        is None
    )
    assert ep.finish_reason == "max_tokens"
    ep = start_episode("P", tokenizer)
    record_generation(ep, Generation("no answer at all", "stop", eos=True), AUTOCOA, Budget())
    assert ep.finish_reason == "eos" and ep.eos
    assert ep.rollout()["completion_ids"][-1] == tokenizer.eos_token_id  # the turn's end is trained in RL


def test_drive_many_at_once(searcher, tokenizer):
    """``drive`` runs episodes concurrently from sync code; the env mask is exact per token."""
    outs = {"P": ["a <begin_search> Maria Golovin </end_search>", "b</think>\\boxed{x}"], "Q": ["c</think>\\boxed{y}"]}

    class ByPrompt(ScriptedEngine):
        async def generate(self, request):
            self.outputs = [outs[request.episode.prompt].pop(0)]
            return await super().generate(request)

    eps = drive(
        [start_episode("P", tokenizer), start_episode("Q", tokenizer)], ByPrompt(tokenizer), searcher, AUTOCOA, Budget()
    )
    first = eps[0]
    assert first.n_actions == 1 and eps[1].n_actions == 0
    r = first.rollout()
    assert (
        tokenizer.decode([t for t, m in zip(r["completion_ids"], r["env_mask"]) if m == 0]) == first.segments[1]["text"]
    )
    assert tokenizer.decode([t for t, m in zip(r["completion_ids"], r["env_mask"]) if m == 1]) == (
        first.segments[0]["text"] + first.segments[2]["text"]
    )
