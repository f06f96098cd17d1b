"""Fast checks of synth's own logic: config, jobs, input errors, shards."""

from __future__ import annotations

import gzip
import json

import pytest

from coa.config import load_config
from coa.formats import get_format
from coa.trajectory import Trajectory, row_id, write_trajectories
from synth.config import SynthConfig
from synth.jobs import branch_jobs
from synth.run import main
from synth.shards import ShardWriter, done_ids


def decision(**over) -> dict:
    row = {
        "id": "d1",
        "question_id": "q1",
        "question": "Who?",
        "golden_answers": ["X"],
        "dataset": "hotpotqa",
        "mode": "decision",
        "parent_id": "p1",
        "decision_index": 1,
        "format": "autocoa",
        "prompt": "<|im_start|>user\nWho?<|im_end|>\n<|im_start|>assistant\n",
        "segments": [{"kind": "model", "text": "<think>\nI need ", "query": None, "doc_ids": []}],
    }
    return row | over


def test_config_rejects_bad_values_and_unknown_keys():
    with pytest.raises(ValueError, match="mode must be one of"):
        SynthConfig(mode="sft")
    with pytest.raises(ValueError, match=r"branch kind 'maybe': expected forbid, force \(search\) or force-TOOL"):
        SynthConfig(branches="forbid,maybe")
    with pytest.raises(ValueError, match="branches must list branch kinds, each once"):
        SynthConfig(branches="forbid,forbid")
    with pytest.raises(
        ValueError, match=r"'force-open' forces 'open', which is not an enabled tool \(search.tools: search\)"
    ):
        SynthConfig(branches="forbid,force-open")
    with pytest.raises(ValueError, match="unknown key 'temprature'; valid keys: mode, questions"):
        load_config(SynthConfig, None, ["temprature=0.5"])
    cfg = load_config(
        SynthConfig, None, ["mode=cot", "branches=force", "teacher.kind=llm", "teacher.retries=1", "format=search_r1"]
    )
    assert (cfg.prompt.mode, cfg.prompt.format, cfg.branches, cfg.teacher.retries) == ("cot", "search_r1", ["force"], 1)
    assert cfg.out_dir == "runs/synth/cot"


def test_branch_jobs_keys_prefill_and_tools():
    fmt = get_format("autocoa")
    jobs = branch_jobs([decision()], n=2, kinds=["forbid", "force"], fmt=fmt)
    assert [(j.branch_id, j.sample, j.tools, j.prefill) for j in jobs] == [
        ("p1:1:forbid", 0, "forbid", ""),
        ("p1:1:forbid", 1, "forbid", ""),
        ("p1:1:force", 0, "real", "<begin_search> "),
        ("p1:1:force", 1, "real", "<begin_search> "),
    ]
    assert jobs[0].id == row_id("q1", "branch", 0, "p1:1:forbid")
    assert len({j.id for j in jobs}) == 4


@pytest.mark.parametrize("name", ["autocoa", "search_r1"])
def test_a_forced_tool_is_prefilled_with_its_call_opening(name):
    fmt = get_format(name)
    (job,) = branch_jobs([decision(format=name)], n=1, kinds=["force-open"], fmt=fmt, teacher_kind="llm")
    assert (job.branch_id, job.tools) == ("p1:1:force-open", "real")
    # the prefill is the call as the policy would write it, cut before its arguments
    call = fmt.tool_call("open", {"doc": "Paris"})
    assert call.startswith(job.prefill) and call[len(job.prefill) :].startswith('{"doc"')
    assert fmt.forced_tool("I will read it. " + job.prefill) == "open"
    assert fmt.forced_tool("I will read it. " + fmt.call_opening("search")) == "search"
    assert fmt.forced_tool(call) is None and fmt.forced_tool("no call") is None


def test_the_reference_teacher_refuses_a_forced_call_it_cannot_write():
    with pytest.raises(
        ValueError, match="the reference teacher completes forced calls of search, open only, not force-python"
    ):
        branch_jobs([decision()], 1, ["forbid", "force-python"], get_format("autocoa"), teacher_kind="reference")


@pytest.mark.parametrize(
    "over, message",
    [
        ({"mode": "coa"}, "decision row 1: field 'mode' must be 'decision', got 'coa'"),
        ({"parent_id": ""}, "decision row 1: field 'parent_id' is empty"),
        (
            {"decision_index": 3},
            r"decision row 1: field 'decision_index' \(3\) must equal the number of prefix segments \(1\)",
        ),
        ({"format": "search_r1"}, "decision row 1: format 'search_r1' differs from format='autocoa'"),
    ],
)
def test_bad_decision_rows_are_named(over, message):
    with pytest.raises(ValueError, match=message):
        branch_jobs([decision(**over)], 1, ["forbid"], get_format("autocoa"))


def test_bad_question_file_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "q.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"id": "a", "question": "Who?", "golden_answers": ["x"]}) + "\n")
        f.write(json.dumps({"id": "b", "question": "  ", "golden_answers": ["y"]}) + "\n")
    assert main([f"questions={path}", f"out={tmp_path / 'out'}"]) == 2
    assert f"{path}:2: field 'question' is missing or empty" in capsys.readouterr().err
    assert main(["mode=branch", f"out={tmp_path / 'out'}"]) == 2
    assert "mode=branch needs decisions=PATH" in capsys.readouterr().err


def test_shards_are_atomic_resumable_and_single_writer(tmp_path):
    rows = [Trajectory(question_id=f"q{i}", question="?", golden_answers=["a"], prompt="p") for i in range(5)]
    with ShardWriter(tmp_path, rows_per_shard=2, flush_s=1e9) as writer:
        for t in rows:
            writer.add(t)
        assert len(writer.shards) == 2 and len(writer.buffer) == 1
        assert done_ids(tmp_path) == {t.id for t in rows[:4]}
        with pytest.raises(RuntimeError, match="being written by another process"):
            ShardWriter(tmp_path).__enter__()
    assert done_ids(tmp_path) == {t.id for t in rows}
    assert not list(tmp_path.glob(".*.tmp*"))


def test_two_decisions_with_one_key_are_refused():
    with pytest.raises(ValueError, match="decision rows 1 and 2 both cut parent 'p1' at decision_index 1"):
        branch_jobs([decision(), decision(id="d2")], 1, ["forbid"], get_format("autocoa"))


def test_bad_decision_file_names_file_and_row(tmp_path, capsys):
    path = write_trajectories(tmp_path / "decisions.parquet", [decision(), decision(id="d2", mode="coa")])
    assert main(["mode=branch", f"decisions={path}", f"out={tmp_path / 'out'}"]) == 2
    assert f"{path}: row 2: field 'mode' must be 'decision', got 'coa'" in capsys.readouterr().err
