"""The ``chat`` engine against ``FakeReasoningAPI`` (a stand-in for a hosted reasoning API: none can be
reached here), with the real BM25 search over the embedded corpus: native tool calls and tags, both
reasoning field names, streamed and whole replies, exact replay (tool-call ids answered, reasoning passed
back), branches (forced / forbidden search), bad output ending only its trajectory, and fatal
configuration errors before any work."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from coa.agent import Budget, run_episode, start_episode
from coa.engines import RequestRejected, make_engine
from coa.engines.chat import extract_answer
from coa.formats import result_text
from coa.formats import AUTOCOA, SEARCH_R1
from coa.search.batching import SearchBatcher
from synth.run import main
from tests.fixtures.chat_api import FakeReasoningAPI

QUESTION = {"id": "q1", "question": "Which county is the town of Alnwick in?", "golden_answers": ["Northumberland"]}


def drive(engine, searcher, fmt, *episodes, budget=Budget(max_actions=4, max_tokens=4000)):
    async def go():
        await engine.check()
        async with SearchBatcher(searcher) as batcher:
            await asyncio.gather(*(run_episode(ep, engine, batcher.search, fmt, budget, seed=1) for ep in episodes))
        await engine.close()

    asyncio.run(go())
    return episodes


def chat(api: FakeReasoningAPI, tokenizer, **kw):
    return make_engine("chat", base_url=api.url, model=api.model, tokenizer=tokenizer, retries=1, **kw)


def issued_queries(api: FakeReasoningAPI) -> list[str]:
    """The queries of the tool calls the stand-in answered with, in order."""
    out = []
    for body in api.requests[1:]:
        for m in body["messages"]:
            for c in m.get("tool_calls") or []:
                out.append(json.loads(c["function"]["arguments"])["query"])
    return list(dict.fromkeys(out))


@pytest.mark.parametrize(
    "key, stream, fmt",
    [
        ("reasoning_content", False, AUTOCOA),
        ("reasoning", True, SEARCH_R1),
        (None, False, SEARCH_R1),
        ("reasoning_content", True, AUTOCOA),
    ],
)
def test_native_tool_calls_become_the_format_and_round_trip(key, stream, fmt, tokenizer, searcher):
    with FakeReasoningAPI(reasoning_key=key, stream_only=stream) as api:
        engine = chat(api, tokenizer, stream=stream)
        (ep,) = drive(engine, searcher, fmt, start_episode("PROMPT ", tokenizer, question=QUESTION))
    assert api.refused == []  # every tool-call id was answered and its reasoning passed back
    assert ep.finish_reason == "answer" and ep.n_actions == 2
    parsed = fmt.parse(fmt.render(ep.prompt, ep.segments)[len(ep.prompt) :])
    assert parsed.well_formed, parsed.errors
    assert list(parsed.queries) == issued_queries(api) and len(parsed.queries) == 2
    observations = [s for s in ep.segments if s["kind"] == "observation"]
    for seg, query in zip(observations, parsed.queries):  # the observations are exactly the real search's
        docs = searcher.search([query], 3)[0]
        assert seg["query"] == query and seg["doc_ids"] == [d.id for d in docs] and seg["text"] == fmt.observation(docs)
    first_title = searcher.search([parsed.queries[-1]], 3)[0][0].title
    assert parsed.answer == first_title
    if key:
        assert "I should look this up" in ep.completion  # the reasoning became the model's reasoning text
    transcript = json.loads(ep.engine_state["transcript"])
    tool_msgs = [m for m in transcript["messages"] if m["role"] == "tool"]
    # the teacher reads the results as plain text: no student-format markup it could quote back
    assert [m["content"] for m in tool_msgs] == [result_text(s["text"], fmt) for s in observations]
    assert transcript["reply"]["content"].endswith(f"Final answer: {first_title}")
    assert engine.stats()["chat_turns_without_reasoning"] == (3 if key is None else 0)


def test_reasoning_must_be_passed_back(tokenizer, searcher):
    """DeepSeek's thinking mode refuses a tool result whose assistant turn lost its reasoning: so does the
    stand-in, and the request is rejected (only its trajectory ends, with "error", in a run)."""
    with FakeReasoningAPI() as api:
        with pytest.raises(RequestRejected, match="reasoning_content .* must be passed back"):
            drive(
                chat(api, tokenizer, send_reasoning=False),
                searcher,
                SEARCH_R1,
                start_episode("P ", tokenizer, question=QUESTION),
            )
    assert len(api.requests) == 2 and len(api.refused) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_tags_mode_stops_at_the_search_close_tag(stream, tokenizer, searcher):
    with FakeReasoningAPI(reasoning_key=None, stream_only=stream) as api:
        (ep,) = drive(
            chat(api, tokenizer, tools="tags", stream=stream),
            searcher,
            SEARCH_R1,
            start_episode("P ", tokenizer, question=QUESTION),
        )
    assert all("tools" not in b and b["stop"] == ["</search>"] for b in api.requests)
    parsed = SEARCH_R1.parse(ep.completion)
    assert parsed.well_formed and parsed.n_actions == 2 and ep.finish_reason == "answer", ep.completion
    # the observation goes back as the next user message, the search call with its close tag restored
    last = api.requests[-1]["messages"]
    assert last[2]["content"].endswith("</search>") and last[3]["content"].startswith("<information>")


def test_tags_mode_forces_a_search_by_prefilling_the_open_tag(tokenizer, searcher):
    with FakeReasoningAPI(reasoning_key=None) as api:
        (parent,) = drive(
            chat(api, tokenizer, tools="tags"), searcher, SEARCH_R1, start_episode("P ", tokenizer, question=QUESTION)
        )
        force = start_episode(
            "P ", tokenizer, prefill="\n" + SEARCH_R1.search_open, prefix=parent.segments[:2], question=QUESTION
        )
        drive(chat(api, tokenizer, tools="tags"), searcher, SEARCH_R1, force)
    prefilled = [b["messages"][-1] for b in api.requests if b["messages"][-1].get("prefix")]
    assert prefilled == [{"role": "assistant", "content": "\n<search>", "prefix": True}]  # only the forced turn
    branch = SEARCH_R1.parse(force.completion)
    assert branch.well_formed and force.n_actions >= 1 and force.finish_reason == "answer", force.completion
    assert force.segments[2]["kind"] == "prefill" and force.segments[3]["text"].endswith("</search>")


def test_branches_replay_the_prefix_then_force_or_forbid_the_search(tokenizer, searcher):
    with FakeReasoningAPI() as api:
        (parent,) = drive(chat(api, tokenizer), searcher, SEARCH_R1, start_episode("P ", tokenizer, question=QUESTION))
        prefix = parent.segments[:2]  # the first search call and its observation
        gap = "\n"
        force = start_episode("P ", tokenizer, prefill=gap + SEARCH_R1.search_open, prefix=prefix, question=QUESTION)
        forbid = start_episode("P ", tokenizer, tools="forbid", prefix=prefix, question=QUESTION)
        drive(chat(api, tokenizer), searcher, SEARCH_R1, force, forbid)
    assert api.refused == []
    by_tools = {bool(b.get("tools")): b for b in api.requests[-3:]}
    forced = [b for b in api.requests if isinstance(b.get("tool_choice"), dict)]
    assert forced and forced[0]["tool_choice"]["function"]["name"] == "search"
    replay = forced[0]["messages"]  # the prefix, rebuilt as an assistant tool call and its tool result
    assert replay[2]["tool_calls"][0]["id"] == "call_0" and replay[3] == {
        "role": "tool",
        "tool_call_id": "call_0",
        "content": result_text(prefix[1]["text"], SEARCH_R1),
    }
    assert False in by_tools  # the forbidden branch was offered no tool
    assert forbid.finish_reason == "answer" and forbid.n_actions == 0  # (run_job adds the prefix's searches)
    branch = SEARCH_R1.parse(force.completion)
    assert (
        branch.well_formed and branch.n_actions >= 2 and force.segments[2]["kind"] == "prefill" and force.n_actions >= 1
    )


def test_answer_extraction_order():
    assert extract_answer("x <answer>A</answer> \\boxed{B}", SEARCH_R1) == ("A", 2)
    assert extract_answer("so \\boxed{\\text{B}}\nFinal answer: C", SEARCH_R1)[0] == "\\text{B}"
    assert extract_answer("It is C.\n\n**Final answer:** C", SEARCH_R1)[0] == "C"
    assert extract_answer("ANSWER=[D]", SEARCH_R1, r"ANSWER=\[(.*?)\]")[0] == "D"
    assert extract_answer("no answer here", SEARCH_R1) is None


def write_questions(path, questions):
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return path


def synth_args(out, url, index_dir, *extra):
    return [
        "mode=coa",
        "format=search_r1",
        f"search.index={index_dir}",
        f"out={out}",
        f"teacher.base_url={url}",
        "teacher.api=chat",
        "teacher.model=fake-reasoner",
        "teacher.retries=1",
        "progress=false",
        "search.max_tokens=4000",
        *extra,
    ]


def test_bad_tool_output_ends_only_its_trajectory_with_a_named_reason(tokenizer, index_dir, tmp_path, capsys):
    questions = write_questions(
        tmp_path / "q.jsonl",
        [
            {"id": f"q{i}", "question": f"Where is Alnwick Castle? {tag}", "golden_answers": ["x"]}
            for i, tag in enumerate(["", "[bad_args]", "[unknown_tool]", "[empty]"])
        ],
    )
    with FakeReasoningAPI() as api:
        assert main(synth_args(tmp_path / "out", api.url, index_dir, f"questions={questions}")) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["run"]["finish_reasons"] == {"answer": 1, "bad_tool_call": 1, "unknown_tool": 1, "empty_answer": 1}
    assert summary["run"]["endpoints"][api.url]["requests"] == len(api.requests)
    from coa.trajectory import read_table

    rows = {r["question_id"]: r for r in read_table(tmp_path / "out").to_pylist()}
    assert json.loads(rows["q0"]["transcript"])["messages"][0]["role"] == "system"
    assert "bad_tool_call" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", [AUTOCOA, SEARCH_R1], ids=lambda f: f.name)
def test_search_and_open_are_both_declared_called_and_replayed(fmt, tokenizer, index_dir, searcher):
    """``search.tools: [search, open]``: the teacher is offered both (open with its own schema), its open call
    becomes the preset's generic call, the loop's toolbox opens the real document, and later requests answer
    the call id with the page's plain text; a prefix rebuilt from text (a branch) replays the same call."""
    from coa.agent import drive as drive_loop
    from coa.environment import SearchEnvConfig
    from coa.tools.open_doc import OpenTool

    box = SearchEnvConfig(index=str(index_dir), tools=["search", "open"]).toolbox(fmt, searcher)
    question = dict(QUESTION, question=QUESTION["question"] + " [open]")
    with FakeReasoningAPI() as api:
        engine = chat(api, tokenizer)
        (ep,) = drive_loop(
            [start_episode("P ", tokenizer, question=question)], engine, None, fmt, Budget(4, 4000), tools=box
        )
    box.close()
    assert api.refused == [] and ep.finish_reason == "answer", (api.refused, ep.finish_reason)
    declared = {t["function"]["name"]: t["function"] for t in api.requests[0]["tools"]}
    assert list(declared) == ["search", "open"] and declared["open"]["parameters"] == OpenTool.parameters
    assert declared["search"].get("strict") and not declared["open"].get("strict")  # page is optional
    assert "`open`" in api.requests[0]["messages"][0]["content"]
    observations = [s for s in ep.segments if s["kind"] == "observation"]
    assert [s["tool"] for s in observations] == ["search", "open"] and not observations[1]["error"], observations
    title = searcher.search([observations[0]["query"]], 3)[0][0].title
    assert json.loads(observations[1]["args"]) == {"doc": title}
    assert fmt.tool_call("open", {"doc": title}) in ep.completion
    assert observations[1]["text"] == fmt.tool_result(result_text(observations[1]["text"], fmt))
    page = result_text(observations[1]["text"], fmt)
    assert page.startswith(f"{title} (page 1 of ")
    parsed = fmt.parse(ep.completion)
    assert parsed.well_formed and parsed.answer == title, parsed.errors
    last = api.requests[-1]["messages"]
    assert [m["content"] for m in last if m["role"] == "tool"] == [result_text(s["text"], fmt) for s in observations]
    rebuilt = engine.messages(dataclasses.replace(ep, engine_state={}), fmt, ("search", "open"))
    calls = [m["tool_calls"][0]["function"] for m in rebuilt if m.get("tool_calls")]
    assert calls == [
        {"name": "search", "arguments": json.dumps({"query": observations[0]["query"]})},
        {"name": "open", "arguments": observations[1]["args"]},
    ]


@pytest.mark.slow
def test_wrong_model_or_key_is_fatal_before_any_work(index_dir, tmp_path, monkeypatch, capsys):
    with FakeReasoningAPI(api_key="right-key") as api:
        monkeypatch.setenv("OPENAI_API_KEY", "a-wrong-key")
        assert main(synth_args(tmp_path / "a", api.url, index_dir, "limit=2")) == 2
        err = capsys.readouterr().err
        assert "refused the credentials (401)" in err and "a-wrong-key" not in err
        monkeypatch.setenv("OPENAI_API_KEY", "right-key")
        assert main(synth_args(tmp_path / "b", api.url, index_dir, "limit=2", "teacher.model=nope")) == 2
        assert "model 'nope' is not served" in capsys.readouterr().err
        assert not api.requests  # nothing was generated
        assert not list((tmp_path / "a").glob("*.parquet")) and not list((tmp_path / "b").glob("*.parquet"))


def test_rows_written_before_the_transcript_column_still_read(tmp_path):
    import pyarrow.parquet as pq

    from coa.trajectory import Trajectory, read_table, to_table
    from curate import io

    row = Trajectory(question_id="q", question="Q?", golden_answers=["a"], prompt="P", format="search_r1")
    old = to_table([row]).drop_columns(["transcript"])
    pq.write_table(old, tmp_path / "old.parquet")
    pq.write_table(
        to_table([Trajectory(**{**row.to_row(), "id": "", "sample": 1, "transcript": "[]"})]), tmp_path / "new.parquet"
    )
    assert read_table(tmp_path).column("transcript").to_pylist() == ["[]", None]  # new.parquet, old.parquet
    df = io.scan(tmp_path, ["id", "transcript"]).collect()
    assert df.height == 2 and set(df["transcript"].to_list()) == {None, "[]"}
