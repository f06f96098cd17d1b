"""The agent loop's own logic, driven by a scripted generate function (ScriptedGenerate: a fake
engine that replays fixed completions) and the real BM25 searcher."""
import asyncio

import pytest

from coa.agent import Budget, Generation, record_generation, run_batch, run_episode, start_episode
from coa.formats import AUTOCOA
from coa.search import load_searcher


class ScriptedGenerate:
    """Fake engine: returns the next scripted completion, cut at the first stop string like vLLM."""

    def __init__(self, *outputs):
        self.outputs = list(outputs)
        self.seen = []

    def one(self, text, max_tokens, stop):
        self.seen.append(text)
        out = self.outputs.pop(0)
        for s in stop:
            if s in out:
                return Generation(out[: out.index(s) + len(s)], "stop", 5)
        return Generation(out, "stop", 5)

    async def __call__(self, text, max_tokens, stop):
        return self.one(text, max_tokens, stop)


@pytest.fixture(scope="module")
def searcher(index_dir):
    return load_searcher(index_dir)


def run(ep, gen, searcher, budget=Budget()):
    async def search(queries, k):
        return searcher.search(queries, k)
    return asyncio.run(run_episode(ep, gen, search, AUTOCOA, budget))


def test_search_then_answer(searcher):
    gen = ScriptedGenerate("Need facts. <begin_search> Maria Golovin </end_search> IGNORED",
                           "Menotti.</think>\\boxed{Gian Carlo Menotti}")
    ep = run(start_episode("PROMPT", prefill="<think>"), gen, searcher)
    assert ep.finish_reason == "answer" and ep.n_actions == 1
    # the toolkit's prefill is its own segment (context, never trained), the model's text the next one
    assert [s["kind"] for s in ep.segments] == ["prefill", "model", "observation", "model"]
    assert ep.segments[0]["text"] == "<think>"
    assert ep.segments[1]["text"] == "Need facts. <begin_search> Maria Golovin </end_search>"
    expected = AUTOCOA.observation(searcher.search(["Maria Golovin"], 3)[0])
    assert ep.segments[2]["text"] == expected and ep.segments[2]["query"] == "Maria Golovin"
    assert gen.seen[1] == "PROMPT<think>" + ep.segments[1]["text"] + expected  # continuation of the rendered prefix


def test_empty_generation_writes_no_segment(searcher):
    """An engine that ends at once after a search result (EOS first) must not leave a zero-token segment."""
    gen = ScriptedGenerate("<begin_search> Maria Golovin </end_search>", "")
    ep = run(start_episode("P"), gen, searcher)
    assert [s["kind"] for s in ep.segments] == ["model", "observation"] and ep.finish_reason == "eos"
    assert all(s["text"] for s in ep.segments)


def test_budget_message_then_stop(searcher):
    call = "<begin_search> Menotti </end_search>"
    gen = ScriptedGenerate(call, call, call)
    ep = run(start_episode("P"), gen, searcher, Budget(max_actions=1))
    assert ep.n_actions == 1 and ep.budget_notices == 1 and ep.finish_reason == "max_actions"
    assert [s["kind"] for s in ep.segments] == ["model", "observation", "model", "observation", "model"]
    assert ep.segments[3]["text"] == AUTOCOA.budget_observation()


def test_forbidden_and_simulated(searcher):
    ep = run(start_episode("P", tools="forbid"), ScriptedGenerate("x <begin_search> q </end_search>"), searcher)
    assert ep.finish_reason == "forbidden_search" and ep.n_actions == 0
    own = "<begin_search> q </end_search><search_result> made up </search_result></think>\\boxed{a}"
    ep = run(start_episode("P", tools="simulated"), ScriptedGenerate(own), searcher)
    assert ep.finish_reason == "answer" and ep.segments == [{"kind": "model", "text": own, "query": None, "doc_ids": []}]


def test_branch_prefix_is_kept_apart(searcher):
    prefix = [{"kind": "model", "text": "<think>I think", "query": None, "doc_ids": []}]
    ep = run(start_episode("P", prefill="<begin_search> ", prefix=prefix),
             ScriptedGenerate("Menotti </end_search>", "ok</think>\\boxed{x}"), searcher)
    assert ep.segments[0] == prefix[0]
    # a forced call: its open tag is the toolkit's prefill, the query and close tag the model's
    assert [(s["kind"], s["text"]) for s in ep.segments[1:3]] == [("prefill", "<begin_search> "),
                                                                  ("model", "Menotti </end_search>")]
    assert ep.segments[3]["query"] == "Menotti"
    assert ep.n_actions == 1 and ep.finish_reason == "answer"


def test_token_budget_and_eos():
    ep = start_episode("P")
    assert record_generation(ep, Generation("rambling", "length", 10), AUTOCOA, Budget(max_tokens=10)) is None
    assert ep.finish_reason == "max_tokens"
    ep = start_episode("P")
    record_generation(ep, Generation("no answer at all", "stop", 3), AUTOCOA, Budget())
    assert ep.finish_reason == "eos"


def test_run_batch_token_level(searcher, tokenizer):
    outs = ["a <begin_search> Maria Golovin </end_search>", "b</think>\\boxed{x}", "c</think>\\boxed{y}"]

    def generate(texts, max_tokens, stop):
        gens = []
        for _ in texts:
            text = outs.pop(0)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            gens.append(Generation(text, "stop", len(ids), token_ids=ids))
        return gens

    eps = run_batch([start_episode("P"), start_episode("Q")], generate, searcher.search, AUTOCOA, Budget(),
                    tokenizer=tokenizer)
    first = eps[0]
    assert first.n_actions == 1 and eps[1].n_actions == 0
    obs_ids = [t for t, m in zip(first.completion_ids, first.env_mask) if m == 0]
    assert tokenizer.decode(obs_ids) == first.segments[1]["text"]
    assert tokenizer.decode([t for t, m in zip(first.completion_ids, first.env_mask) if m == 1]) == (
        first.segments[0]["text"] + first.segments[2]["text"])
