"""A chat teacher with native tool calls against the real embedded vLLM CPU server (the session teacher,
served with the shipped ChatML + Hermes tool template and ``--tool-call-parser hermes``), end to end
through ``python -m synth.run``. The 135M model answers from memory when it may, so the first turn is
forced to call the tool (``teacher.tool_choice=first``): the test checks the protocol and the conversion,
not answer quality."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coa.formats import result_text
from coa.formats import SEARCH_R1
from coa.trajectory import FINISH_REASONS, read_trajectories

pytestmark = [pytest.mark.model, pytest.mark.server, pytest.mark.slow]


def test_native_tool_calls_on_vllm_drive_the_loop_end_to_end(teacher_url, index_dir, searcher, tmp_path):
    out = tmp_path / "chat"
    cmd = [
        sys.executable,
        "-m",
        "synth.run",
        "mode=coa",
        "format=search_r1",
        "limit=3",
        f"out={out}",
        f"search.index={index_dir}",
        "search.max_tokens=160",
        "search.max_actions=2",
        f"teacher.base_url={teacher_url}",
        "teacher.api=chat",
        "teacher.tools=native",
        "teacher.tool_choice=first",
        "teacher.retries=1",
        "concurrency=3",
        "progress=false",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = read_trajectories(out)
    assert len(rows) == 3
    searched = [t for t in rows if t.n_actions >= 1]
    assert searched, [t.finish_reason for t in rows]
    for t in rows:
        assert t.finish_reason in FINISH_REASONS, t.finish_reason
        transcript = json.loads(t.transcript)
        turns = [m for m in transcript["messages"] if m["role"] == "assistant"] + [transcript["reply"]]
        calls = [c for m in turns for c in m.get("tool_calls") or []]
        # the forced first turn is always a call, with vLLM's own id
        assert calls and all(c["id"].startswith("chatcmpl-tool-") for c in calls)
        if t.n_actions == 0:  # the strict schema still allows an empty query: a named finish reason, not a crash
            assert t.finish_reason == "bad_tool_call"
            continue
        results = [m for m in transcript["messages"] if m["role"] == "tool"]
        assert [r["tool_call_id"] for r in results] == [c["id"] for c in calls][: len(results)]  # each id answered
        first_query = " ".join(json.loads(calls[0]["function"]["arguments"])["query"].split())
        assert SEARCH_R1.parse(t.completion).queries[0] == first_query  # the call became the format's search call
        obs = next(s for s in t.segments if s["kind"] == "observation")
        docs = searcher.search([first_query], 3)[0]
        assert obs["doc_ids"] == [d.id for d in docs] and obs["text"] == SEARCH_R1.observation(docs)
        assert results[0]["content"] == result_text(obs["text"], SEARCH_R1)  # the row's observation, unwrapped
