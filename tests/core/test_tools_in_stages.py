"""The enabled tools reach every stage (issue 39 §5): the one instruction lists the tools beyond search in the
preset's generic call form, every config's prompt follows ``search.tools``, synthesis and evaluation run the
calls through the toolbox (real index, real sandbox) and record them per tool, and RL can penalise calls that
came back with an error. With ``search.tools: [search]`` (the default) nothing changes: same prompt, no
toolbox in the loop.

The policy is ``ScriptedToolCaller`` (tests/core/test_tool_loop.py), a stand-in engine replaying scripted
completions as the real tokenizer's ids; everything it calls is real."""

from __future__ import annotations

import asyncio
import json

import pytest

from coa.agent import Budget, drive, start_episode
from coa.environment import SearchEnvConfig
from coa.formats import AUTOCOA, SEARCH_R1
from coa.prompts import PromptConfig, prompt_hash, prompt_id, prompt_template, user_message
from coa.tools import Call, tool_class
from coa.trajectory import failed_calls, tool_counts
from synth.jobs import question_jobs
from synth.synthesize import run_jobs
from tests.core.test_tool_loop import ScriptedToolCaller, answer
from train.rewards import failed_calls_term, make_rewards

PRESETS = [AUTOCOA, SEARCH_R1]
QUESTION = {"id": "q1", "question": "Who wrote Maria Golovin?", "golden_answers": ["Gian Carlo Menotti"]}


@pytest.mark.parametrize("fmt", PRESETS, ids=lambda f: f.name)
def test_the_instruction_lists_the_tools_beyond_search(fmt):
    search_only = PromptConfig(format=fmt.name)
    assert user_message("Who?", search_only) == prompt_template(search_only).format(question="Who?")  # unchanged
    tools = PromptConfig(format=fmt.name, tools=["search", "open", "python"])
    text = user_message("Who?", tools)
    for name in ("open", "python"):
        assert f"- {name}: {tool_class(name).description}" in text
    example = fmt.tool_call("open", {"doc": "..."})
    assert example in text and fmt.response_open.strip() in text
    assert [t for t, _ in fmt.parse(f"{fmt.think_open}{example}").calls] == ["open"]  # the example parses
    assert text.index("Besides searching") < text.rindex("Who?")  # before the question
    assert (prompt_id(tools), prompt_id(search_only)) == (f"{fmt.name}/coa+open+python", f"{fmt.name}/coa")
    assert prompt_hash(tools) != prompt_hash(search_only)
    closed_book = PromptConfig(format=fmt.name, mode="cot", tools=["search", "python"])
    assert "Besides searching" not in user_message("Who?", closed_book)  # cot: no tool at all


def test_every_stage_config_passes_search_tools_to_its_prompt(index_dir):
    from evaluate.fidelity import FidelityConfig
    from evaluate.run import EvalConfig, prompt_config
    from synth.config import SynthConfig
    from train.config import TrainConfig

    search = SearchEnvConfig(index=str(index_dir), tools=["search", "python"])
    for cls in (SynthConfig, TrainConfig, FidelityConfig):
        assert cls(search=search).prompt.tools == ["search", "python"], cls
        assert cls().prompt.tools == ["search"], cls
    assert prompt_config(EvalConfig(name="x", search=search)).tools == ["search", "python"]
    assert SearchEnvConfig(index=str(index_dir)).loop_tools(SEARCH_R1) is None  # search only: the loop's own path


def test_the_environment_section_sets_each_tools_own_settings(index_dir, searcher, tokenizer):
    """``search.open.*`` and ``search.python.*`` reach the tools the loop runs (one section for the environment)."""
    from coa.config import build

    env = build(
        SearchEnvConfig,
        {
            "index": str(index_dir),
            "tools": ["search", "open", "python"],
            "open": {"window_tokens": 8},
            "python": {"observation_chars": 40},
        },
        "search",
    )
    box = env.loop_tools(SEARCH_R1, searcher, tokenizer)
    try:
        page, printed = box.run([Call("open", {"doc": "Maria Golovin"}), Call("python", {"code": "print('x' * 500)"})])
    finally:
        box.close()
    assert "(page 1 of " in page.text and page.provenance["pages"] > 1  # 8-token pages
    assert "460 characters cut" in printed.text and len(printed.text) <= 60  # 500 printed, cut to 40 (+ the note)


def test_synthesis_runs_and_records_every_enabled_tool(index_dir, searcher, tokenizer):
    fmt = SEARCH_R1
    env = SearchEnvConfig(index=str(index_dir), tools=["search", "python"])
    box = env.loop_tools(fmt, searcher, tokenizer)
    prompt = PromptConfig(format=fmt.name, tools=env.tools)
    (job,) = question_jobs([QUESTION], "coa", 1, prompt, tokenizer)
    assert "python" in job.prompt
    engine = ScriptedToolCaller(
        tokenizer,
        f"{fmt.think_open}{fmt.search_call('Maria Golovin')}",
        f"When? {fmt.tool_call('python', {'code': 'print(1911 - 1858)'})}",
        f"And? {fmt.tool_call('python', {'code': '1/0'})}",
        answer(fmt),
    )
    rows = []
    try:
        stats = asyncio.run(
            run_jobs(
                [job], engine, searcher, fmt, env.budget, {"seed": 0}, env.name, rows.append, 1, tokenizer, tools=box
            )
        )
    finally:
        box.close()
    (row,) = rows
    assert not stats.stopped and row.finish_reason == "answer" and row.n_actions == 3
    assert tool_counts(row) == {"search": 1, "python": 2} and json.loads(row.tool_calls)["python"] == 2
    ran = [s for s in row.segments if s.get("tool") == "python"]
    assert ran[0]["text"] == fmt.tool_result("53") and ran[0]["error"] == ""
    assert ran[1]["error"] == "exception" and "ZeroDivisionError" in ran[1]["text"]
    assert failed_calls(row.segments) == 1


def test_rl_can_penalise_calls_that_came_back_with_an_error(index_dir, searcher, tokenizer):
    fmt = AUTOCOA
    box = SearchEnvConfig(index=str(index_dir), tools=["search", "python"]).loop_tools(fmt, searcher, tokenizer)
    engine = ScriptedToolCaller(
        tokenizer,
        f"{fmt.think_open}{fmt.call_open} {{not json}} {fmt.call_close}",
        f"Again. {fmt.tool_call('calculator', {'x': 1})}",
        answer(fmt),
    )
    try:
        (ep,) = drive([start_episode("PROMPT ", tokenizer)], engine, None, fmt, Budget(max_actions=4), tools=box)
    finally:
        box.close()
    assert [s["error"] for s in ep.segments if s["kind"] == "observation"] == ["bad_json", "unknown_tool"]
    assert failed_calls(ep.segments) == 2
    assert failed_calls_term(["", ""], failed_calls=[failed_calls(ep.segments), 0], penalty=0.25) == [-0.5, 0.0]
    names = [f.func.__name__ for f in make_rewards("em", 1.0, fmt.name, failed_call_penalty=0.25)]
    assert names == ["correctness", "format_term", "failed_calls_term"]
    assert [f.func.__name__ for f in make_rewards("em", 1.0, fmt.name)] == ["correctness", "format_term"]  # off


def test_the_reward_probe_runs_the_tools_and_scores_failed_calls_as_training_does(
    index_dir, searcher, tokenizer, monkeypatch
):
    """``evaluate.reward_probe``'s rollouts get the stage's tools, and its reward is the stage's own: with
    ``failed_call_penalty`` on, a call that raised costs the same as in training."""
    from dataclasses import replace

    import train.pool as pool
    from train.config import TrainConfig

    fmt = AUTOCOA
    # the stage's prefill opens the think block
    engine = ScriptedToolCaller(tokenizer, fmt.tool_call("python", {"code": "1/0"}), answer(fmt))
    monkeypatch.setattr(pool, "load_policy", lambda *a, **k: (engine, tokenizer))
    train = TrainConfig(format=fmt.name, search=SearchEnvConfig(index=str(index_dir), tools=["search", "python"]))
    train = replace(train, rl2=replace(train.rl2, failed_call_penalty=0.25, format_penalty=1.0))
    (row,) = pool.rollouts("scripted", [QUESTION], train, "rl2", 1, "hf", searcher)
    assert "python" in engine.requests[0].tools  # the loop ran with the toolbox
    assert row["failed_calls"] == 1 and row["correctness"] == 1.0
    assert row["reward"] == 1.0 - 0.25  # right, well-formed, one failed call
