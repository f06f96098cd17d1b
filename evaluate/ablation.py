"""``python -m evaluate.ablation``: the stage-ablation table (the paper's Table 1 ablation) from the arms.

    python -m evaluate.ablation arms=[sft1-only,sft2-only,sft1-2,sft1-2-3,full]          # DVC experiment names
    python -m evaluate.ablation arms=[runs/arms/sft2-only,runs/arms/full] source=folders   # copies of runs/
    python -m evaluate.ablation arms=[base,composed] reference=base stage=sft2             # one stage of each run

Each arm is one run of the pipeline with ``train.chain`` naming the stages that train (a stage left
out passes its start on: ``train.run``). An arm's model is the last stage of its chain, evaluated on
the held-out questions like every stage (``runs/eval/<stage>/per_question.json``); ``stage=`` reads that stage
of every arm instead (runs that differ in their data, not their chain). Arms are read from
DVC experiments (``source=dvc``: the files at the experiment's commit, through ``dvc.api``) or from
folders holding an arm's ``params.yaml`` and ``runs/eval`` (``source=folders``).

The table: per arm, EM and F1 with 95% intervals, the paired bootstrap difference in EM against the
reference arm (SFT-2 alone, as in the paper) over the questions both answered, searches per question,
well-formed share, EM by question type, by hops (with the paired difference per hop count) and by number of
searches, and n. Writes ``out`` (Markdown) and ``out`` with ``.json``.
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
from coa.io import write_json, write_text
from coa.stats import bootstrap_ci, paired_difference
from evaluate.stats import breakdown


@dataclass
class ArmsConfig:
    """What a table over experiment arms reads (the ablation here, the frontier in ``evaluate.frontier``)."""

    arms: list = field(
        default_factory=list, metadata={"help": "DVC experiment names (source=dvc) or arm folders (source=folders)"}
    )
    source: str = field(default="dvc", metadata={"help": "dvc | folders"})
    reference: str = field(default="", metadata={"help": "the arm every other is compared with (paired)"})
    dataset: str = field(default="heldout", metadata={"help": "the evaluation set of the table"})
    bootstrap: int = field(default=2000, metadata={"help": "resamples of each interval"})
    out: str = field(default="", metadata={"help": "the Markdown table (+ .json)"})

    def __post_init__(self) -> None:
        if self.source not in ("dvc", "folders"):
            raise ValueError(f"source must be 'dvc' or 'folders', got {self.source!r}")
        if Path(self.reference).name not in {Path(a).name for a in self.arms}:
            raise ValueError(f"reference {self.reference!r} is not one of the arms {self.arms}")


@dataclass
class AblationConfig(ArmsConfig):
    arms: list = field(
        default_factory=lambda: ["sft1-only", "sft2-only", "sft1-2", "sft1-2-3", "full"],
        metadata={"help": "DVC experiment names (source=dvc) or arm folders (source=folders)"},
    )
    reference: str = field(default="sft2-only", metadata={"help": "the arm every other is compared with (paired)"})
    stage: str = field(default="", metadata={"help": "read this stage of every arm (empty: its chain's last)"})
    out: str = field(default="docs/experiments/ablation_table.md", metadata={"help": "the Markdown table (+ .json)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stage:  # runs/eval/<stage> of every arm
            paths.file_name(self.stage, "stage")


def arm_file(arm: str, source: str, path: str) -> str:
    """A file of an arm's run: at a DVC experiment's commit (``source=dvc``) or in an arm folder (``folders``)."""
    if source == "folders":
        return (Path(arm) / path).read_text()
    import dvc.api

    return dvc.api.read(path, repo=".", rev=arm)


def read_arm(arm: str, source: str, stage: str = "") -> dict:
    """An arm's chain and the per-question rows of ``stage`` (default: the chain's last stage;
    ``{"chain", "stage", "rows"}``)."""
    chain = yaml.safe_load(arm_file(arm, source, "params.yaml"))["train"]["chain"]
    stage = stage or chain[-1]
    return {
        "chain": chain,
        "stage": stage,
        "rows": json.loads(arm_file(arm, source, f"{paths.evaluation(stage)}/per_question.json")),
    }


def scores(arm_rows: list[dict], reference_rows: list[dict], dataset: str, resamples: int) -> tuple[dict, list[dict]]:
    """EM and F1 with 95% intervals and the paired EM difference against the reference arm over the questions
    both answered; and the arm's rows of ``dataset``."""
    rows = {r["question_id"]: r for r in arm_rows if r["dataset"] == dataset}
    ref = {r["question_id"]: r for r in reference_rows if r["dataset"] == dataset}
    ids = sorted(rows.keys() & ref.keys())
    em, f1 = [r["em"] for r in rows.values()], [r["f1"] for r in rows.values()]
    n = len(em)
    return {
        "n": n,
        "em": round(sum(em) / n, 4) if n else None,
        "em_ci95": bootstrap_ci(em, resamples),
        "f1": round(sum(f1) / n, 4) if n else None,
        "f1_ci95": bootstrap_ci(f1, resamples),
        "em_diff_vs_reference": paired_difference([ref[i]["em"] for i in ids], [rows[i]["em"] for i in ids], resamples),
        "em_diff_by_hops": {
            str(h): paired_difference(
                [ref[i]["em"] for i in ids if ref[i].get("hops") == h],
                [rows[i]["em"] for i in ids if ref[i].get("hops") == h],
                resamples,
            )
            for h in sorted({ref[i].get("hops") for i in ids} - {None})
        },
    }, list(rows.values())


def arm_row(name: str, arm: dict, reference: dict, dataset: str, resamples: int) -> dict:
    score, rows = scores(arm["rows"], reference["rows"], dataset, resamples)
    n = score["n"]
    return {
        "arm": name,
        "chain": arm["chain"],
        **score,
        "searches": round(sum(r["n_actions"] for r in rows) / n, 3) if n else None,
        "well_formed": round(sum(r["well_formed"] for r in rows) / n, 4) if n else None,
        "by_qtype": breakdown(rows, "qtype", resamples),
        "by_hops": breakdown(rows, "hops", resamples),
        "by_searches": breakdown(rows, "n_actions", resamples),
    }


def ablation_table(
    arms: dict[str, dict], reference: str, dataset: str = "heldout", resamples: int = 2000
) -> list[dict]:
    return [arm_row(name, arm, arms[reference], dataset, resamples) for name, arm in arms.items()]


def as_markdown(rows: list[dict], reference: str) -> str:
    def ci(pair):
        return f"[{pair[0]:.2f}, {pair[1]:.2f}]"

    lines = [
        f"| arm | stages | EM [95% CI] | F1 [95% CI] | EM − {reference} [95% CI] | searches | well-formed | "
        f"EM by type | EM by hops [95% CI] | EM − {reference} by hops [95% CI] | EM by searches | n |",
        "|---|" * 1 + "---|" * 11,
    ]
    for r in rows:
        d = r["em_diff_vs_reference"]
        groups = "; ".join(f"{k} {v['em']:.2f} (n={v['n']})" for k, v in r["by_qtype"].items()) or "–"
        hops = "; ".join(f"{k}-hop {v['em']:.2f} {ci(v['em_ci95'])} (n={v['n']})" for k, v in r["by_hops"].items())
        hop_diffs = "; ".join(
            f"{k}-hop {v['diff']:+.3f} {ci(v['ci95'])}" for k, v in r["em_diff_by_hops"].items() if v["n"]
        )
        searches = "; ".join(f"{k}: {v['em']:.2f} (n={v['n']})" for k, v in r["by_searches"].items()) or "–"
        lines.append(
            f"| {r['arm']} | {'→'.join(r['chain'])} | {r['em']:.3f} {ci(r['em_ci95'])} | "
            f"{r['f1']:.3f} {ci(r['f1_ci95'])} | {d['diff']:+.3f} {ci(d['ci95'])} | {r['searches']:.2f} | "
            f"{r['well_formed']:.2f} | {groups} | {hops or '–'} | {hop_diffs or '–'} | {searches} | {r['n']} |"
        )
    return "\n".join(lines) + "\n"


@entry_point("evaluate.ablation")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(AblationConfig, "ablation", sys.argv[1:] if argv is None else argv, __doc__)
    arms = {Path(a).name: read_arm(a, cfg.source, cfg.stage) for a in cfg.arms}
    rows = ablation_table(arms, Path(cfg.reference).name, cfg.dataset, cfg.bootstrap)
    write_table(cfg.out, as_markdown(rows, Path(cfg.reference).name), rows)
    return 0


def write_table(out: str, table: str, rows: list[dict]) -> None:
    """The Markdown table at ``out``, its rows beside it as ``.json``; the table printed."""
    write_text(out, table)
    write_json(Path(out).with_suffix(".json"), rows)
    print(table)


if __name__ == "__main__":
    sys.exit(main())
