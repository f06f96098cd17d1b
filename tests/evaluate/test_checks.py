"""Failure-signature checks on small hand-built runs with known outcomes: each check passes and fails."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from coa.config import build
from evaluate.checks import (
    ChecksConfig,
    check_metric_applies,
    check_over_triggering,
    check_reward_spread,
    check_set_sizes,
    check_sft1_collapse,
    check_weights_moved,
    check_well_formed,
    check_world_model,
    run_checks,
)
from evaluate.run import aggregate, report


def _checkpoint(folder, weight, **metrics):
    folder.mkdir(parents=True)
    save_file({"w": weight}, str(folder / "model.safetensors"))
    (folder / "metrics.json").write_text(json.dumps({"stage": "x", **metrics}))
    return folder


def test_weights_moved_passes_when_a_tensor_changed_and_fails_when_identical(tmp_path):
    w = torch.ones(4, 4, dtype=torch.bfloat16)
    start = _checkpoint(tmp_path / "start", w)
    same = _checkpoint(tmp_path / "same", w.to(torch.float32))  # saved again in fp32: the same weights
    moved = _checkpoint(tmp_path / "moved", torch.ones(4, 4) * 1.5)
    failed = check_weights_moved("sft2", same, start)
    assert failed["status"] == "fail" and failed["numbers"]["changed_tensors"] == 0
    passed = check_weights_moved("sft2", moved, start)
    assert passed["status"] == "pass" and passed["numbers"]["relative_change"] == pytest.approx(0.5)
    skipped = _checkpoint(tmp_path / "skipped", w, skipped="not in train.chain")
    assert check_weights_moved("sft1", skipped, start)["status"] == "n/a"


def test_sft1_collapse_is_both_log_probs_falling():
    falling = [{"logps/chosen": -1.0 - i, "logps/rejected": -2.0 - i} for i in range(6)]
    diverging = [{"logps/chosen": -1.0 + 0.1 * i, "logps/rejected": -2.0 - i} for i in range(6)]
    collapsed = check_sft1_collapse(falling)
    assert collapsed["status"] == "fail" and collapsed["numbers"]["chosen_first"] == -1.5
    assert collapsed["numbers"]["chosen_last"] == -5.5
    assert check_sft1_collapse(diverging)["status"] == "pass"
    assert check_sft1_collapse([{"loss": 1.0}])["status"] == "n/a"


def test_reward_spread_fails_when_most_steps_had_no_advantage():
    flat = check_reward_spread("rl2", [{"frac_reward_zero_std": v} for v in (1.0, 1.0, 0.5)], 0.5)
    assert flat["status"] == "fail" and flat["numbers"]["steps_all_groups_zero_std"] == 2
    assert check_reward_spread("rl1", [{"frac_reward_zero_std": v} for v in (0.0, 0.67)], 0.5)["status"] == "pass"
    assert check_reward_spread("rl1", [{"frac_reward_zero_std": v} for v in (0.9, 0.8)], 0.5)["status"] == "warn"


def test_set_sizes_empty_fails_far_below_target_warns():
    got = {
        c["subject"]: c
        for c in check_set_sizes(
            {
                "pairs": {"asked": 1500, "written": 0},
                "coa": {"asked": 5000, "written": 520},
                "cot": {"asked": 100, "written": 100},
            },
            0.5,
        )
    }
    assert [got[n]["status"] for n in ("pairs", "coa", "cot")] == ["fail", "warn", "pass"]
    assert got["coa"]["numbers"]["share"] == pytest.approx(0.104)


def test_well_formed_applies_to_trained_models_only():
    def metrics(style, share):
        return {"style": style, "datasets": {"heldout": {"well_formed": share}}}

    assert check_well_formed("sft1", metrics("trained", 0.0), 0.5)["status"] == "fail"
    assert check_well_formed("sft2", metrics("trained", 0.99), 0.5)["status"] == "pass"
    assert check_well_formed("base", metrics("plain", 0.0), 0.5)["status"] == "n/a"


def test_over_triggering_above_the_threshold_fails():
    when = {
        "models": {
            "sft1": {"over_trigger": {"rate": 0.8, "n": 10}},
            "sft2": {"over_trigger": {"rate": 0.2, "n": 10}},
            "base": {"over_trigger": {"rate": None, "n": 0}},
        }
    }
    got = {c["subject"]: c["status"] for c in check_over_triggering(when, 0.5)}
    assert got == {"sft1": "fail", "sft2": "pass", "base": "n/a"}


def test_a_metric_that_cannot_apply_is_na_never_zero(tmp_path):
    scored = [{"em": 1.0, "f1": 1.0, "cover_em": 1.0, "autocoa_lenient": None, "well_formed": 1.0, "n_actions": 1}] * 4
    m = aggregate(scored, resamples=10)
    assert m["autocoa_lenient"] is None and m["em"] == 1.0
    ok = {"format": "search_r1", "datasets": {"heldout": m}}
    assert check_metric_applies("sft2", ok, "search_r1")["status"] == "pass"
    zero = {"format": "search_r1", "datasets": {"heldout": {**m, "autocoa_lenient": 0.0}}}
    assert check_metric_applies("sft2", zero, "search_r1")["status"] == "fail"
    assert (
        check_metric_applies(
            "sft2", {"format": "autocoa", "datasets": {"heldout": {"autocoa_lenient": 0.0}}}, "search_r1"
        )["status"]
        == "pass"
    )
    (tmp_path / "sft2").mkdir()
    (tmp_path / "sft2" / "metrics.json").write_text(json.dumps({"name": "sft2", "style": "trained", **ok}))
    from evaluate.run import EvalConfig

    table = report(
        build(
            EvalConfig,
            {"step": "report", "names": ["sft2"], "out_root": str(tmp_path), "report": str(tmp_path / "t.md")},
            "test",
        )
    )
    assert "[1.0, 1.0] / n/a / 1.000" in table


def test_run_checks_writes_every_check_with_its_numbers(tmp_path):
    runs = tmp_path / "train"
    base = _checkpoint(tmp_path / "base", torch.zeros(2))
    _checkpoint(runs / "sft1", torch.ones(2), start_model=str(base))
    (runs / "sft1" / "steps.csv").write_text("step,logps/chosen,logps/rejected\n1,-1,-2\n2,-2,-3\n3,-3,-4\n")
    cfg = build(
        ChecksConfig,
        {
            "runs_dir": str(runs),
            "stages": ["sft1", "sft2"],
            "eval_root": str(tmp_path / "e"),
            "sets_metrics": str(tmp_path / "none.json"),
            "when_to_act": str(tmp_path / "none.json"),
            "fidelity_root": str(tmp_path / "fid"),
            "out": str(tmp_path / "checks.json"),
        },
        "test",
    )
    (tmp_path / "fid" / "sft3").mkdir(parents=True)
    (tmp_path / "fid" / "sft3" / "fidelity.json").write_text(json.dumps({"calls": 4, "search_calls": 5}))
    got = run_checks(cfg)
    assert [(c["check"], c["subject"], c["status"]) for c in got["checks"]] == [
        ("weights_moved", "sft1", "pass"),
        ("sft1_collapse", "sft1", "fail"),
        ("weights_moved", "sft2", "n/a"),
        ("world_model", "sft3", "pass"),
    ]
    assert got["status"] == "fail" and got["counts"] == {"pass": 2, "n/a": 1, "warn": 0, "fail": 1}


def test_world_model_fails_when_the_policy_searches_but_never_writes_an_observation():
    assert check_world_model("sft3", {"calls": 0, "search_calls": 97})["status"] == "fail"
    assert check_world_model("sft3", {"calls": 0, "search_calls": 0})["status"] == "warn"
    assert check_world_model("sft3", {"calls": 12, "search_calls": 30})["numbers"] == {"calls": 12, "search_calls": 30}
