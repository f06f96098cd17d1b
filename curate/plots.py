"""PNG plots of the error analysis (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def two_by_two(cells: dict, path: Path) -> Path:
    """Questions by CoT correct/incorrect (rows) × CoA correct/incorrect (columns)."""
    grid = [
        [cells["cot_right_coa_right"], cells["cot_right_coa_wrong"]],
        [cells["cot_wrong_coa_right"], cells["cot_wrong_coa_wrong"]],
    ]
    total = max(sum(map(sum, grid)), 1)
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.imshow(grid, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(
                j,
                i,
                f"{grid[i][j]}\n{100 * grid[i][j] / total:.0f}%",
                ha="center",
                va="center",
                fontsize=12,
                color="white" if grid[i][j] > total / 3 else "black",
            )
    ax.set_xticks([0, 1], ["CoA right", "CoA wrong"])
    ax.set_yticks([0, 1], ["CoT right", "CoT wrong"])
    ax.set_title(
        f"Questions by outcome (n={total})\n'CoT wrong, CoA right' → act pairs; the reverse → no-act pairs", fontsize=9
    )
    return _save(fig, path)


def success_by_actions(rows: list[dict], path: Path) -> Path:
    """Share correct by number of tool calls, with how many trajectories each bar holds."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = [str(r["n_calls"]) for r in rows]
    bars = ax.bar(xs, [r["success"] for r in rows], color="tab:green")
    for b, r in zip(bars, rows):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"n={r['rows']}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("tool calls in the trajectory")
    ax.set_ylabel("correct")
    ax.set_title("CoA success rate by number of actions")
    return _save(fig, path)


def first_action(rows: list[dict], path: Path) -> Path:
    """Where the first search call starts in the model-written text, and how often those trajectories are right."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = [r["bin"] for r in rows]
    ax.bar(xs, [r["rows"] for r in rows], color="tab:blue", alpha=0.7)
    ax.set_xlabel("position of the first search call (fraction of model-written text)")
    ax.set_ylabel("trajectories")
    ax2 = ax.twinx()
    ax2.plot(xs, [r["success"] for r in rows], "o-", color="tab:red")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("correct", color="tab:red")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.set_title("Where first actions happen")
    return _save(fig, path)


def drop_reasons(counts: dict, total: int, path: Path) -> Path:
    """Rows dropped per (first) reason."""
    items = sorted(counts.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(items) + 1.4))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:orange")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v} ({100 * v / max(total, 1):.1f}%)", va="center", fontsize=8)
    ax.set_xlabel("trajectories dropped (first reason)")
    ax.set_title(f"Why trajectories were dropped (of {total})")
    return _save(fig, path)


def calls_by_tool(rows: list[dict], path: Path) -> Path:
    """Per tool: the CoA trajectories that call it (bars, with their calls) and their success rate."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    xs = [r["tool"] for r in rows]
    bars = ax.bar(xs, [r["rows"] for r in rows], color="tab:blue", alpha=0.7)
    for b, r in zip(bars, rows):
        ax.text(
            b.get_x() + b.get_width() / 2, b.get_height(), f"{r['calls']} calls", ha="center", va="bottom", fontsize=8
        )
    ax.set_ylabel("CoA trajectories calling it")
    ax2 = ax.twinx()
    ax2.plot(xs, [r["success"] for r in rows], "o", color="tab:red")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("correct", color="tab:red")
    ax.set_title("Tools in the CoA trajectories" if rows else "Tools in the CoA trajectories (none called)")
    return _save(fig, path)
