"""Curation per tool, end to end on real data: the reference teacher writes CoA with ``search`` and ``open``
(passages cut to 12-token snippets, so opening a document adds something) over the real BM25 index; analyze cuts
a decision point before every call of either tool; synthesis branches each point three ways (no tool, a forced
search, a forced ``open``); the pairs step mines acting-against-memory pairs per tool and tool-against-tool
pairs, each prefix-matched."""

from __future__ import annotations

import json

import polars as pl
import pytest

from coa.config import build
from coa.formats import get_format, read_call
from coa.questions import DEFAULT_QUESTIONS, load_questions, write_questions
from coa.trajectory import read_trajectories
from curate import analyze, pairs, score
from synth.config import SynthConfig
from synth.run import run as synth_run
from tests.curate.helpers import config

N = 40
FMT = get_format("search_r1")


def synth_config(index_dir, out, questions, **over) -> SynthConfig:
    base = dict(
        mode="coa",
        format=FMT.name,
        questions=str(questions),
        out=str(out),
        teacher={"kind": "reference"},
        progress=False,
        search={
            "index": str(index_dir),
            "max_actions": 3,
            "max_tokens": 512,
            "snippet_tokens": 12,
            "tools": ["search", "open"],
        },
        prompt={"demonstrations": False, "prefill": "<think>\n"},
    )
    return build(SynthConfig, base | over, "test")


@pytest.fixture(scope="module")
def flow(index_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("tool_pairs")
    questions = root / "q.jsonl"
    write_questions(questions, load_questions(DEFAULT_QUESTIONS, limit=N))
    synth_run(synth_config(index_dir, root / "coa", questions))
    synth_run(synth_config(index_dir, root / "cot", questions, mode="cot"))
    score.run(config(root / "score", input=[str(root / "cot"), str(root / "coa")], metric="em"))
    analyze.run(
        config(root / "analyze", step="analyze", input=[str(root / "score")], decision_points="every", eval_questions=5)
    )
    decisions = root / "analyze" / "decisions.parquet"
    synth_run(
        synth_config(
            index_dir,
            root / "branch",
            questions,
            mode="branch",
            decisions=str(decisions),
            branches=["forbid", "force", "force-open"],
        )
    )
    metrics = pairs.run(config(root / "pairs", step="pairs", input=[str(root / "branch")], metric="em"))
    return root, metrics


def first_call(text: str) -> str:
    """The tool the first call in ``text`` names."""
    steps = [s for s in FMT.parse(text).steps if s.kind in ("search", "call")]
    if steps[0].kind == "search":
        return "search"
    inner = steps[0].text[len(FMT.call_open) : -len(FMT.call_close)]
    return read_call(inner.strip())[0]


def test_decision_points_sit_before_every_call_of_every_tool(flow):
    root, _ = flow
    parents = {t.id: t for t in read_trajectories(root / "coa")}
    decisions = read_trajectories(root / "analyze" / "decisions.parquet")
    before = {"search": 0, "open": 0}
    for d in decisions:
        parent, k = parents[d.parent_id], d.decision_index
        cut = d.segments[-1]["text"]
        rest = parent.segments[k - 1]["text"][len(cut) :]
        assert parent.segments[k - 1]["text"].startswith(cut)
        tool = "search" if rest.startswith(FMT.search_open) else "open" if rest.startswith(FMT.call_open) else None
        assert tool, rest[:40]
        before[tool] += 1
        calls_before = "".join(s["text"] for s in d.segments)
        assert calls_before.count(FMT.search_open) + calls_before.count(FMT.call_open) == d.sample
    assert before["search"] > 0 and before["open"] > 0, before


def test_analyze_counts_calls_and_the_two_by_two_per_tool(flow):
    root, _ = flow
    metrics = json.loads((root / "analyze" / "metrics.json").read_text())
    coa = read_trajectories(root / "coa")
    tools = {r["tool"]: r for r in metrics["by_tool"]}
    assert set(tools) == {"search", "open"}
    for name, row in tools.items():
        callers = [t for t in coa if any(s.get("tool") == name for s in t.segments if s["kind"] == "observation")]
        assert row["rows"] == len(callers) and row["calls"] >= row["rows"]
        assert sum(row["two_by_two"].values()) == len({t.question_id for t in callers})
    assert (root / "analyze" / "calls_by_tool.png").stat().st_size > 0


def test_forced_open_branches_open_a_document_right_after_the_prefix(flow):
    root, _ = flow
    branches = read_trajectories(root / "branch")
    kinds = {t.branch_id.rsplit(":", 1)[1] for t in branches}
    assert kinds == {"forbid", "force", "force-open"}
    forced_open = [t for t in branches if t.branch_id.endswith(":force-open")]
    for t in forced_open:
        cont = t.segments[t.decision_index :]
        assert cont[0]["kind"] == "prefill" and cont[0]["text"].endswith(FMT.call_opening("open"))
        assert t.parse().well_formed, t.parse().errors
        first_result = next(s for s in cont if s["kind"] == "observation")
        assert first_result["tool"] == "open" and not first_result["error"], first_result
        assert json.loads(first_result["args"])["doc"]
    for t in branches:
        if t.branch_id.endswith(":forbid"):  # no call after the prefix
            assert not any(s["kind"] == "observation" for s in t.segments[t.decision_index :])


def test_pairs_per_tool_and_between_tools(flow):
    root, metrics = flow
    df = pl.read_parquet(root / "pairs" / "pairs.parquet")
    branches = {t.id: t for t in read_trajectories(root / "branch")}
    tools_seen = set()
    for p in df.iter_rows(named=True):
        chosen, rejected = branches[p["chosen_id"]], branches[p["rejected_id"]]
        k = p["decision_index"]
        assert chosen.segments[:k] == rejected.segments[:k]  # byte-identical shared prefix
        assert p["prompt"] == chosen.prompt + "".join(s["text"] for s in chosen.segments[:k])
        assert p["chosen_score"] > p["rejected_score"]
        acting = {"act": ["chosen"], "no_act": ["rejected"], "tool": ["chosen", "rejected"]}[p["direction"]]
        for side in ("chosen", "rejected"):
            text = p[side]
            if side in acting:  # a call, cut after its close tag: the turn goes on
                assert not p[f"{side}_ends_turn"]
                assert text.endswith((FMT.search_close, FMT.call_close)), text[-40:]
                tools_seen.add(first_call(text))
            else:  # from memory: runs to the answer
                assert p[f"{side}_ends_turn"] and FMT.search_open not in text and FMT.call_open not in text
        if p["direction"] == "tool":
            assert first_call(p["chosen"]) != first_call(p["rejected"])
    by_tool = metrics["by_tool"]
    assert sum(by_tool.values()) == df.height == metrics["pairs"]
    assert any(k.endswith(":open") for k in by_tool), by_tool  # open against memory
    assert {"search", "open"} <= tools_seen, (tools_seen, by_tool)
    assert df["id"].n_unique() == df.height
