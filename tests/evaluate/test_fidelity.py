"""World-model fidelity: the metrics on hand-built calls with known answers, and the probe end to end
on the real index (a scripted engine that copies the real observation; the tiny random model, which
never searches: n = 0)."""

from __future__ import annotations

import json

import pytest

from coa.agent import Generation
from coa.config import build
from coa.formats import SEARCH_R1
from coa.search.types import Doc
from evaluate import fidelity as probe_module
from coa.model import load_policy
from coa.questions import load_questions
from evaluate.fidelity import FidelityConfig, observation_body, probe, written_calls
from evaluate.fidelity_metrics import Call, containment, corpus_store, fidelity, hallucinated, tool_fidelity

REAL = [
    ("Maria Golovin", "Maria Golovin is an English language opera by Gian Carlo Menotti."),
    ("Gian Carlo Menotti", "Gian Carlo Menotti was an Italian-American composer and librettist."),
]
STORE = corpus_store([f'"{t}"\n{x}' for t, x in REAL] + ['"Paris"\nParis is the capital of France.'])


def test_a_written_observation_identical_to_the_real_one_scores_f1_1_and_no_hallucination():
    got = fidelity([Call("who wrote Maria Golovin", REAL, REAL, ["Gian Carlo Menotti"])], STORE)
    assert got["observation_f1"] == {"mean": 1.0, "n": 1}
    assert got["hallucination"] == {"rate": 0.0, "n": 2}
    assert got["titles_in_corpus"] == got["titles_in_topk"] == {"rate": 1.0, "n": 2}
    assert got["gold_in_written"] == got["gold_in_real"] == {"rate": 1.0, "n": 1}


def test_an_invented_title_and_an_unsupported_text_are_hallucinated():
    written = [
        ("The Golden Opera of Milan", "Maria Golovin is an English language opera by Menotti."),  # no such title
        ("Paris", "Paris is the capital of France."),  # real, supported, not in top-k
        ("Maria Golovin", "A 1950s rock band from Liverpool with four members."),
    ]  # real title, text unsupported
    got = fidelity([Call("q", written, REAL, ["Gian Carlo Menotti"])], STORE)
    assert got["hallucination"] == {"rate": 0.6667, "n": 3}
    assert got["titles_in_corpus"] == {"rate": 0.6667, "n": 3}
    assert got["titles_in_topk"] == {"rate": 0.3333, "n": 3}
    assert got["gold_in_written"] == {"rate": 0.0, "n": 1} and got["gold_in_real"] == {"rate": 1.0, "n": 1}
    assert 0 < got["observation_f1"]["mean"] < 1
    assert hallucinated("maria  GOLOVIN", "an English language opera", STORE) is False  # title match ignores case/space
    assert containment("", "anything") == 1.0 and containment("opera opera", "one opera") == 0.5


def test_a_free_text_observation_is_compared_as_text():
    """A model that writes prose instead of documents: no document to check titles of, but its text still
    holds (or misses) the gold answer and has a token F1 with the real observation."""
    prose = "Maria Golovin is an opera; its composer was Gian Carlo Menotti."
    got = fidelity(
        [
            Call("who wrote Maria Golovin", [], REAL, ["Gian Carlo Menotti"], prose),
            Call("who wrote Maria Golovin", REAL, REAL, ["Gian Carlo Menotti"]),
        ],
        STORE,
    )
    assert got["in_document_form"] == {"rate": 0.5, "n": 2} and got["written_documents"] == 2
    assert got["gold_in_written"] == {"rate": 1.0, "n": 2} and got["titles_in_corpus"]["n"] == 2
    assert 0.5 < got["observation_f1"]["mean"] < 1.0
    obs = SEARCH_R1.wrap_observation(prose)
    assert observation_body(obs, SEARCH_R1) == prose and SEARCH_R1.documents(obs) == []


def test_no_search_call_gives_n_0_and_no_division():
    got = fidelity([], STORE)
    assert got["calls"] == 0 and got["hallucination"] == {"rate": None, "n": 0}
    assert got["observation_f1"] == {"mean": None, "n": 0} and "no search call" in got["note"]
    # searches without an observation of its own after any: nothing to compare either, and the note says why
    searched = fidelity([], STORE, search_calls=97)
    assert searched["calls"] == 0 and searched["search_calls"] == 97 and "wrote no observation" in searched["note"]


def test_written_calls_pair_each_search_with_the_observation_the_model_wrote():
    obs = SEARCH_R1.observation([Doc("x", '"Paris"\nParis is the capital.')])
    text = f"<think>\n<search>capital of France</search>{obs}<search>unanswered</search></think><answer>Paris</answer>"
    assert written_calls(text, SEARCH_R1) == [("search", "capital of France", obs.strip())]
    call = SEARCH_R1.tool_call("open", {"doc": "Paris"})
    page = SEARCH_R1.tool_result("Paris (page 1 of 1)\nParis is the capital.")
    assert written_calls(f"<think>\n{call}{page}</think><answer>Paris</answer>", SEARCH_R1) == [
        ("open", '{"name": "open", "arguments": {"doc": "Paris"}}', page.strip())
    ]


def test_a_tool_result_written_as_the_real_one_is_exact_and_a_refused_call_is_not_compared():
    got = tool_fidelity(
        ["Paris is the capital.", "Lyon is the capital.", "anything"],
        ["Paris is the capital.", "Paris is the capital.", None],
        [["Paris"], ["Paris"], ["Paris"]],
    )
    assert (got["calls"], got["refused"]) == (3, 1)
    assert got["exact"] == {"rate": 0.5, "n": 2} and 0.5 < got["result_f1"]["mean"] < 1.0
    assert got["gold_in_written"] == {"rate": 0.5, "n": 2} and got["gold_in_real"] == {"rate": 1.0, "n": 2}


class CopyingEngine:
    """Searches for the question's own text, then, once the environment has opened the observation, writes
    the rest of the observation the real searcher returns: a perfect world model, so the probe must measure
    F1 1 and no hallucination."""

    name = "copy"

    def __init__(self, tokenizer, searcher, topk):
        self.tok, self.searcher, self.topk = tokenizer, searcher, topk
        self.budgets = []

    async def generate(self, request):
        self.budgets.append(request.max_tokens)
        query, segments = request.episode.question["question"], request.episode.segments
        if segments[-1]["kind"] == "prefill" and segments[-1]["query"] == query:  # the opened observation
            obs = SEARCH_R1.observation(self.searcher.search([query], self.topk)[0])
            text = obs[len(SEARCH_R1.observation_opening) :] + "</think><answer>x</answer>"
        else:
            text = f"<search>{query}</search>"
        return Generation(text, "stop", token_ids=self.tok.encode(text, add_special_tokens=False), eos=True)

    async def close(self):
        pass


def _cfg(tmp_path, index_dir, **kw):
    return build(
        FidelityConfig,
        {
            "model": "base",
            "questions": "data/raw/hotpotqa/hotpotqa_dev_union_flashrag.jsonl.gz",
            "limit": 2,
            "index": str(index_dir),
            "format": "search_r1",
            "out": str(tmp_path / "fid"),
            **kw,
        },
        "test",
    )


def test_probe_of_a_perfect_world_model(tmp_path, index_dir, tokenizer, searcher, monkeypatch):
    engine = CopyingEngine(tokenizer, searcher, 3)
    monkeypatch.setattr(probe_module, "load_policy", lambda *a: (engine, tokenizer))
    cfg = _cfg(tmp_path, index_dir)
    got = probe(cfg)
    # RL-1's budget: the written observations get their room beside the model's own tokens
    budget = cfg.search.max_tokens + cfg.search.max_actions * cfg.observation_tokens
    assert len(engine.budgets) == 4 and engine.budgets[::2] == [budget] * 2
    assert got["calls"] == 2 and got["questions_searched"] == 2 and got["search_calls"] == 2
    assert got["observation_f1"]["mean"] == 1.0 and got["hallucination"]["rate"] == 0.0
    assert got["titles_in_topk"] == {"rate": 1.0, "n": 6}
    assert json.loads((tmp_path / "fid" / "fidelity.json").read_text())["calls"] == 2
    assert len((tmp_path / "fid" / "calls.jsonl").read_text().splitlines()) == 2


class OpeningEngine:
    """Opens the question's top search result by id; once the environment has opened the result, writes the
    real page for the first question and a wrong one for the second: open's fidelity must be exact on one."""

    name = "open"

    def __init__(self, tokenizer, searcher, box, first: str):
        self.tok, self.searcher, self.box, self.first = tokenizer, searcher, box, first

    async def generate(self, request):
        question = request.episode.question
        doc = self.searcher.search([question["question"]], 1)[0][0].id
        last = request.episode.segments[-1]
        if last["kind"] == "prefill" and last["text"] == SEARCH_R1.response_opening:
            real = question["id"] == self.first
            body = self.box.call("open", {"doc": doc}).text if real else "A page about something else."
            text = SEARCH_R1.tool_result(body)[len(SEARCH_R1.response_opening) :] + "</think><answer>x</answer>"
        else:
            text = SEARCH_R1.tool_call("open", {"doc": doc})
        return Generation(text, "stop", token_ids=self.tok.encode(text, add_special_tokens=False), eos=True)

    async def close(self):
        pass


def test_probe_compares_a_written_page_with_the_real_one(tmp_path, index_dir, tokenizer, searcher, monkeypatch):
    cfg = _cfg(tmp_path, index_dir, search={"tools": ["search", "open"]})
    box = cfg.search.toolbox(SEARCH_R1, searcher=searcher, tokenizer=tokenizer)
    engine = OpeningEngine(tokenizer, searcher, box, first=load_questions(cfg.questions, limit=1)[0]["id"])
    monkeypatch.setattr(probe_module, "load_policy", lambda *a: (engine, tokenizer))
    got = probe(cfg)
    assert got["calls"] == 0 and got["search_calls"] == 0  # no search call: the search rates have n = 0
    opened = got["by_tool"]["open"]
    assert (opened["calls"], opened["refused"]) == (2, 0)
    assert opened["exact"] == {"rate": 0.5, "n": 2} and opened["result_f1"]["n"] == 2


@pytest.mark.slow
def test_probe_of_a_model_that_never_searches_writes_n_0(tmp_path, index_dir, tokenizer):
    from tests.train.conftest import tiny_model

    model = tmp_path / "tiny"
    tiny_model(tokenizer).save_pretrained(model)
    tokenizer.save_pretrained(model)
    got = probe(
        _cfg(tmp_path, index_dir, model=str(model), engine="hf", observation_tokens=0, search={"max_tokens": 8})
    )
    assert got["calls"] == 0 and got["hallucination"] == {"rate": None, "n": 0} and got["n_questions"] == 2
    assert got["search_calls"] == 0 and "made no search call" in got["note"]


def test_a_model_folder_without_weights_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no weights \(\*.safetensors\) in"):
        load_policy(str(tmp_path))
