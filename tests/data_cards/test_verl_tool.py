"""The verl tool config and its tool class, driven through verl's ``BaseTool`` contract (create, execute,
calc_reward, release; verl itself is not installed here) against the real BM25 index: the observation a verl
rollout gets is the one this toolkit's agent loop gives, and calls are budgeted per trajectory."""

from __future__ import annotations

import asyncio
import importlib

import yaml

from coa.config import build
from coa.environment import SearchEnvConfig
from coa.formats import get_format
from coa.tools import tool_class
from data_cards.verl_tool import tool_config


def load(entry: dict):
    """What verl does with an entry: import class_name, build it from config and tool_schema."""
    module, _, name = entry["class_name"].rpartition(".")
    return getattr(importlib.import_module(module), name)(entry["config"], entry["tool_schema"])


def test_each_enabled_tool_runs_as_in_the_agent_loop(index_dir, tokenizer):
    env = build(SearchEnvConfig, {"index": str(index_dir), "tools": ["search", "open"], "max_actions": 2}, "test")
    config = yaml.safe_load(yaml.safe_dump(tool_config(env, "search_r1"), sort_keys=False))  # as the file holds it
    assert [e["config"]["tool"] for e in config["tools"]] == ["search", "open"]
    assert [e["tool_schema"] for e in config["tools"]] == [tool_class("search").schema(), tool_class("open").schema()]
    assert "open" in config["tools"][1]["config"] and "open" not in config["tools"][0]["config"]
    search, opener = (load(e) for e in config["tools"])
    box = env.toolbox(get_format("search_r1"), tokenizer=tokenizer)

    async def trajectory():
        sid = await search.create()
        response, reward, metrics = await search.execute(sid, {"query": "Maria Golovin opera composer"})
        assert response["text"] == box.call("search", {"query": "Maria Golovin opera composer"}).text
        assert reward == 0.0 and metrics["error"] == "" and metrics["doc_ids"]
        oid = await opener.create(sid)
        page, _, _ = await opener.execute(oid, '{"doc": "Maria Golovin"}')  # verl may pass the JSON text
        assert page["text"].startswith("Maria Golovin (page 1 of") and "Menotti" in page["text"]
        await search.execute(sid, {"query": "second"})
        refused, _, metrics = await search.execute(sid, {"query": "third"})  # past max_actions for this trajectory
        assert metrics["error"] == "budget" and refused["text"]
        other = await search.create()  # another trajectory has its own budget
        assert (await search.execute(other, {"query": "x"}))[2]["error"] == ""
        bad, _, metrics = await search.execute(other, {"topk": 3})
        assert metrics["error"] == "bad_arguments" and "query" in bad["text"]
        assert await search.calc_reward(sid) == 0.0
        await search.release(sid)
        assert sid not in search.used

    asyncio.run(trajectory())
