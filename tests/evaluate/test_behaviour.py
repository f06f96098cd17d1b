"""The behaviour the method is for, on hand-built cases with known answers: searches per question by type
and hops, EM by searches, bridge questions answered after two or more searches, the power for n, the
compact DVC metrics file an evaluation writes, and when-to-act points with a denominator on both sides."""

from __future__ import annotations

import json
from contextlib import contextmanager

import polars as pl
import pytest

from coa.config import build
from coa.tools import UNKNOWN_TOOL
from coa.trajectory import Trajectory, segment, write_trajectories
from evaluate.stats import (
    call_outcomes,
    compact_metrics,
    dataset_breakdowns,
    dataset_power,
    mean_searches,
    multi_search_answers,
    question_rows,
    searches_by,
    tool_use,
)
from evaluate.when_to_act import WhenToActConfig, branch_points, side_notes


def row(qtype, hops, searches, em, answered=True):
    return {
        "question_id": f"q{qtype}{hops}{searches}{em}{answered}",
        "em": float(em),
        "f1": float(em),
        "n_actions": searches,
        "well_formed": 1.0,
        "answered": answered,
        "qtype": qtype,
        "hops": hops,
        "gold_retrieved": False,
    }


# bridge: 4 questions searched 2, 3, 2 (no answer) and 1 times; comparison: 2 questions, 1 search each;
# one question without a type (2-hop, 0 searches)
ROWS = [
    row("bridge", 2, 2, 1),
    row("bridge", 2, 3, 0),
    row("bridge", 3, 2, 0, answered=False),
    row("bridge", 3, 1, 1),
    row("comparison", 2, 1, 1),
    row("comparison", 2, 1, 0),
    row(None, 2, 0, 0),
]


def test_searches_per_question_by_type_and_hops():
    got = searches_by(ROWS, "qtype", resamples=200)
    assert {g: (v["n"], v["mean"]) for g, v in got.items()} == {"bridge": (4, 2.0), "comparison": (2, 1.0)}
    assert got["comparison"]["ci95"] == [1.0, 1.0]  # every comparison question searched once: no width
    hops = searches_by(ROWS, "hops", resamples=200)
    assert {g: (v["n"], v["mean"]) for g, v in hops.items()} == {"2": (5, 1.4), "3": (2, 1.5)}
    overall = mean_searches(ROWS, resamples=200)
    assert (overall["n"], overall["mean"]) == (7, 1.429) and overall["ci95"][0] <= 1.429 <= overall["ci95"][1]
    assert mean_searches([]) == {"n": 0, "mean": None, "ci95": None}


def test_em_by_searches_has_n_in_every_cell():
    got = dataset_breakdowns(ROWS, resamples=100)["by_searches"]
    assert {k: (v["n"], v["em"]) for k, v in got.items()} == {
        "0": (1, 0.0),
        "1": (3, 0.6667),
        "2": (2, 0.5),
        "3": (1, 0.0),
    }


def test_bridge_questions_answered_after_two_or_more_searches():
    got = multi_search_answers(ROWS, resamples=200)
    # 4 bridge questions: searched 2 (answered, right), 3 (answered, wrong), 2 (no answer), 1 (answered)
    assert {k: got[k] for k in ("qtype", "min_searches", "n", "answered", "rate", "em", "em_n")} == {
        "qtype": "bridge",
        "min_searches": 2,
        "n": 4,
        "answered": 2,
        "rate": 0.5,
        "em": 0.5,
        "em_n": 2,
    }
    assert got["ci95"][0] <= 0.5 <= got["ci95"][1]
    assert multi_search_answers(ROWS, min_searches=3)["answered"] == 1
    none = multi_search_answers([row("comparison", 2, 1, 1)])
    assert (none["n"], none["rate"], none["em"], none["em_n"]) == (0, None, None, 0)


def test_question_rows_mark_a_parsed_answer():
    trajectories = [
        {"question_id": q, "golden_answers": ["x"], "answer": a, "segments": []}
        for q, a in (("a", "Paris"), ("b", None), ("c", "  "))
    ]
    scored = [{"em": 0.0, "f1": 0.0, "n_actions": 0, "well_formed": 1.0}] * 3
    rows = question_rows(trajectories, scored, [], "heldout")
    assert [r["answered"] for r in rows] == [True, False, False]


def test_tool_calls_and_their_success_per_tool():
    """Calls per tool from the segments answering them: an error (refused or failed) counts as a call that
    did not succeed; a row written before tools existed (a ``query``, no ``tool``) made search calls."""
    with_tools = [
        segment("model", "<tool_call>"),
        segment("observation", "<information>…</information>", query="Paris", doc_ids=["d1"]),
        segment("model", "…"),
        segment("observation", "<tool_response>6</tool_response>", tool="python", args='{"code": "print(6)"}'),
        segment("model", "…"),
        segment("observation", "<tool_response>ZeroDivisionError</tool_response>", tool="python", error="exception"),
        segment("model", "…"),
        segment("observation", "<tool_response>budget</tool_response>", tool="python", error="budget"),
    ]
    old = [{"kind": "model", "text": "…"}, {"kind": "observation", "text": "…", "query": "Lyon", "tool": None}]
    assert call_outcomes(with_tools) == {"search": {"calls": 1, "failed": 0}, "python": {"calls": 3, "failed": 2}}
    assert call_outcomes(old) == {"search": {"calls": 1, "failed": 0}}
    invented = [  # a policy may call a tool by any name: such calls share one bucket
        segment("observation", "<tool_response>unknown</tool_response>", tool=name, error="unknown_tool")
        for name in ("The Nut Job", "San Francisco Bay Area hippie movement")
    ]
    assert call_outcomes(invented) == {UNKNOWN_TOOL: {"calls": 2, "failed": 2}}
    trajectories = [
        {"question_id": q, "golden_answers": ["x"], "answer": "x", "segments": segs}
        for q, segs in (("a", with_tools), ("b", old), ("c", [segment("model", "x")]))
    ]
    scored = [{"em": 1.0, "f1": 1.0, "n_actions": 0, "well_formed": 1.0}] * 3
    got = tool_use(question_rows(trajectories, scored, [], "heldout"))
    assert got["python"] == {
        "calls_per_question": 1.0,
        "questions_using": 1,
        "calls": 3,
        "failed": 2,
        "success_rate": 0.3333,
        "n": 3,
    }
    assert (got["search"]["calls"], got["search"]["questions_using"], got["search"]["success_rate"]) == (2, 2, 1.0)
    compact = compact_metrics({"heldout": {"n": 3, **dataset_breakdowns(question_rows(trajectories, scored, [], "h"))}})
    assert compact["heldout"]["tools"]["python"] == {
        "calls_per_question": 1.0,
        "success_rate": 0.3333,
        "questions_using": 1,
    }


def test_power_for_the_datasets_n():
    half = [row("bridge", 2, 1, i % 2) for i in range(100)]  # EM 0.5: sd √(2·0.25) = 0.7071
    got = dataset_power(half)
    assert got["n"] == 100 and got["sd_of_differences"] == 0.7071
    assert got["min_detectable_em_difference"] == pytest.approx(2.8016 * 0.7071 / 10, abs=2e-4)
    assert "With n = 100 held-out questions" in got["text"] and "erring independently" in got["text"]
    low = dataset_power([row("bridge", 2, 1, i < 45) for i in range(300)])  # EM 0.15 at n = 300
    assert low["min_detectable_em_difference"] == pytest.approx(2.8016 * (2 * 0.15 * 0.85) ** 0.5 / 300**0.5, abs=2e-4)
    zero = dataset_power([row("bridge", 2, 1, 0)] * 100)  # no spread: the worst case stands in
    assert zero["sd_of_differences"] == 0.7071 and "worst case" in zero["basis"]
    assert dataset_power([])["min_detectable_em_difference"] is None


def _leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_compact_metrics_are_numbers_dvc_can_diff():
    from evaluate.run import aggregate

    scored = [
        {
            "em": r["em"],
            "f1": r["f1"],
            "cover_em": r["em"],
            "autocoa_lenient": None,
            "well_formed": 1.0,
            "n_actions": r["n_actions"],
        }
        for r in ROWS
    ]
    got = compact_metrics({"heldout": {**aggregate(scored, 50), **dataset_breakdowns(ROWS, 50)}})
    m = got["heldout"]
    assert set(m) == {
        "n",
        "em",
        "em_ci95",
        "f1",
        "searches_per_question",
        "well_formed",
        "searches_by_qtype",
        "searches_by_hops",
        "em_by_qtype",
        "em_by_searches",
        "bridge_answered_after_2plus_searches",
        "min_detectable_em_difference",
        "evidence_found",
        "tools",
    }
    assert (m["n"], m["em"], m["searches_per_question"]) == (7, 0.4286, 1.429)
    assert m["evidence_found"] == {"mean": None, "all": None, "n": 0}  # these rows name no evidence
    assert m["searches_by_qtype"]["bridge"] == {"n": 4, "mean": 2.0}
    assert m["em_by_searches"]["1"] == {"n": 3, "em": 0.6667}
    assert m["bridge_answered_after_2plus_searches"] == {"n": 4, "answered": 2, "rate": 0.5, "em": 0.5, "em_n": 2}
    assert set(m["em_ci95"]) == {"low", "high"}
    assert all(v is None or isinstance(v, (int, float)) for _, v in _leaves(got)), "DVC diffs numbers only"
    assert compact_metrics({"empty": {"n": 0}})["empty"]["n"] == 0


def test_evaluate_writes_the_metrics_file_only_where_asked(tmp_path, monkeypatch):
    """``evaluate()`` with the model and the agent loop replaced by finished rows: metrics/eval_<name>.json
    is written beside metrics.json with ``metrics_dir``, and not at all without it."""
    import evaluate.run as run

    questions = [
        {"id": "q1", "question": "?", "golden_answers": ["Paris"], "metadata": {"type": "bridge"}},
        {"id": "q2", "question": "?", "golden_answers": ["Rome"], "metadata": {"type": "comparison"}},
    ]
    search = [
        segment("model", "<think>\nLook.\n<search> x </search>"),
        segment("observation", "<information>Doc 1(Title: France) Paris is the capital.</information>"),
    ]
    rows = [
        {
            "question_id": "q1",
            "golden_answers": ["Paris"],
            "format": "search_r1",
            "n_actions": 2,
            "answer": "Paris",
            "segments": search * 2 + [segment("model", "</think>\n<answer> Paris </answer>")],
        },
        {
            "question_id": "q2",
            "golden_answers": ["Rome"],
            "format": "search_r1",
            "n_actions": 0,
            "answer": "Milan",
            "segments": [segment("model", "<think>\nKnown.\n</think>\n<answer> Milan </answer>")],
        },
    ]

    @contextmanager
    def no_engine(cfg):
        yield None

    monkeypatch.setattr(run, "check_model", lambda cfg: None)
    monkeypatch.setattr(run, "claim_rows", lambda *a: None)
    monkeypatch.setattr(run, "fingerprint", lambda cfg: {})
    monkeypatch.setattr(run, "load_questions", lambda path, limit=None: questions)
    monkeypatch.setattr(run, "model_engine", no_engine)
    monkeypatch.setattr(run, "generate", lambda cfg, engine, qs, out: rows)
    cfg = build(
        run.EvalConfig,
        {
            "name": "sft9",
            "out_root": str(tmp_path / "eval"),
            "format": "search_r1",
            "questions": ["heldout.jsonl"],
            "bootstrap": 50,
            "metrics_dir": str(tmp_path / "metrics"),
        },
        "test",
    )
    result = run.evaluate(cfg)
    written = json.loads((tmp_path / "metrics" / "eval_sft9.json").read_text())
    assert written == compact_metrics(result["datasets"])
    heldout = written["heldout"]
    assert (heldout["n"], heldout["em"], heldout["searches_per_question"]) == (2, 0.5, 1.0)
    assert heldout["bridge_answered_after_2plus_searches"] == {"n": 1, "answered": 1, "rate": 1.0, "em": 1.0, "em_n": 1}
    assert build(run.EvalConfig, {}, "test").metrics_dir == ""  # by hand or from a test: no committed file touched
    run.evaluate(
        build(
            run.EvalConfig,
            {
                "name": "other",
                "out_root": str(tmp_path / "eval"),
                "format": "search_r1",
                "questions": ["heldout.jsonl"],
                "bootstrap": 50,
            },
            "test",
        )
    )
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["eval_sft9.json"]


# ---- when to act: points on both sides --------------------------------------------------------------

PREFIX_TEXT = "Let me think. "


def _branch(parent, di, kind, sample, correct, question_id, kept=True, prefix=PREFIX_TEXT):
    """A branch trajectory (prefix segments, then its continuation) and its score row."""
    segs = [
        segment("prefill", "<think>\n"),
        segment("model", prefix),
        segment("model", "<search> q </search>" if kind == "force" else "</think>\n<answer> x </answer>"),
    ]
    t = Trajectory(
        question_id=question_id,
        question=f"question {question_id}",
        golden_answers=["x"],
        prompt="<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n",
        segments=segs,
        mode="branch",
        sample=sample,
        branch_id=f"{parent}:{di}:{kind}",
        parent_id=parent,
        decision_index=di,
        format="search_r1",
    )
    return t, {
        "id": t.id,
        "question_id": question_id,
        "parent_id": parent,
        "decision_index": di,
        "kind": kind,
        "correct": correct,
        "kept": kept,
    }


@pytest.fixture
def branch_files(tmp_path):
    """Held-out points (questions h*) with known labels, and one point of a trained question (t1):
    h1 acting right, answering wrong → needed          h2 both right alike → sufficed (no pair)
    h3 answering right, acting wrong → sufficed        h4 both wrong → left out (no branch right)
    h5 only an answering branch is valid → left out    h6 two samples: acting 1.0 vs answering 0.5 → needed
    h7 the branches' prefixes differ → left out        t1 not in the eval split"""
    spec = [
        ("h1", [("force", True), ("forbid", False)]),
        ("h2", [("force", True), ("forbid", True)]),
        ("h3", [("force", False), ("forbid", True)]),
        ("h4", [("force", False), ("forbid", False)]),
        ("h5", [("forbid", True)]),
        ("h6", [("force", True), ("force", True), ("forbid", True), ("forbid", False)]),
        ("t1", [("force", True), ("forbid", False)]),
    ]
    trajectories, scores = [], []
    for q, branches in spec:
        for i, (kind, correct) in enumerate(branches):
            t, s = _branch(f"p{q}", 2, kind, i, correct, q)
            trajectories.append(t)
            scores.append(s)
    t, s = _branch("ph5", 2, "force", 9, True, "h5", kept=False)  # h5's acting branch failed validation
    trajectories.append(t)
    scores.append(s)
    for kind, prefix in (("force", PREFIX_TEXT), ("forbid", "Another prefix. ")):
        t, s = _branch("ph7", 2, kind, 0, kind == "force", "h7", prefix=prefix)
        trajectories.append(t)
        scores.append(s)
    write_trajectories(tmp_path / "branch" / "part-0.parquet", trajectories)
    pl.DataFrame(scores).write_parquet(tmp_path / "branches.parquet")
    pl.DataFrame({"id": [f"h{i}" for i in range(1, 8)]}).write_parquet(tmp_path / "eval_questions.parquet")
    return tmp_path / "branches.parquet", [tmp_path / "branch"], tmp_path / "eval_questions.parquet"


def test_branch_points_label_both_sides(branch_files):
    points, counts = branch_points(*branch_files)
    assert [(p["question_id"], p["label"]) for p in points] == [
        ("h1", "needed"),
        ("h2", "sufficed"),
        ("h3", "sufficed"),
        ("h6", "needed"),
    ]
    assert counts == {
        "decision_points": 7,
        "needed": 2,
        "sufficed": 2,
        "left_out": {"missing_valid_kind": 1, "no_branch_right": 1, "prefix_mismatch": 1, "no_valid_branch": 0},
    }
    h1 = points[0]
    assert h1["chat_prompt"].startswith("<|im_start|>user") and [s["text"] for s in h1["prefix"]] == [
        "<think>\n",
        PREFIX_TEXT,
    ]
    assert (h1["act_rate"], h1["no_act_rate"]) == (1.0, 0.0) and points[3]["no_act_rate"] == 0.5


def test_branch_points_one_per_forced_tool(tmp_path):
    """A point branched three ways (no tool, a forced search, a forced open) is labelled once per tool, each
    forced tool against the same no-tool branches: here search did not help (both wrong) and open did."""
    spec = [("force", False), ("force-open", True), ("forbid", False)]
    trajectories, scores = [], []
    for i, (kind, correct) in enumerate(spec):
        t, s = _branch("pg", 2, kind, i, correct, "g1")
        trajectories.append(t)
        scores.append(s)
    write_trajectories(tmp_path / "branch" / "part-0.parquet", trajectories)
    pl.DataFrame(scores).write_parquet(tmp_path / "branches.parquet")
    pl.DataFrame({"id": ["g1"]}).write_parquet(tmp_path / "eval_questions.parquet")
    points, counts = branch_points(
        tmp_path / "branches.parquet", [tmp_path / "branch"], tmp_path / "eval_questions.parquet"
    )
    assert [(p["id"], p["tool"], p["label"], p["act_rate"], p["no_act_rate"]) for p in points] == [
        ("pg:2:open", "open", "needed", 1.0, 0.0)
    ]
    assert counts["decision_points"] == 1 and counts["left_out"]["no_branch_right"] == 1  # search's: none right


def test_a_side_below_min_n_is_said():
    notes = side_notes(13, 0, 30, "pairs")
    assert len(notes) == 2
    assert notes[0].startswith(
        "search when needed / under-trigger: n = 13 points where search was needed, fewer "
        "than 30: not resolved (wide intervals)"
    )
    assert (
        notes[1].startswith(
            "answer when memory sufficed / over-trigger: n = 0 points where memory sufficed, "
            "fewer than 30: not measured"
        )
        and "points=branches" in notes[1]
    )
    assert side_notes(30, 45, 30, "branches") == []
    assert "points=branches" not in side_notes(30, 2, 30, "branches")[0]
    with pytest.raises(ValueError, match="points must be one of pairs, branches; got 'all'"):
        build(WhenToActConfig, {"points": "all"}, "test")


def test_run_reports_n_per_side_and_notes(branch_files, tokenizer, tmp_path, monkeypatch):
    import coa.model
    import evaluate.when_to_act as when_to_act
    from evaluate.when_to_act import run
    from tests.evaluate.test_when_to_act import Oracle

    branches, trajectories, eval_questions = branch_files
    for module in (coa.model, when_to_act):  # wherever run() finds load_policy
        monkeypatch.setattr(module, "load_policy", lambda *a, **k: (Oracle(tokenizer), tokenizer), raising=False)
    cfg = build(
        WhenToActConfig,
        {
            "models": ["oracle"],
            "points": "branches",
            "branches": str(branches),
            "trajectories": [str(p) for p in trajectories],
            "eval_questions": str(eval_questions),
            "min_n": 2,
            "max_tokens": 32,
            "bootstrap": 50,
            "out": str(tmp_path / "w.json"),
        },
        "test",
    )
    result = run(cfg)
    assert result["points"]["source"] == "branches" and result["points"]["min_n"] == 2
    assert (result["points"]["needed"], result["points"]["sufficed"]) == (2, 2) and result["notes"] == []
    rates = result["models"]["oracle"]
    # the oracle searches where the question text says "needed": none of these do, so it answers everywhere
    assert rates["search_when_needed"]["n"] == 2 and rates["over_trigger"] == {
        **rates["over_trigger"],
        "n": 2,
        "rate": 0.0,
    }
    assert json.loads((tmp_path / "w.json").read_text())["points"] == result["points"]
    assert result["points"]["continued"] == {"needed": 2, "sufficed": 2}
    cfg.min_n = 3
    assert len(run(cfg)["notes"]) == 2
    cfg.per_side, cfg.min_n = 1, 2  # one point of each side continued; the notes follow what was continued
    fewer = run(cfg)
    assert fewer["points"]["continued"] == {"needed": 1, "sufficed": 1} and len(fewer["notes"]) == 2
    assert fewer["models"]["oracle"]["search_when_needed"]["n"] == 1


def test_the_report_lists_tool_calls_only_beyond_search(tmp_path):
    from evaluate.report import ReportConfig, tool_rows

    def metrics(name, tools):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"datasets": {"heldout": {"tools": tools}}}))

    search = {"calls_per_question": 1.5, "questions_using": 9, "calls": 15, "failed": 0, "success_rate": 1.0, "n": 10}
    metrics("a", {"search": search})
    cfg = ReportConfig(eval_root=str(tmp_path), names=["a", "b"])
    assert tool_rows(cfg) == []  # a search-only run: the behaviour table has its calls
    python = {"calls_per_question": 0.3, "questions_using": 2, "calls": 3, "failed": 1, "success_rate": 0.6667, "n": 10}
    metrics("b", {"search": search, "python": python})
    assert tool_rows(cfg) == [
        ["a", "search", "1.50", "9 of 10", "1.00"],
        ["b", "search", "1.50", "9 of 10", "1.00"],
        ["b", "python", "0.30", "2 of 10", "0.67"],
    ]
