"""The simulated:real frontier table and plot from hand-built arms (params.yaml, the RL stages' metrics and the
arm model's per-question rows)."""

from __future__ import annotations

import json

from evaluate.frontier import main


def _arm(root, name, fraction, steps, queries, ems):
    folder = root / name
    for stage, n, q in zip(("rl1", "rl2"), steps, queries):
        (folder / "runs/train" / stage).mkdir(parents=True)
        metrics = {"stage": stage, "steps": n, "real_search_queries": q}
        if n >= 4:
            metrics["reward_trend"] = {"difference": 0.1, "ci95": [0.02, 0.18]}
        (folder / "runs/train" / stage / "metrics.json").write_text(json.dumps(metrics))
    (folder / "params.yaml").write_text(
        json.dumps({"train": {"rl": {"max_steps": sum(steps), "rl1_fraction": fraction}}})
    )
    (folder / "runs/eval/rl2").mkdir(parents=True)
    rows = [{"question_id": f"q{i:03d}", "dataset": "heldout", "em": e, "f1": e} for i, e in enumerate(ems)]
    (folder / "runs/eval/rl2/per_question.json").write_text(json.dumps(rows))
    return str(folder)


def test_frontier_counts_real_queries_and_compares_against_real_only(tmp_path):
    real = _arm(tmp_path, "real-only", 0.0, (0, 12), (0, 96), [1.0] * 20 + [0.0] * 80)
    five = _arm(tmp_path, "5to1", 5 / 6, (10, 2), (0, 17), [1.0] * 18 + [0.0] * 82)
    sim = _arm(tmp_path, "sim-only", 1.0, (12, 0), (0, 0), [1.0] * 10 + [0.0] * 90)
    out = tmp_path / "frontier.md"
    assert main([f"arms=[{real},{five},{sim}]", "source=folders", f"reference={real}", f"out={out}"]) == 0
    rows = {r["arm"]: r for r in json.loads(out.with_suffix(".json").read_text())}
    assert [rows[a]["real_search_queries"] for a in ("real-only", "5to1", "sim-only")] == [96, 17, 0]
    assert rows["5to1"]["em"] == 0.18 and rows["5to1"]["em_diff_vs_reference"]["diff"] == -0.02
    assert rows["sim-only"]["em_diff_vs_reference"]["diff"] == -0.1
    assert set(rows["real-only"]["reward_trend"]) == {"rl2"}  # only stages with >= 4 steps have a trend
    table = out.read_text()
    assert "| 5to1 | 10:2 | 17 | 0.180 [" in table
    assert out.with_suffix(".png").stat().st_size > 1000
