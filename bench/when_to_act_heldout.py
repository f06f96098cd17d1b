"""When to act on held-out decision points drawn from the held-out split: n >= 30 on both sides.

The pipeline's when-to-act stage takes its points from the curated eval split (``curate.eval_questions``
training-pool questions kept out of every set): 20 questions give about 13 points where search was needed
and almost none where memory sufficed. This experiment draws them from the held-out split instead (the
questions no stage trains on): the reference teacher writes CoT and CoA trajectories for them, curation
scores them (no decontamination: these are the evaluation questions) and cuts each CoA trajectory's first
decision point, synthesis continues each point with search forbidden and forced, curation scores the
branches, and every model continues each labelled point one step (``evaluate.when_to_act points=branches``).

Run it in a finished run's folder (after ``dvc repro``: the split, the index and the checkpoints):

    cd <run> && python <toolkit>/bench/when_to_act_heldout.py [per_side=60] [models=base,sft1,sft2,sft3,rl1,rl2]

Writes ``runs/when_to_act_heldout/`` (its own folder; delete it to start over) and prints the rates; each
step is skipped when its output exists, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from coa.questions import load_questions

HELDOUT = "runs/split/heldout.jsonl"
OUT = Path("runs/when_to_act_heldout")


def step(done: Path, *args: str) -> None:
    if done.exists():
        print(f"= {done} exists: skipped", flush=True)
        return
    started = time.perf_counter()
    # -P: the toolkit this Python has installed, not modules of the same name in the run's folder
    subprocess.run([sys.executable, "-P", "-m", *args], check=True)
    print(f"+ {' '.join(args[:2])}: {time.perf_counter() - started:.0f} s", flush=True)


def main(argv: list[str]) -> int:
    opts = dict(a.split("=", 1) for a in argv)
    per_side = int(opts.get("per_side", 60))
    models = opts.get("models", "base,sft1,sft2,sft3,rl1,rl2")
    synth = OUT / "synth"
    for mode in ("cot", "coa"):
        step(
            synth / mode / "summary.json",
            "synth.run",
            f"mode={mode}",
            f"questions={HELDOUT}",
            f"out={synth / mode}",
            "progress=false",
        )
    step(
        OUT / "score" / "scores.parquet",
        "curate.run",
        "step=score",
        f"in=[{synth / 'cot'},{synth / 'coa'}]",
        f"out={OUT / 'score'}",
        "eval_sets=[]",
    )
    step(
        OUT / "analyze" / "decisions.parquet",
        "curate.run",
        "step=analyze",
        f"in={OUT / 'score'}",
        f"out={OUT / 'analyze'}",
    )
    step(
        synth / "branch" / "summary.json",
        "synth.run",
        "mode=branch",
        f"decisions={OUT / 'analyze' / 'decisions.parquet'}",
        f"questions={HELDOUT}",
        f"out={synth / 'branch'}",
        "progress=false",
    )
    step(
        OUT / "pairs" / "branches.parquet", "curate.run", "step=pairs", f"in={synth / 'branch'}", f"out={OUT / 'pairs'}"
    )
    questions = OUT / "questions.parquet"  # every held-out question is an evaluation question here
    if not questions.exists():
        pl.DataFrame({"id": [q["id"] for q in load_questions(HELDOUT)]}).write_parquet(questions)
    result = OUT / "when_to_act.json"
    step(
        result,
        "evaluate.when_to_act",
        f"models=[{models}]",
        "points=branches",
        f"branches={OUT / 'pairs' / 'branches.parquet'}",
        f"trajectories=[{synth / 'branch'}]",
        f"eval_questions={questions}",
        f"per_side={per_side}",
        f"out={result}",
    )
    print(json.dumps(json.loads(result.read_text())["points"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
