"""``python -m evaluate.report``: the run on one page (``runs/report/report.md`` and its plots).

    python -m evaluate.report                       # after dvc repro; the `run_report` stage runs it
    python -m evaluate.report out=docs/default_run  # the committed copy of the default run
    python -m evaluate.report beside=DIR beside_label='search only'  # DIR: another run's metrics/eval_*.json

Sections: the machine, date, commit and the reproducibility settings (seeds, greedy decoding, serving
dtype); set sizes and synthesis statistics; the curation 2×2; the stage table (EM and F1 with 95%
intervals, searches, well-formed, n) with each stage's paired difference against the checkpoint it
started from; question-type and search-count breakdowns with retrieval coverage; searches per question
by type and hops and the bridge questions answered after two or more searches; when-to-act rates with
the n of each side; the goals (best trained EM, bridge EM and EM after two or more searches, the final stage's
searches per bridge question, later stages keeping SFT-2's EM, RL-2's paired interval against its start), each met
or missed by how much; world-model fidelity; each RL stage's reward on fixed training questions before vs
after; the failure-signature checks; the power statement. A missing input leaves its section saying so. The checks table is printed last, so ``dvc repro`` ends with it.
"""

from __future__ import annotations

import datetime
import json
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from coa import paths
from coa.config import cli, read_params
from coa.errors import entry_point
from coa.io import write_text
from coa.stats import bootstrap_ci, difference_sd, paired_difference, power_statement
from evaluate.checks import ChecksConfig, as_table
from evaluate.stats import compact_metrics
from coa.model import cpu_has_native_bf16
from coa.model import serving_dtype

# below it a model does not answer (the well_formed check's minimum): no goal counts it
MIN_WELL_FORMED = ChecksConfig().min_well_formed
# the checkpoint each evaluated model started from (its paired difference is taken against that row)
STARTED_FROM = {"sft1": "base", "sft2": "sft1", "sft3": "sft2", "rl1": "sft3", "rl2": "rl1"}


@dataclass
class ReportConfig:
    eval_root: str = field(default=paths.EVAL, metadata={"help": "one folder per evaluated model"})
    names: list = field(
        default_factory=lambda: ["base", "react", "sft1", "sft2", "sft3", "rl1", "rl2"],
        metadata={"help": "rows of the stage table, in order"},
    )
    dataset: str = field(default="heldout", metadata={"help": "the evaluation set of the stage table"})
    power_pair: list = field(
        default_factory=lambda: ["sft2", "sft3"],
        metadata={"help": "two models whose per-question differences give the sd of the power statement"},
    )
    fidelity: list = field(
        default_factory=list,
        metadata={"help": "probed models, in order (empty: every model with a fidelity.json under fidelity_root)"},
    )
    fidelity_root: str = field(default=paths.FIDELITY, metadata={"help": "evaluate.fidelity outputs"})
    reward_probe_root: str = field(default=paths.REWARD_PROBE, metadata={"help": "evaluate.reward_probe outputs"})
    when_to_act: str = field(default=paths.WHEN_TO_ACT, metadata={"help": "evaluate.when_to_act output"})
    checks: str = field(default=paths.CHECKS, metadata={"help": "evaluate.checks output"})
    curate_root: str = field(default=paths.CURATE, metadata={"help": "curate's step folders"})
    metrics_dir: str = field(default=paths.METRICS, metadata={"help": "synth_*.json copies"})
    bootstrap: int = field(default=2000, metadata={"help": "resamples of the paired intervals"})
    goal_em: float = field(default=0.25, metadata={"help": "goal: the best trained stage's held-out EM"})
    goal_bridge_searches: float = field(
        default=1.5, metadata={"help": "goal: a trained model's searches per bridge question"}
    )
    goal_rl: str = field(
        default="rl2", metadata={"help": "goal: this stage's paired EM interval against its start has lower bound >= 0"}
    )
    goal_bridge_em: float = field(
        default=0.15, metadata={"help": "goal: the best trained stage's EM on bridge questions"}
    )
    goal_bridge_multi_em: float = field(
        default=0.25,
        metadata={"help": "goal: the best trained stage's EM on bridge questions answered after two or more searches"},
    )
    goal_keep: str = field(
        default="sft2",
        metadata={
            "help": "goal: every trained stage after this one keeps its EM (paired lower bound >= -goal_keep_margin)"
        },
    )
    goal_keep_margin: float = field(
        default=0.02, metadata={"help": "goal: how far below goal_keep a lower bound may be"}
    )
    beside: str = field(default="", metadata={"help": "another run's metrics/eval_<name>.json folder, set beside"})
    beside_label: str = field(default="the other run", metadata={"help": "what the `beside` run is, in the report"})
    out: str = field(default=paths.REPORT, metadata={"help": "folder of report.md and its plots"})

    def __post_init__(self) -> None:
        for key in ("names", "power_pair", "fidelity"):  # folders under eval_root, fidelity_root
            for name in getattr(self, key):
                paths.file_name(name, key)


def read(path: str | Path) -> dict | list | None:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def ci(pair) -> str:
    return "[–]" if not pair else f"[{pair[0]:.2f}, {pair[1]:.2f}]"


def table(header: list[str], rows: list[list]) -> str:
    return (
        "\n".join(
            ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        )
        + "\n"
    )


def provenance() -> dict:
    """Machine, date and commit of this report, and the serving dtype evaluation used here."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "unknown"

    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    import os

    import torch

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        # the run itself rewrites dvc.lock and metrics/: only other changes make the commit not the code that ran
        "commit": git("rev-parse", "HEAD")
        + (
            " (uncommitted changes)"
            if git("status", "--porcelain", "--", ".", ":(exclude)dvc.lock", f":(exclude){paths.METRICS}")
            not in ("", "unknown")
            else ""
        ),
        "machine": f"{cpu}, {os.cpu_count()} cores, native bf16: {cpu_has_native_bf16()}, "
        f"CUDA: {torch.cuda.is_available()}, {platform.platform()}, torch {torch.__version__}",
        "serving_dtype": serving_dtype("auto"),
    }


def dataset_metrics(cfg: ReportConfig, name: str) -> dict | None:
    """A model's metrics on ``cfg.dataset`` (its ``metrics.json``), or None where it was not evaluated."""
    return ((read(Path(cfg.eval_root) / name / "metrics.json") or {}).get("datasets") or {}).get(cfg.dataset)


def stage_rows(cfg: ReportConfig) -> tuple[list[list], dict]:
    """The stage table's rows, and every model's per-question rows of ``cfg.dataset`` by question id."""
    per_q, rows = {}, []
    for name in cfg.names:
        metrics = read(Path(cfg.eval_root) / name / "metrics.json")
        questions = read(Path(cfg.eval_root) / name / "per_question.json") or []
        per_q[name] = {r["question_id"]: r for r in questions if r["dataset"] == cfg.dataset}
        m = (metrics or {}).get("datasets", {}).get(cfg.dataset)
        if m is None:
            rows.append([name, "not evaluated"] + [""] * 6)
            continue
        start = STARTED_FROM.get(name)
        diff = "–"
        if start and per_q.get(start) and per_q[name]:
            ids = sorted(per_q[name].keys() & per_q[start].keys())
            d = paired_difference(
                [per_q[start][i]["em"] for i in ids], [per_q[name][i]["em"] for i in ids], cfg.bootstrap
            )
            diff = f"{d['diff']:+.3f} {ci(d['ci95'])} vs {start}"
        rows.append(
            [
                f"{name} ({metrics['style']})",
                f"{m['em']:.3f} {ci(m.get('em_ci95'))}",
                f"{m['f1']:.3f} {ci(m.get('f1_ci95'))}",
                diff,
                fmt(m.get("autocoa_lenient")),
                fmt(m["mean_actions"], 2),
                fmt(m["well_formed"], 2),
                m["n"],
            ]
        )
    return rows, per_q


def breakdown_rows(cfg: ReportConfig) -> list[list]:
    rows = []
    for name in cfg.names:
        m = dataset_metrics(cfg, name) or {}
        groups = [f"{k} {v['em']:.2f} (n={v['n']})" for k, v in (m.get("by_qtype") or {}).items()]
        hops = [f"{k}-hop {v['em']:.2f} (n={v['n']})" for k, v in (m.get("by_hops") or {}).items()]
        searches = [f"{k}: {v['em']:.2f} (n={v['n']})" for k, v in (m.get("by_searches") or {}).items()]
        coverage = m.get("retrieval_coverage") or {}
        evidence = m.get("evidence_found") or {}
        rows.append(
            [
                name,
                "; ".join(groups + hops) or "–",
                "; ".join(searches) or "–",
                f"{fmt(coverage.get('rate'), 2)} (n={coverage.get('n', 0)})",
                f"{fmt(evidence.get('mean'), 2)}, all {fmt(evidence.get('all'), 2)} (n={evidence.get('n', 0)})",
            ]
        )
    return rows


def tool_rows(cfg: ReportConfig) -> list[list]:
    """Per model and tool: calls per question, questions that called it and the success rate of its calls
    (``evaluate.stats.tool_use``); empty when every model only searched (the search-only run's table above
    already has its calls)."""
    per_model = {name: (dataset_metrics(cfg, name) or {}).get("tools") or {} for name in cfg.names}
    if not any(set(tools) - {"search"} for tools in per_model.values()):
        return []
    return [
        [name, tool, f"{v['calls_per_question']:.2f}", f"{v['questions_using']} of {v['n']}", fmt(v["success_rate"], 2)]
        for name, tools in per_model.items()
        for tool, v in tools.items()
    ]


def beside_rows(cfg: ReportConfig) -> list[list]:
    """Per model, this run then the ``beside`` run (their ``metrics/eval_<name>.json``): EM with its interval,
    EM on bridge and on comparison questions, and calls per question of each tool."""

    def cells(m: dict) -> list[str]:
        by_type = m.get("em_by_qtype") or {}
        tools = m.get("tools") or {}
        return [
            f"{m['em']:.3f} {ci(m['em_ci95'] and [m['em_ci95']['low'], m['em_ci95']['high']])}",
            *(
                f"{by_type[g]['em']:.3f} (n={by_type[g]['n']})" if g in by_type else "–"
                for g in ("bridge", "comparison")
            ),
            "; ".join(f"{t} {v['calls_per_question']:.2f}" for t, v in tools.items()) or "none",
        ]

    rows = []
    for name in cfg.names:
        here = dataset_metrics(cfg, name)
        there = ((read(Path(cfg.beside) / f"eval_{name}.json")) or {}).get(cfg.dataset)
        for label, m in (("this run", compact_metrics({"d": here})["d"] if here else None), (cfg.beside_label, there)):
            rows.append([name, label, *(cells(m) if m else ["not evaluated", "", "", ""])])
    return rows


def behaviour_rows(cfg: ReportConfig) -> list[list]:
    """Per model: searches per question (all, bridge, comparison, by hops) and the bridge questions answered
    after two or more searches, with EM on those, each with its n (``evaluate.stats``)."""

    def searches(v: dict | None) -> str:
        return "–" if not v or v.get("mean") is None else f"{v['mean']:.2f} {ci(v.get('ci95'))} (n={v['n']})"

    rows = []
    for name in cfg.names:
        m = dataset_metrics(cfg, name) or {}
        if "searches" not in m:  # evaluated before these breakdowns existed
            rows.append([name, "not measured"] + [""] * 5)
            continue
        by_type = m.get("searches_by_qtype") or {}
        hops = "; ".join(f"{k}-hop {v['mean']:.2f} (n={v['n']})" for k, v in (m.get("searches_by_hops") or {}).items())
        multi = m.get("bridge_multi_search") or {}
        rows.append(
            [
                name,
                searches(m["searches"]),
                searches(by_type.get("bridge")),
                searches(by_type.get("comparison")),
                hops or "–",
                f"{fmt(multi.get('rate'), 2)} {ci(multi.get('ci95'))} ({multi.get('answered', 0)} of "
                f"n={multi.get('n', 0)})",
                f"{fmt(multi.get('em'), 2)} (n={multi.get('em_n', 0)})",
            ]
        )
    return rows


def goal_rows(cfg: ReportConfig, per_q: dict) -> list[list]:
    """The method's goals against this run, each met or missed by how much: the best trained stage's EM, its EM
    on bridge questions and on bridge questions answered after two or more searches; the final stage's searches
    per bridge question (the most of any answering model beside it); every stage after ``goal_keep`` keeping its EM;
    ``goal_rl``'s paired EM interval against its start."""
    metrics = {name: dataset_metrics(cfg, name) for name in cfg.names if name in STARTED_FROM}
    metrics = {name: m for name, m in metrics.items() if m}
    if not metrics:
        return [["every goal", "–", "no trained stage evaluated", "unmeasured"]]

    def verdict(value: float, goal: float) -> str:
        return "met" if value >= goal else f"missed by {goal - value:.3f}"

    def paired(before: str, after: str) -> tuple[dict, int]:
        ids = sorted(per_q[after].keys() & per_q[before].keys())
        return paired_difference(
            [per_q[before][i]["em"] for i in ids], [per_q[after][i]["em"] for i in ids], cfg.bootstrap
        ), len(ids)

    def best_of(label: str, goal: float, values: dict[str, tuple]) -> list:
        """The best model's (em, n) of ``values`` against ``goal``; every model's beside it."""
        values = {n: v for n, v in values.items() if v[0] is not None}
        if not values:
            return [f"{label} ≥ {goal}", "–", "none answered", "unmeasured"]
        top = max(values, key=lambda n: values[n][0])
        return [
            f"{label} ≥ {goal}",
            f"{top}: {values[top][0]:.3f} (n={values[top][1]})",
            "; ".join(f"{n} {em:.3f} (n={k})" for n, (em, k) in values.items()),
            verdict(values[top][0], goal),
        ]

    rows = []
    best = max(metrics, key=lambda n: metrics[n]["em"])
    em = metrics[best]["em"]
    rows.append(
        [
            f"best trained stage's EM ≥ {cfg.goal_em}",
            f"{best}: {em:.3f} {ci(metrics[best].get('em_ci95'))}",
            f"n = {metrics[best]['n']}",
            verdict(em, cfg.goal_em),
        ]
    )
    by_bridge = {n: (m.get("by_qtype") or {}).get("bridge") or {} for n, m in metrics.items()}
    rows.append(
        best_of(
            "EM on bridge questions", cfg.goal_bridge_em, {n: (b.get("em"), b.get("n")) for n, b in by_bridge.items()}
        )
    )
    multi = {n: m.get("bridge_multi_search") or {} for n, m in metrics.items()}
    rows.append(
        best_of(
            "EM on bridge questions answered after ≥ 2 searches",
            cfg.goal_bridge_multi_em,
            {n: (b.get("em"), b.get("em_n")) for n, b in multi.items()},
        )
    )
    bridge = {n: ((m.get("searches_by_qtype") or {}).get("bridge") or {}).get("mean") for n, m in metrics.items()}
    bridge = {n: v for n, v in bridge.items() if v is not None}
    # a model that searches to its budget and never answers does not count: searching is the means, not the goal
    answering = {n: v for n, v in bridge.items() if metrics[n].get("well_formed", 1.0) >= MIN_WELL_FORMED}
    final = [n for n in cfg.names if n in metrics][-1]
    label = f"searches per bridge question ≥ {cfg.goal_bridge_searches} in the final stage ({final})"
    if final in answering:
        most = max(answering, key=answering.get)
        rows.append(
            [
                label,
                f"{final}: {bridge[final]:.2f}"
                + (f" (most: {most} {bridge[most]:.2f})" if bridge[most] > bridge[final] else ""),
                "; ".join(
                    f"{n} {v:.2f}" + ("" if n in answering else f" (well-formed {metrics[n]['well_formed']:.2f})")
                    for n, v in bridge.items()
                ),
                verdict(bridge[final], cfg.goal_bridge_searches),
            ]
        )
    else:
        rows.append([label, "–", f"{final} does not answer" if final in bridge else "not measured", "unmeasured"])
    keep = cfg.goal_keep
    later = cfg.names[cfg.names.index(keep) + 1 :] if keep in cfg.names else []
    kept = {n: paired(keep, n)[0] for n in later if n in STARTED_FROM and per_q.get(n) and per_q.get(keep)}
    label = f"every stage after {keep} keeps its EM: paired lower bound ≥ −{cfg.goal_keep_margin}"
    if kept:
        worst = min(kept, key=lambda n: kept[n]["ci95"][0])
        rows.append(
            [
                label,
                f"{worst}: {kept[worst]['diff']:+.3f} {ci(kept[worst]['ci95'])}",
                "; ".join(f"{n} {d['diff']:+.3f} {ci(d['ci95'])}" for n, d in kept.items()),
                verdict(kept[worst]["ci95"][0], -cfg.goal_keep_margin),
            ]
        )
    else:
        rows.append([label, "–", "not evaluated", "unmeasured"])
    start = STARTED_FROM.get(cfg.goal_rl)
    if start and per_q.get(start) and per_q.get(cfg.goal_rl):
        d, n = paired(start, cfg.goal_rl)
        low = d["ci95"][0]
        rows.append(
            [
                f"{cfg.goal_rl} − {start} paired EM: lower bound ≥ 0",
                f"{d['diff']:+.3f} {ci(d['ci95'])}",
                f"n = {n}",
                "met" + (" (> 0: the moonshot)" if low > 0 else "") if low >= 0 else verdict(low, 0.0),
            ]
        )
    else:
        rows.append([f"{cfg.goal_rl} against its start", "–", "not evaluated", "unmeasured"])
    return rows


def plot_stages(rows: list[list], per_q: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in per_q if per_q[n]]
    if not names:
        return False
    ems = [[r["em"] for r in per_q[n].values()] for n in names]
    means = [sum(e) / len(e) for e in ems]
    cis = [bootstrap_ci(e) for e in ems]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(
        names,
        means,
        yerr=[[m - c[0] for m, c in zip(means, cis)], [c[1] - m for m, c in zip(means, cis)]],
        capsize=4,
        color="#4c72b0",
    )
    ax.set_ylabel("exact match (95% CI)")
    ax.set_title("held-out EM by stage")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# what each stage's learning curve plots from its steps.csv (RL: the training reward, and the held-out and pool
# rewards where the stage measured them, train.rl*.heldout_reward_every)
CURVES = {"sft1": ["loss"], "sft2": ["loss"], "sft3": ["loss"], "rl1": ["reward"], "rl2": ["reward"]}
HELDOUT_CURVES = ["heldout_reward", "pool_reward"]


def read_steps(path: Path) -> list[dict]:
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_learning_curves(metrics_dir: str | Path, path: Path) -> bool:
    """One panel per trained stage: its loss (SFT) or reward (RL) per optimizer step, and for RL the held-out
    and pool rewards on the steps they were measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = {stage: read_steps(Path(metrics_dir) / f"train_{stage}_steps.csv") for stage in CURVES}
    steps = {stage: rows for stage, rows in steps.items() if rows}
    if not steps:
        return False
    fig, axes = plt.subplots(1, len(steps), figsize=(3.2 * len(steps), 2.8), squeeze=False)
    for ax, (stage, rows) in zip(axes[0], steps.items()):
        for column in CURVES[stage] + (HELDOUT_CURVES if stage.startswith("rl") else []):
            points = [(int(r["step"]), float(r[column])) for r in rows if r.get(column) not in (None, "")]
            if len(points) > 30:  # a long stage: the raw steps faint, their running mean over ~5% of them
                x, y = zip(*points)
                ax.plot(x, y, alpha=0.3, linewidth=0.8)
                w = max(2, len(y) // 20)
                ax.plot(
                    x[w - 1 :],
                    [sum(y[i - w + 1 : i + 1]) / w for i in range(w - 1, len(y))],
                    label=f"{column} (mean of {w})",
                )
            elif points:
                ax.plot(*zip(*points), marker="o" if column != CURVES[stage][0] else "", markersize=3, label=column)
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def trend_cell(trend: dict | None) -> str:
    """An RL stage's reward trend (``train.checkpoint.reward_trend``) as one cell; '–' for a stage without rewards."""
    if not trend:
        return "–"
    if "difference" not in trend:
        return trend.get("note", "–")
    interval = ci(trend["ci95"]) if "ci95" in trend else f"({trend['note']})"
    return f"{trend['first_quarter']:.3f} → {trend['last_quarter']:.3f}: {trend['difference']:+.3f} {interval}"


def build_report(cfg: ReportConfig) -> str:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    params = read_params() or {}
    where = provenance()
    temperature = (params.get("evaluate") or {}).get("temperature", 0.0)
    parts = [
        "# Run report\n",
        f"- date: {where['date']}\n- commit: `{where['commit']}`\n- machine: {where['machine']}\n",
        f"- reproducibility: evaluation {'greedy (temperature 0)' if not temperature else f'temperature {temperature}'}; "
        f"serving dtype here: {where['serving_dtype']} (vLLM `auto`; `engine=hf` runs float32); seeds: split "
        f"{(params.get('split') or {}).get('seed', 0)}, curate {(params.get('curate') or {}).get('seed', 0)}, "
        f"train 42 (TRL data order and sampling), bootstrap 0. Numbers from another serving dtype differ: "
        f"compare runs only with the same dtype.\n",
    ]
    data = params.get("data") or {}
    if data:  # what the run was trained and evaluated on (params.yaml `data`, which dvc.yaml reads)
        parts.append(f"- data: questions `{data.get('questions')}`, corpus `{data.get('corpus')}`\n")

    parts.append("\n## Data\n")
    synth = {p.stem: read(p) for p in sorted(Path(cfg.metrics_dir).glob("synth_*.json"))}
    if synth:
        parts.append(
            table(
                ["synthesis", "rows", "EM", "well-formed", "searches / row"],
                [
                    [
                        k,
                        s["dataset"]["rows"],
                        fmt(s["dataset"].get("em")),
                        fmt(s["dataset"].get("well_formed"), 2),
                        fmt(s["dataset"].get("searches_per_row"), 2),
                    ]
                    for k, s in synth.items()
                ],
            )
        )
    sets = read(Path(cfg.curate_root) / "sets" / "metrics.json")
    if sets:
        parts.append(
            "\n"
            + table(
                ["set", "asked", "written", "questions"],
                [
                    [n, sets[n]["asked"], sets[n]["written"], sets[n]["questions"]]
                    for n in ("pairs", "coa", "cot")
                    if n in sets
                ],
            )
        )
    analyze = read(Path(cfg.curate_root) / "analyze" / "metrics.json")
    if analyze:
        g = analyze["two_by_two"]
        parts.append(
            f"\nCuration 2×2 over {g['questions']} questions (CoT × CoA right/wrong):\n\n"
            + table(
                ["", "CoA right", "CoA wrong"],
                [
                    ["CoT right", g["cot_right_coa_right"], g["cot_right_coa_wrong"]],
                    ["CoT wrong", g["cot_wrong_coa_right"], g["cot_wrong_coa_wrong"]],
                ],
            )
        )
        png = Path(cfg.curate_root) / "analyze" / "two_by_two.png"
        if png.exists() and png.resolve() != (out / png.name).resolve():
            shutil.copy(png, out / png.name)
            parts.append(f"\n![2×2]({png.name})\n")

    parts.append("\n## Training\n\n")
    trained = {stage: read(Path(cfg.metrics_dir) / f"train_{stage}.json") for stage in STARTED_FROM}
    parts.append(
        table(
            [
                "stage",
                "steps",
                "s / step",
                "peak RSS GB",
                "reward: last − first quarter of steps [95% CI]",
                "real search queries",
            ],
            [
                [
                    stage,
                    m.get("steps"),
                    fmt(m.get("seconds_per_step"), 1),
                    fmt(m.get("peak_rss_gb"), 2),
                    trend_cell(m.get("reward_trend")),
                    m.get("real_search_queries", "–"),
                ]
                for stage, m in trained.items()
                if m
            ],
        )
        if any(trained.values())
        else f"{cfg.metrics_dir}: no train_*.json found.\n"
    )
    if plot_learning_curves(cfg.metrics_dir, out / "learning_curves.png"):
        parts.append("\n![learning curves: loss or reward per step](learning_curves.png)\n")

    parts.append(f"\n## Stages ({cfg.dataset})\n\n")
    rows, per_q = stage_rows(cfg)
    parts.append(
        table(
            [
                "model",
                "EM [95% CI]",
                "F1 [95% CI]",
                "EM paired diff [95% CI]",
                "lenient",
                "searches",
                "well-formed",
                "n",
            ],
            rows,
        )
    )
    if plot_stages(rows, per_q, out / "em_by_stage.png"):
        parts.append("\n![EM by stage](em_by_stage.png)\n")
    a, b = cfg.power_pair
    if per_q.get(a) and per_q.get(b):
        ids = sorted(per_q[a].keys() & per_q[b].keys())
        sd = difference_sd([per_q[a][i]["em"] for i in ids], [per_q[b][i]["em"] for i in ids])
        parts.append("\n**Power.** " + power_statement(len(ids), sd, f"observed between {a} and {b}")["text"] + "\n")
    parts.append(
        "\n**Goals** (the learning issue's; trained stages only):\n\n"
        + table(["goal", "best", "every trained stage / n", "verdict"], goal_rows(cfg, per_q))
    )
    parts.append(
        "\n"
        + table(
            ["model", "EM by question type / hops", "EM by searches", "retrieval coverage", "evidence passages found"],
            breakdown_rows(cfg),
        )
    )
    parts.append(
        "\nSearches per question and multi-step answers (the behaviour the method is for):\n\n"
        + table(
            [
                "model",
                "searches / question",
                "per bridge question",
                "per comparison question",
                "by hops",
                "bridge answered after ≥ 2 searches",
                "EM on those",
            ],
            behaviour_rows(cfg),
        )
    )
    tools = tool_rows(cfg)
    if tools:
        parts.append(
            "\nTool calls per question and the share that ran cleanly (refused or failed calls count against it):\n\n"
            + table(["model", "tool", "calls / question", "questions using it", "success rate"], tools)
        )

    if cfg.beside:
        parts.append(
            f"\nBeside {cfg.beside_label} (`{cfg.beside}`; unpaired: each run's own interval):\n\n"
            + table(
                ["model", "run", "EM [95% CI]", "EM bridge", "EM comparison", "calls / question by tool"],
                beside_rows(cfg),
            )
        )

    parts.append("\n## When to act (held-out decision points)\n\n")
    when = read(cfg.when_to_act)
    if when:
        source = when["points"].get("source", "pairs")
        parts.append(
            f"Points ({source}): n = {when['points']['needed']} where search was needed (under-trigger's "
            f"denominator), n = {when['points']['sufficed']} where memory sufficed (over-trigger's).\n\n"
            + "".join(f"- {note}\n" for note in when.get("notes", []))
            + ("\n" if when.get("notes") else "")
            + table(
                ["model", "search when needed", "under-trigger", "answer when memory sufficed", "over-trigger"],
                [
                    [n]
                    + [
                        f"{fmt(r[k]['rate'], 2)} {ci(r[k]['ci95'])} (n={r[k]['n']})"
                        for k in ("search_when_needed", "under_trigger", "answer_when_sufficed", "over_trigger")
                    ]
                    for n, r in when["models"].items()
                ],
            )
        )
        per_tool = [
            [n, tool]
            + [
                f"{fmt(r[k]['rate'], 2)} (n={r[k]['n']})"
                for k in ("search_when_needed", "under_trigger", "answer_when_sufficed", "over_trigger")
            ]
            for n, m in when["models"].items()
            for tool, r in (m.get("by_tool") or {}).items()
        ]
        if per_tool:
            parts.append(
                "\nPer tool (each tool's points; acting = calling that tool):\n\n"
                + table(
                    [
                        "model",
                        "tool",
                        "acts when needed",
                        "under-trigger",
                        "answers when memory sufficed",
                        "over-trigger",
                    ],
                    per_tool,
                )
            )
    else:
        parts.append(f"{cfg.when_to_act} not found.\n")

    parts.append("\n## World-model fidelity (the policy writes its observations)\n\n")
    probed = cfg.fidelity or sorted(
        (p.parent.name for p in Path(cfg.fidelity_root).glob("*/fidelity.json")),
        key=lambda n: (cfg.names.index(n) if n in cfg.names else len(cfg.names), n),
    )
    fid = {n: read(Path(cfg.fidelity_root) / n / "fidelity.json") for n in probed}
    keys = (
        "in_document_form",
        "titles_in_corpus",
        "titles_in_topk",
        "gold_in_written",
        "gold_in_real",
        "hallucination",
    )
    unmeasured = {"rate": None, "n": 0}  # probes written before a rate existed
    parts.append(
        table(
            ["model", "search calls", "with a written observation", *keys, "observation F1"],
            [
                [
                    n,
                    fmt(f.get("search_calls")),
                    f["calls"],
                    *(f"{fmt(f.get(k, unmeasured)['rate'], 2)} (n={f.get(k, unmeasured)['n']})" for k in keys),
                    fmt(f["observation_f1"]["mean"], 2),
                ]
                if f
                else [n, "not probed"] + [""] * 8
                for n, f in fid.items()
            ],
        )
    )
    parts += [f"\n{n}: {f['note']}\n" for n, f in fid.items() if f and f.get("note")]
    other = [
        [n, tool, v["calls"], v["refused"]]
        + [f"{fmt(v[k]['rate'], 2)} (n={v[k]['n']})" for k in ("exact", "gold_in_written", "gold_in_real")]
        + [fmt(v["result_f1"]["mean"], 2)]
        for n, f in fid.items()
        if f
        for tool, v in (f.get("by_tool") or {}).items()
    ]
    if other:
        parts.append(
            "\nOther tools: the results the policy wrote against the real tool on the same arguments:\n\n"
            + table(
                ["model", "tool", "calls", "refused", "exact", "gold in written", "gold in real", "result F1"], other
            )
        )

    parts.append("\n## RL reward on fixed training questions (before vs after each RL stage)\n\n")
    probes = {p.parent.name: read(p) for p in sorted(Path(cfg.reward_probe_root).glob("*/reward_probe.json"))}
    parts.append(
        table(
            [
                "stage",
                "environment",
                "questions x samples",
                "reward before",
                "reward after",
                "difference [95% CI]",
                "correctness difference [95% CI]",
                "searches before / after",
            ],
            [
                [
                    name,
                    p["tools"],
                    f"{p['n_questions']} x {p['samples']}",
                    fmt(p["models"]["before"]["reward"]),
                    fmt(p["models"]["after"]["reward"]),
                    f"{fmt(p['difference']['diff'])} {ci(p['difference']['ci95'])}",
                    f"{fmt(p['correctness_difference']['diff'])} {ci(p['correctness_difference']['ci95'])}",
                    f"{fmt(p['models']['before']['search_calls'], 2)} / {fmt(p['models']['after']['search_calls'], 2)}",
                ]
                for name, p in probes.items()
            ],
        )
        if probes
        else f"{cfg.reward_probe_root}: no probe found.\n"
    )

    parts.append("\n## Checks\n\n")
    checks = read(cfg.checks)
    parts.append(as_table(checks) if checks else f"{cfg.checks} not found.\n")
    page = "".join(parts)
    write_text(out / "report.md", page)
    return page


@entry_point("evaluate.report")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(ReportConfig, "report", sys.argv[1:] if argv is None else argv, __doc__)
    build_report(cfg)
    checks = read(cfg.checks)
    print(f"report: {Path(cfg.out) / 'report.md'}")
    if checks:
        print(as_table(checks))  # the last thing dvc repro prints
    return 0


if __name__ == "__main__":
    sys.exit(main())
