"""``python -m evaluate.checks``: failure signatures of a run, each pass / warn / fail with its numbers.

    python -m evaluate.checks                          # runs/report/checks.json, printed as a table
    python -m evaluate.checks out=checks.json stages=[sft2,sft3]

Checks (each a small function over what the stages already write; ``n/a`` when its input is absent):

  weights_moved      a trained stage's saved weights differ from the checkpoint it started from
                     (``metrics.json``'s ``start_model``; a stage that passed its start through is n/a)
  sft1_collapse      SFT-1's chosen and rejected log-probs both fell (first vs last third of the logged
                     steps): the contrastive loss pushed both branches down, the paper's named failure
  rl_reward_spread   an RL stage where most steps had zero reward spread in every group
                     (``frac_reward_zero_std`` = 1: no advantage, no update)
  well_formed        a trained model (style=trained) wrote well-formed trajectories on < ``min_well_formed``
  set_size           a curated set is empty (fail) or below ``min_set_fraction`` of its target ``curate.n_*``
  over_triggering    a model searched at a decision point where memory sufficed more than ``max_over_trigger``
                     of the time (``when_to_act.json``)
  metric_applies     a metric that cannot apply to the evaluation's format is reported as n/a, never as a number
  world_model        the fidelity probe (``runs/fidelity/<model>/fidelity.json``): a model that searched in the
                     simulated environment but wrote no observation after any call has no world model, and
                     RL-1 on it trains on trajectories without observations (fail); no search call at all: warn
  rl_reward_moved    an RL stage's reward on fixed training prompts, after vs before the stage
                     (``runs/reward_probe/<stage>/reward_probe.json``): pass when the paired 95% interval is
                     above 0, fail when it is below 0 (the stage lowered the reward it trained on), warn otherwise

``checks.json``: ``{"status": worst of all, "counts": {...}, "checks": [{check, subject, status, numbers,
message}]}``. The exit code is 0 whatever the checks say: the checks report, ``dvc repro`` goes on.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from coa import paths
from coa.config import cli
from coa.errors import entry_point
from coa.formats import FORMAT
from coa.io import write_json
from coa.model import base_model_dir
from coa.score import METRICS, applies
from coa.stages import PREVIOUS

STATUSES = ("pass", "n/a", "warn", "fail")  # in order of severity


@dataclass
class ChecksConfig:
    runs_dir: str = field(default=paths.TRAIN, metadata={"help": "the training stages' folders"})
    stages: list = field(
        default_factory=lambda: ["sft1", "sft2", "sft3", "rl1", "rl2"], metadata={"help": "training stages to check"}
    )
    eval_root: str = field(default=paths.EVAL, metadata={"help": "one folder per evaluated model"})
    names: list = field(
        default_factory=lambda: ["base", "react", "sft1", "sft2", "sft3", "rl1", "rl2"],
        metadata={"help": "evaluated models to check"},
    )
    sets_metrics: str = field(
        default=f"{paths.curate('sets')}/metrics.json", metadata={"help": "curate's sets metrics"}
    )
    when_to_act: str = field(default=paths.WHEN_TO_ACT, metadata={"help": "evaluate.when_to_act output"})
    fidelity_root: str = field(
        default=paths.FIDELITY, metadata={"help": "evaluate.fidelity outputs, one folder per model"}
    )
    reward_probe_root: str = field(
        default=paths.REWARD_PROBE, metadata={"help": "evaluate.reward_probe outputs, one folder per RL stage"}
    )
    format: str = field(default=FORMAT, metadata={"help": "format preset (params.yaml's top-level format)"})
    min_well_formed: float = field(default=0.5, metadata={"help": "a trained model below this share fails"})
    max_zero_spread_steps: float = field(
        default=0.5, metadata={"help": "RL fails when more steps than this share had zero reward spread in every group"}
    )
    min_set_fraction: float = field(default=0.5, metadata={"help": "a set below this share of its target warns"})
    max_over_trigger: float = field(default=0.5, metadata={"help": "searching when memory sufficed above this fails"})
    out: str = field(default=paths.CHECKS, metadata={"help": "where checks.json goes"})

    def __post_init__(self) -> None:
        for key in ("stages", "names"):  # folders under runs_dir, eval_root
            for name in getattr(self, key):
                paths.file_name(name, key)


def result(check: str, subject: str, status: str, message: str, **numbers) -> dict:
    return {"check": check, "subject": subject, "status": status, "numbers": numbers, "message": message}


def read_steps(path: Path) -> list[dict]:
    """``steps.csv`` of a stage as rows of floats (empty cells dropped)."""
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


# ---- training ----------------------------------------------------------------------------------
def weight_change(start: Path, trained: Path) -> dict:
    """Tensors that differ between two safetensors checkpoints and the relative L2 change ||Δ|| / ||w0||,
    compared in float32 (a bf16 start saved again in fp32 is the same weights)."""
    import torch
    from safetensors import safe_open

    def tensors(folder: Path):
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), "pt") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key).to(torch.float32)

    before = dict(tensors(start))
    changed = compared = 0
    delta = norm = 0.0
    for key, w in tensors(trained):
        if key not in before or before[key].shape != w.shape:
            continue
        d = (w - before[key]).norm().item()
        compared += 1
        changed += d > 0
        delta += d**2
        norm += before[key].norm().item() ** 2
    return {
        "tensors": compared,
        "changed_tensors": changed,
        "relative_change": (delta**0.5) / (norm**0.5) if norm else 0.0,
    }


def check_weights_moved(stage: str, folder: Path, start: Path | None) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    if "skipped" in metrics:
        return result("weights_moved", stage, "n/a", f"passed its start through ({metrics['skipped']})")
    if start is None or not any(start.glob("*.safetensors")):
        return result("weights_moved", stage, "n/a", f"start checkpoint {start} not found")
    numbers = weight_change(start, folder)
    shown = metrics.get("start_model") or start  # as train.run recorded it (no machine's absolute path)
    if not numbers["tensors"]:
        return result("weights_moved", stage, "fail", f"no tensor of {folder} matches {shown}", **numbers)
    moved = numbers["changed_tensors"] > 0
    return result(
        "weights_moved",
        stage,
        "pass" if moved else "fail",
        f"{numbers['changed_tensors']}/{numbers['tensors']} tensors changed from {shown}"
        if moved
        else f"saved weights are identical to {shown}",
        **numbers,
    )


def first_and_last(values: list[float]) -> tuple[float, float]:
    """Means of the first and the last third (at least one value each): per-step logs are noisy."""
    k = max(1, len(values) // 3)
    return sum(values[:k]) / k, sum(values[-k:]) / k


def check_sft1_collapse(rows: list[dict]) -> dict:
    chosen = [r["logps/chosen"] for r in rows if "logps/chosen" in r and "logps/rejected" in r]
    rejected = [r["logps/rejected"] for r in rows if "logps/chosen" in r and "logps/rejected" in r]
    if len(chosen) < 2:
        return result("sft1_collapse", "sft1", "n/a", f"{len(chosen)} logged steps with chosen/rejected log-probs")
    c0, c1 = first_and_last(chosen)
    r0, r1 = first_and_last(rejected)
    numbers = {"steps": len(chosen), "chosen_first": c0, "chosen_last": c1, "rejected_first": r0, "rejected_last": r1}
    if c1 < c0 and r1 < r0:
        return result("sft1_collapse", "sft1", "fail", "chosen and rejected log-probs both fell", **numbers)
    return result(
        "sft1_collapse",
        "sft1",
        "pass",
        "chosen log-probs did not fall with the rejected ones" if c1 >= c0 else "only the chosen log-probs fell",
        **numbers,
    )


def check_reward_spread(stage: str, rows: list[dict], max_share: float) -> dict:
    fracs = [r["frac_reward_zero_std"] for r in rows if "frac_reward_zero_std" in r]
    if not fracs:
        return result("rl_reward_spread", stage, "n/a", "no frac_reward_zero_std logged")
    flat = sum(f >= 1.0 for f in fracs)
    numbers = {
        "steps": len(fracs),
        "steps_all_groups_zero_std": flat,
        "mean_frac_reward_zero_std": sum(fracs) / len(fracs),
    }
    status = (
        "fail"
        if flat / len(fracs) > max_share
        else "warn"
        if numbers["mean_frac_reward_zero_std"] > max_share
        else "pass"
    )
    return result(
        "rl_reward_spread", stage, status, f"{flat}/{len(fracs)} steps had zero reward spread in every group", **numbers
    )


# ---- data and evaluation -----------------------------------------------------------------------
def check_set_sizes(metrics: dict, min_fraction: float) -> list[dict]:
    out = []
    for name in ("pairs", "coa", "cot"):
        if name not in metrics:
            continue
        asked, written = metrics[name]["asked"], metrics[name]["written"]
        share = written / asked if asked else 1.0
        status = "fail" if asked and not written else "warn" if share < min_fraction else "pass"
        out.append(
            result(
                "set_size", name, status, f"{written} of {asked} rows asked", asked=asked, written=written, share=share
            )
        )
    return out


def check_well_formed(name: str, metrics: dict, minimum: float) -> dict:
    if metrics.get("style") != "trained":
        return result("well_formed", name, "n/a", f"style {metrics.get('style')}: not a trained model")
    shares = {d: m["well_formed"] for d, m in metrics["datasets"].items() if "well_formed" in m}
    worst = min(shares.values(), default=None)
    if worst is None:
        return result("well_formed", name, "n/a", "no evaluated questions")
    return result(
        "well_formed",
        name,
        "fail" if worst < minimum else "pass",
        f"well-formed share {worst:.2f} (minimum {minimum})",
        **shares,
    )


def check_metric_applies(name: str, metrics: dict, fmt: str) -> dict:
    fmt = metrics.get("format", fmt)
    wrong = {
        f"{d}.{m}": v[m]
        for d, v in metrics["datasets"].items()
        for m in v
        if m in METRICS and not applies(m, fmt) and v[m] is not None
    }
    na = sorted({m for v in metrics["datasets"].values() for m in v if m in METRICS and not applies(m, fmt)})
    if wrong:
        return result("metric_applies", name, "fail", f"reported as numbers though they cannot apply to {fmt}", **wrong)
    return result("metric_applies", name, "pass", f"n/a under {fmt}: {', '.join(na) or 'none'}")


def check_over_triggering(when: dict, maximum: float) -> list[dict]:
    out = []
    for name, rates in when.get("models", {}).items():
        rate = rates.get("over_trigger", {})
        if rate.get("rate") is None:
            out.append(
                result("over_triggering", name, "n/a", "no decision point where memory sufficed", n=rate.get("n", 0))
            )
            continue
        out.append(
            result(
                "over_triggering",
                name,
                "fail" if rate["rate"] > maximum else "pass",
                f"searched at {rate['rate']:.2f} of {rate['n']} points where memory sufficed",
                **rate,
            )
        )
    return out


def check_world_model(name: str, fid: dict) -> dict:
    calls, searched = fid.get("calls", 0), fid.get("search_calls")
    if calls:
        return result(
            "world_model",
            name,
            "pass",
            f"wrote an observation after {calls} of {searched if searched is not None else '?'} search calls",
            calls=calls,
            search_calls=searched,
        )
    if searched:
        return result(
            "world_model",
            name,
            "fail",
            f"{searched} search calls in the simulated environment, no "
            "observation written after any: RL-1 on this policy trains without observations",
            calls=0,
            search_calls=searched,
        )
    return result(
        "world_model", name, "warn", "no search call in the simulated environment", calls=0, search_calls=searched
    )


def check_reward_moved(stage: str, probe: dict) -> dict:
    diff = probe["difference"]
    lo, hi = diff["ci95"]
    before, after = probe["models"]["before"]["reward"], probe["models"]["after"]["reward"]
    status = "pass" if lo > 0 else "fail" if hi < 0 else "warn"
    return result(
        "rl_reward_moved",
        stage,
        status,
        f"reward on {diff['n']} fixed training questions "
        f"{before:.3f} -> {after:.3f}, difference {diff['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
        before=before,
        after=after,
        diff=diff["diff"],
        ci95=[lo, hi],
        n=diff["n"],
    )


def start_of(folder: Path, stage: str, cfg: ChecksConfig) -> Path | None:
    """The checkpoint a stage started from: its recorded ``start_model``; when that path is gone (a run
    made elsewhere), the previous stage's folder or the base model."""

    recorded = Path(json.loads((folder / "metrics.json").read_text()).get("start_model") or "")
    if recorded.name and recorded.exists():
        return recorded
    previous = PREVIOUS.get(stage)
    return Path(cfg.runs_dir) / previous if previous else base_model_dir()


def run_checks(cfg: ChecksConfig) -> dict:
    checks = []
    for stage in cfg.stages:
        folder = Path(cfg.runs_dir) / stage
        if not (folder / "metrics.json").exists():
            checks.append(result("weights_moved", stage, "n/a", f"{folder} not trained"))
            continue
        checks.append(check_weights_moved(stage, folder, start_of(folder, stage, cfg)))
        rows = read_steps(folder / "steps.csv") if (folder / "steps.csv").exists() else []
        if stage == "sft1":
            checks.append(check_sft1_collapse(rows))
        if stage.startswith("rl"):
            checks.append(check_reward_spread(stage, rows, cfg.max_zero_spread_steps))
    if Path(cfg.sets_metrics).exists():
        checks += check_set_sizes(json.loads(Path(cfg.sets_metrics).read_text()), cfg.min_set_fraction)
    for name in cfg.names:
        path = Path(cfg.eval_root) / name / "metrics.json"
        if path.exists():
            metrics = json.loads(path.read_text())
            checks += [
                check_well_formed(name, metrics, cfg.min_well_formed),
                check_metric_applies(name, metrics, cfg.format),
            ]
    if Path(cfg.when_to_act).exists():
        checks += check_over_triggering(json.loads(Path(cfg.when_to_act).read_text()), cfg.max_over_trigger)
    for path in sorted(Path(cfg.fidelity_root).glob("*/fidelity.json")):
        checks.append(check_world_model(path.parent.name, json.loads(path.read_text())))
    for path in sorted(Path(cfg.reward_probe_root).glob("*/reward_probe.json")):
        checks.append(check_reward_moved(path.parent.name, json.loads(path.read_text())))
    counts = {s: sum(c["status"] == s for c in checks) for s in STATUSES}
    status = max((c["status"] for c in checks), key=STATUSES.index, default="n/a")
    return {"status": status, "counts": counts, "checks": checks}


def as_table(report: dict) -> str:
    lines = ["| check | subject | status | message |", "|---|---|---|---|"]
    lines += [
        f"| {c['check']} | {c['subject']} | {c['status'].upper() if c['status'] != 'pass' else 'pass'} | "
        f"{c['message']} |"
        for c in report["checks"]
    ]
    counts = ", ".join(f"{n} {s}" for s, n in report["counts"].items() if n)
    return "\n".join(lines) + f"\n\nChecks: {report['status']} ({counts}).\n"


@entry_point("evaluate.checks")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(ChecksConfig, "checks", sys.argv[1:] if argv is None else argv, __doc__)
    report = run_checks(cfg)
    write_json(cfg.out, report)
    print(as_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
