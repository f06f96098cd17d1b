"""The run report from hand-built outputs: stage table with paired differences, power, the goals met or
missed, when-to-act, fidelity and checks sections, provenance."""

from __future__ import annotations

import json

import coa.config

from coa.config import build
from evaluate.report import ReportConfig, build_report
from evaluate.run import aggregate
from evaluate.stats import dataset_breakdowns, tool_use


def _model(root, name, ems, style="trained", well_formed=1.0, more_searches=0):
    # bridge questions search twice, comparison questions once; every question is answered
    rows = [
        {
            "question_id": f"q{i:03d}",
            "dataset": "heldout",
            "em": e,
            "f1": e,
            "n_actions": 1 + i % 2 + more_searches,
            "well_formed": well_formed,
            "answered": True,
            "qtype": "bridge" if i % 2 else "comparison",
            "hops": None,
            "gold_retrieved": bool(e),
        }
        for i, e in enumerate(ems)
    ]
    scored = [
        {
            "em": e,
            "f1": e,
            "cover_em": e,
            "autocoa_lenient": None,
            "well_formed": well_formed,
            "n_actions": 1 + i % 2 + more_searches,
        }
        for i, e in enumerate(ems)
    ]
    (root / name).mkdir(parents=True)
    (root / name / "per_question.json").write_text(json.dumps(rows))
    (root / name / "metrics.json").write_text(
        json.dumps(
            {
                "name": name,
                "style": style,
                "format": "search_r1",
                "datasets": {"heldout": {**aggregate(scored, 100), **dataset_breakdowns(rows, 100)}},
            }
        )
    )


def test_report_page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(coa.config, "PARAMS_FILE", "none")
    root = tmp_path / "eval"
    _model(root, "sft1", [0.0] * 100)
    _model(root, "sft2", [1.0] * 15 + [0.0] * 85)
    (tmp_path / "checks.json").write_text(
        json.dumps(
            {
                "status": "fail",
                "counts": {"pass": 0, "n/a": 0, "warn": 0, "fail": 1},
                "checks": [
                    {"check": "well_formed", "subject": "sft1", "status": "fail", "numbers": {}, "message": "0.00"}
                ],
            }
        )
    )
    rate = {"rate": 0.5, "n": 4, "ci95": [0.0, 1.0]}
    (tmp_path / "when.json").write_text(
        json.dumps(
            {
                "points": {"source": "branches", "needed": 4, "sufficed": 4},
                "notes": ["over-trigger: n = 4 points where memory sufficed"],
                "models": {
                    "sft2": {
                        **{
                            k: rate
                            for k in ("search_when_needed", "under_trigger", "answer_when_sufficed", "over_trigger")
                        },
                        "by_tool": {
                            "open": {
                                k: {"rate": 0.25, "n": 4, "ci95": [0.0, 0.75]}
                                for k in ("search_when_needed", "under_trigger", "answer_when_sufficed", "over_trigger")
                            }
                        },
                    }
                },
            }
        )
    )
    cfg = build(
        ReportConfig,
        {
            "eval_root": str(root),
            "names": ["sft1", "sft2"],
            "power_pair": ["sft1", "sft2"],
            "fidelity": ["sft3", "rl1"],
            "when_to_act": str(tmp_path / "when.json"),
            "checks": str(tmp_path / "checks.json"),
            "out": str(tmp_path / "report"),
        },
        "test",
    )
    from evaluate.fidelity_metrics import fidelity

    (tmp_path / "runs/fidelity/rl1").mkdir(parents=True)
    from evaluate.fidelity_metrics import tool_fidelity

    opened = tool_fidelity(["Paris is the capital.", "Lyon"], ["Paris is the capital.", None], [["Paris"], ["Paris"]])
    (tmp_path / "runs/fidelity/rl1/fidelity.json").write_text(
        json.dumps({**fidelity([], {}, search_calls=97), "by_tool": {"open": opened}})
    )
    (tmp_path / "runs/reward_probe/rl2").mkdir(parents=True)
    models = {"before": {"reward": 0.1, "search_calls": 1.0}, "after": {"reward": 0.25, "search_calls": 1.5}}
    (tmp_path / "runs/reward_probe/rl2/reward_probe.json").write_text(
        json.dumps(
            {
                "tools": "real",
                "n_questions": 16,
                "samples": 4,
                "models": models,
                "difference": {"diff": 0.15, "ci95": [0.02, 0.3], "n": 16},
                "correctness_difference": {"diff": 0.1, "ci95": [-0.05, 0.25], "n": 16},
            }
        )
    )
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/train_sft2.json").write_text(
        json.dumps({"steps": 20, "seconds_per_step": 19.04, "peak_rss_gb": 4.291})
    )
    (tmp_path / "metrics/train_rl2.json").write_text(
        json.dumps(
            {
                "steps": 12,
                "seconds_per_step": 41.7,
                "peak_rss_gb": 6.005,
                "real_search_queries": 94,
                "reward_trend": {
                    "steps": 12,
                    "quarter": 3,
                    "first_quarter": -0.05,
                    "last_quarter": 0.25,
                    "difference": 0.3,
                    "ci95": [0.0691, 0.5583],
                },
            }
        )
    )
    (tmp_path / "metrics/train_sft2_steps.csv").write_text("step,loss\n1,1.5\n2,1.1\n")
    (tmp_path / "metrics/train_rl2_steps.csv").write_text("step,reward,heldout_reward\n0,,0.1\n1,0.2,\n2,0.3,0.15\n")
    page = build_report(cfg)
    assert "![learning curves: loss or reward per step](learning_curves.png)" in page
    assert (tmp_path / "report" / "learning_curves.png").stat().st_size > 1000
    assert "| sft2 | 20 | 19.0 | 4.29 | – | – |" in page
    assert "| rl2 | 12 | 41.7 | 6.00 | -0.050 → 0.250: +0.300 [0.07, 0.56] | 94 |" in page
    assert "| rl2 | real | 16 x 4 | 0.100 | 0.250 | 0.150 [0.02, 0.30] | 0.100 [-0.05, 0.25] | 1.00 / 1.50 |" in page
    assert (
        "| rl1 | 97 | 0 | n/a (n=0) |" in page
        and "rl1: the model made 97 search calls and wrote no observation" in page
    )
    assert "| sft2 (trained) | 0.150 [" in page and "+0.150 [0.09, 0.22] vs sft1" in page
    assert "| n/a |" in page  # autocoa_lenient under search_r1
    assert (
        "| sft2 | bridge 0.14 (n=50); comparison 0.16 (n=50) | 1: 0.16 (n=50); 2: 0.14 (n=50) | 0.15 (n=100) |" in page
    )
    # searches per question overall / bridge / comparison, and the bridge questions answered after 2+ searches
    assert "| sft2 | 1.50 [" in page and "| 2.00 [2.00, 2.00] (n=50) | 1.00 [1.00, 1.00] (n=50) | – |" in page
    assert "| 1.00 [1.00, 1.00] (50 of n=50) | 0.14 (n=50) |" in page
    assert "Points (branches): n = 4 where search was needed" in page and "- over-trigger: n = 4 points" in page
    assert "With n = 100 held-out questions, the smallest EM difference detectable" in page
    assert "| sft2 | 0.50 [0.00, 1.00] (n=4)" in page and "| sft3 | not probed" in page
    assert "| sft2 | open | 0.25 (n=4) | 0.25 (n=4) | 0.25 (n=4) | 0.25 (n=4) |" in page  # when to act, per tool
    assert "| rl1 | open | 2 | 1 | 1.00 (n=1) | 1.00 (n=1) | 1.00 (n=1) | 1.00 |" in page  # fidelity, per tool
    assert "| best trained stage's EM ≥ 0.25 | sft2: 0.150 [" in page and "| n = 100 | missed by 0.100 |" in page
    # the on-policy issue's goals: bridge EM (7 of the 50 odd-numbered questions right), all of them after 2 searches
    assert (
        "| EM on bridge questions ≥ 0.15 | sft2: 0.140 (n=50) | sft1 0.000 (n=50); sft2 0.140 (n=50) | missed by 0.010 |"
        in page
    )
    assert "| EM on bridge questions answered after ≥ 2 searches ≥ 0.25 | sft2: 0.140 (n=50) |" in page
    # the final evaluated stage's searches, not the most of any stage
    assert (
        "| searches per bridge question ≥ 1.5 in the final stage (sft2) | sft2: 2.00 | sft1 2.00; sft2 2.00 | met |"
        in page
    )
    assert (
        "| every stage after sft2 keeps its EM: paired lower bound ≥ −0.02 | – | not evaluated | unmeasured |" in page
    )
    assert "| rl2 against its start | – | not evaluated | unmeasured |" in page
    assert "| well_formed | sft1 | FAIL | 0.00 |" in page and "- commit: `" in page
    assert (tmp_path / "report" / "em_by_stage.png").exists() and (
        tmp_path / "report" / "report.md"
    ).read_text() == page
    # a model that searches more but never answers is listed, not counted
    _model(root, "sft3", [0.0] * 100, well_formed=0.0, more_searches=1)
    cfg.goal_rl, cfg.goal_em, cfg.names = "sft2", 0.1, ["sft1", "sft2", "sft3"]
    cfg.fidelity = []  # the default: every probed model, none listed that was not probed
    again = build_report(cfg)
    assert "| rl1 | 97 | 0 | n/a (n=0) |" in again and "| sft3 | not probed" not in again
    assert "in the final stage (sft3) | – | sft3 does not answer | unmeasured |" in again
    # sft3 answers none of sft2's 15 right: -0.150, its lower bound below -0.02
    keep = next(line for line in again.splitlines() if line.startswith("| every stage after sft2 keeps its EM"))
    assert keep.endswith("| sft3: -0.150 [-0.22, -0.09] | sft3 -0.150 [-0.22, -0.09] | missed by 0.200 |")
    assert (
        "| sft2 − sft1 paired EM: lower bound ≥ 0 | +0.150 [0.09, 0.22] | n = 100 | met (> 0: the moonshot) |" in again
    )
    assert "| n = 100 | met |" in again


def test_beside_another_run_shows_em_by_type_and_calls_per_tool(tmp_path, monkeypatch):
    """``beside=`` reads another run's ``metrics/eval_<name>.json`` (what dvc keeps per run) and sets it under
    this run's numbers per model: a model the other run lacks says so."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(coa.config, "PARAMS_FILE", "none")
    here, there = tmp_path / "eval", tmp_path / "other_eval"
    _model(here, "sft2", [1.0, 0.0] * 50)  # comparison questions (even i) right, bridge wrong
    _model(there, "sft2", [0.0, 1.0] * 25 + [0.0] * 50)
    metrics = json.loads((here / "sft2" / "metrics.json").read_text())
    calls = [
        {"tool_calls": {"search": {"calls": 1 + i % 2, "failed": 0}, "open": {"calls": i % 2, "failed": 0}}}
        for i in range(100)
    ]
    metrics["datasets"]["heldout"]["tools"] = tool_use(calls)
    (here / "sft2" / "metrics.json").write_text(json.dumps(metrics))
    from evaluate.stats import compact_metrics

    (tmp_path / "other").mkdir()
    other = json.loads((there / "sft2" / "metrics.json").read_text())["datasets"]
    (tmp_path / "other/eval_sft2.json").write_text(json.dumps(compact_metrics(other)))
    cfg = build(
        ReportConfig,
        {
            "eval_root": str(here),
            "names": ["sft2", "rl1"],
            "beside": str(tmp_path / "other"),
            "beside_label": "search only",
            "out": str(tmp_path / "report"),
        },
        "test",
    )
    page = build_report(cfg)
    assert "Beside search only (`" in page
    beside = [line for line in page.splitlines() if " | this run | " in line or " | search only | " in line]
    assert beside[0].startswith("| sft2 | this run | 0.500 [")
    assert beside[0].endswith("| 0.000 (n=50) | 1.000 (n=50) | open 0.50; search 1.50 |")
    assert (
        beside[1].startswith("| sft2 | search only | 0.250 [") and "| 0.500 (n=50) | 0.000 (n=50) | none |" in beside[1]
    )
    assert beside[2:] == [
        "| rl1 | this run | not evaluated |  |  |  |",
        "| rl1 | search only | not evaluated |  |  |  |",
    ]
