"""The ablation table from hand-built arms (folders holding an arm's params.yaml and per-question rows)."""

from __future__ import annotations

import json

import pytest

from coa.config import build
from evaluate.ablation import AblationConfig, main


def _arm(root, name, chain, ems, stage="", hops=None):
    folder = root / name
    stage = stage or chain[-1]
    (folder / "runs/eval" / stage).mkdir(parents=True)
    (folder / "params.yaml").write_text(json.dumps({"train": {"chain": chain}}))
    rows = [
        {
            "question_id": f"q{i:03d}",
            "dataset": "heldout",
            "em": e,
            "f1": e,
            "n_actions": 1,
            "well_formed": 1.0,
            "qtype": "bridge",
            "hops": hops[i] if hops else None,
            "gold_retrieved": False,
        }
        for i, e in enumerate(ems)
    ]
    (folder / "runs/eval" / stage / "per_question.json").write_text(json.dumps(rows))
    return str(folder)


def test_ablation_table_against_sft2_alone(tmp_path):
    sft2 = _arm(tmp_path, "sft2-only", ["sft2"], [1.0] * 15 + [0.0] * 85)
    full = _arm(tmp_path, "full", ["sft1", "sft2", "sft3", "rl1", "rl2"], [1.0] * 20 + [0.0] * 80)
    out = tmp_path / "ablation.md"
    assert main([f"arms=[{sft2},{full}]", "source=folders", f"reference={sft2}", f"out={out}"]) == 0
    rows = {r["arm"]: r for r in json.loads(out.with_suffix(".json").read_text())}
    assert rows["sft2-only"]["em_diff_vs_reference"]["diff"] == 0.0
    assert rows["full"]["em_diff_vs_reference"]["diff"] == 0.05 and rows["full"]["em"] == 0.2
    table = out.read_text()
    assert "| full | sft1→sft2→sft3→rl1→rl2 | 0.200 [" in table and "| +0.050 [0.01, 0.10] |" in table


def test_the_reference_must_be_an_arm():
    with pytest.raises(ValueError, match="reference 'sft2-only' is not one of the arms"):
        build(AblationConfig, {"arms": ["full"]}, "test")


def test_one_stage_of_runs_that_differ_in_their_data_by_hops(tmp_path):
    """``stage=sft2`` reads that stage of full-chain runs; EM and the paired difference per hop count."""
    chain = ["sft1", "sft2", "sft3", "rl1", "rl2"]
    hops = [2] * 80 + [4] * 20
    base = _arm(tmp_path, "base", chain, [1.0] * 16 + [0.0] * 84, "sft2", hops)
    more = _arm(tmp_path, "composed", chain, [1.0] * 16 + [0.0] * 64 + [1.0] * 5 + [0.0] * 15, "sft2", hops)
    out = tmp_path / "by_hops.md"
    assert main([f"arms=[{base},{more}]", "source=folders", f"reference={base}", "stage=sft2", f"out={out}"]) == 0
    rows = {r["arm"]: r for r in json.loads(out.with_suffix(".json").read_text())}
    got = rows["composed"]
    assert (got["by_hops"]["2"]["em"], got["by_hops"]["4"]["em"], got["by_hops"]["4"]["n"]) == (0.2, 0.25, 20)
    assert got["em_diff_by_hops"]["2"]["diff"] == 0.0 and got["em_diff_by_hops"]["4"]["diff"] == 0.25
    assert got["em_diff_vs_reference"]["diff"] == 0.05
    assert "| 2-hop +0.000 [0.00, 0.00]; 4-hop +0.250 [" in out.read_text()
