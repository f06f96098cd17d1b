"""``python -m evaluate.frontier``: the simulated:real frontier (AutoCoA's claim that RL in a simulated
environment saves real interactions: 5:1 simulated:real reached 33.4 EM vs 33.9 with all-real RL) from its arms.

    python -m evaluate.frontier arms=[real-only,1to1,3to1,5to1,7to1,sim-only]          # DVC experiment names
    python -m evaluate.frontier arms=[runs/arms/real-only,runs/arms/5to1] source=folders  # copies of runs/

An arm is one run of the pipeline with one RL step budget ``train.rl.max_steps`` split between rl1 (the policy
writes its own observations) and rl2 (real search) by ``train.rl.rl1_fraction`` (``train.run``; the commands
are in docs/experiments/frontier.md). Its model is rl2's (rl1's when rl2 gets 0 steps: rl2 passes it on).

Per arm: the ratio and the steps of each stage, the real search queries RL used (``real_search_queries`` in
each stage's metrics, counted from the observations the search environment returned), the training-reward
trend of each stage that trained, held-out EM and F1 with 95% intervals, and the paired bootstrap difference
in EM against the reference arm (real-only) over the same questions. Writes ``out`` (Markdown), ``.json``
and ``.png`` (held-out EM against real search queries, one point per arm with its interval).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from coa import paths
from coa.config import cli
from coa.errors import entry_point
from evaluate.ablation import ArmsConfig, arm_file, scores, write_table

ARMS = ["real-only", "1to1", "3to1", "5to1", "7to1", "sim-only"]


@dataclass
class FrontierConfig(ArmsConfig):
    arms: list = field(
        default_factory=lambda: list(ARMS),
        metadata={"help": "DVC experiment names (source=dvc) or arm folders (source=folders)"},
    )
    reference: str = field(default="real-only", metadata={"help": "the arm every other is compared with (paired)"})
    out: str = field(
        default="docs/experiments/frontier_table.md", metadata={"help": "the Markdown table (+ .json, .png)"}
    )


def read_arm(arm: str, source: str) -> dict:
    """An arm's RL schedule, its two RL stages' metrics and its model's per-question rows."""
    schedule = yaml.safe_load(arm_file(arm, source, "params.yaml"))["train"].get("rl") or {}
    stages = {s: json.loads(arm_file(arm, source, f"{paths.train(s)}/metrics.json")) for s in ("rl1", "rl2")}
    rows = json.loads(arm_file(arm, source, f"{paths.evaluation('rl2')}/per_question.json"))
    return {"schedule": schedule, "stages": stages, "rows": rows}


def arm_row(name: str, arm: dict, reference: dict, dataset: str, resamples: int) -> dict:
    steps = {s: m["steps"] for s, m in arm["stages"].items()}
    return {
        "arm": name,
        "rl1_fraction": arm["schedule"].get("rl1_fraction"),
        "rl1_steps": steps["rl1"],
        "rl2_steps": steps["rl2"],
        "real_search_queries": sum(m.get("real_search_queries", 0) for m in arm["stages"].values()),
        "reward_trend": {s: m["reward_trend"] for s, m in arm["stages"].items() if "reward_trend" in m},
        **scores(arm["rows"], reference["rows"], dataset, resamples)[0],
    }


def frontier_table(
    arms: dict[str, dict], reference: str, dataset: str = "heldout", resamples: int = 2000
) -> list[dict]:
    return [arm_row(name, arm, arms[reference], dataset, resamples) for name, arm in arms.items()]


def as_markdown(rows: list[dict], reference: str) -> str:
    def ci(pair):
        return f"[{pair[0]:.2f}, {pair[1]:.2f}]"

    def trend(r):
        return (
            "; ".join(
                f"{s} {t['difference']:+.3f} {ci(t['ci95']) if 'ci95' in t else '(no interval)'}"
                if "difference" in t
                else f"{s} –"
                for s, t in r["reward_trend"].items()
            )
            or "–"
        )

    lines = [
        f"| arm | rl1:rl2 steps | real search queries | EM [95% CI] | F1 [95% CI] | EM − {reference} [95% CI] | "
        "reward trend (last − first quarter) | n |",
        "|---" * 8 + "|",
    ]
    for r in rows:
        d = r["em_diff_vs_reference"]
        lines.append(
            f"| {r['arm']} | {r['rl1_steps']}:{r['rl2_steps']} | {r['real_search_queries']} | "
            f"{r['em']:.3f} {ci(r['em_ci95'])} | {r['f1']:.3f} {ci(r['f1_ci95'])} | "
            f"{d['diff']:+.3f} {ci(d['ci95'])} | {trend(r)} | {r['n']} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for r in rows:
        low, high = r["em_ci95"]
        ax.errorbar(r["real_search_queries"], r["em"], yerr=[[r["em"] - low], [high - r["em"]]], fmt="o", capsize=3)
        ax.annotate(
            r["arm"], (r["real_search_queries"], r["em"]), fontsize=8, xytext=(4, 4), textcoords="offset points"
        )
    ax.set_xlabel("real search queries used by RL")
    ax.set_ylabel("held-out EM (95% CI)")
    ax.set_title("simulated:real frontier")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


@entry_point("evaluate.frontier")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(FrontierConfig, "frontier", sys.argv[1:] if argv is None else argv, __doc__)
    arms = {Path(a).name: read_arm(a, cfg.source) for a in cfg.arms}
    rows = frontier_table(arms, Path(cfg.reference).name, cfg.dataset, cfg.bootstrap)
    plot(rows, Path(cfg.out).with_suffix(".png"))
    write_table(cfg.out, as_markdown(rows, Path(cfg.reference).name), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
