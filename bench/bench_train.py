"""Seconds per optimizer step and peak memory of each training stage on the embedded SmolLM2-135M.

    python bench/bench_train.py [--sets runs/curate/sets --index runs/index] [--steps 2] [--threads 2]
                                [--out bench/out/train.json]

Each stage runs as the real CLI (``python -m train.run stage=…``) in its own process, chained from the
base model like the pipeline (sft1 → sft2 → sft3 → rl1 → rl2), at the default run's settings
(``params.yaml``: micro-batch, accumulation, sequence length, RL group, engine, β, gradient
checkpointing, the search environment) with only ``max_steps`` cut to ``--steps``; the numbers are the
child's own ``metrics.json`` (mean wall time per optimizer step, peak RSS). With ``--sets`` (the default
run's ``runs/curate/sets``) the stages train on the curated sets in the run's format; without, realistic
sets are built from real HotpotQA questions, the real corpus (BM25) and the real chat template with its
worked example (``tests/fixtures/trajectories.py``), and pairs are taken at each CoA trajectory's first
decision (search call vs. answering without searching).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coa.trajectory import PAIR_SCHEMA, write_trajectories  # noqa: E402

STAGES = ("sft1", "sft2", "sft3", "rl1", "rl2")


def build_sets(out: Path, index: Path, n_questions: int = 24) -> None:
    from transformers import AutoTokenizer

    from coa.formats import get_format
    from coa.model import base_model_dir
    from coa.questions import DEFAULT_QUESTIONS, load_questions
    from coa.search import load_searcher
    from tests.fixtures.trajectories import realistic_trajectories

    tok = AutoTokenizer.from_pretrained(base_model_dir())
    rows = realistic_trajectories(load_questions(DEFAULT_QUESTIONS, limit=n_questions), load_searcher(index),
                                  samples=1, tokenizer=tok)
    coa = [t for t in rows if t.mode == "coa" and t.n_actions]
    write_trajectories(out / "coa.parquet", coa)
    write_trajectories(out / "cot.parquet", [t for t in rows if t.mode == "cot"])
    fmt = get_format("autocoa")
    pairs = []
    for t in coa:
        act = t.segments[0]["text"]  # thought + search call: stops at the search-close tag
        thought = act[: act.index(fmt.search_open)]
        no_act = (f"{thought}Without searching, I believe it is {t.answer}.\n{fmt.think_close}\n"
                  f"{fmt.answer_text(t.answer)}")
        pairs.append({"id": t.id, "question_id": t.question_id, "question": t.question,
                      "golden_answers": t.golden_answers, "format": "autocoa", "prompt": t.prompt,
                      "chosen": act, "rejected": no_act, "chosen_ends_turn": False, "rejected_ends_turn": True,
                      "direction": "act", "decision_index": 0, "chosen_id": t.id, "rejected_id": t.id + ":forbid",
                      "chosen_score": 1.0, "rejected_score": 0.0})
    pq.write_table(pa.Table.from_pylist(pairs, schema=PAIR_SCHEMA), out / "pairs.parquet")


def examples(stage: dict, name: str) -> str:
    """What one optimizer step of ``stage`` trains on, in words (micro-batch x accumulation)."""
    n = stage.get("per_device_train_batch_size", 1) * stage.get("gradient_accumulation_steps", 1)
    micro = stage.get("per_device_train_batch_size", 1)
    if name.startswith("rl"):
        return f"{n // stage['num_generations']} prompts x {stage['num_generations']} rollouts ({micro}/micro-batch)"
    return f"{n} {'pairs' if name == 'sft1' else 'sequences'} ({micro}/micro-batch)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", help="curated sets folder (default: build realistic ones)")
    ap.add_argument("--index", help="coa.search index folder (default: build one of the embedded corpus)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench/out/train.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    if not args.index:
        from coa.search import DEFAULT_CORPUS, build_index

        args.index = str(build_index(DEFAULT_CORPUS, work / "index", show_progress=False))
    sets = Path(args.sets) if args.sets else work / "sets"
    if not args.sets:
        sets.mkdir()
        build_sets(sets, Path(args.index))
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    section = {**defaults["train"], "runs_dir": str(work / "runs"), "sets_dir": str(sets), "num_threads": args.threads,
               "rl": {"max_steps": 0}}
    for stage in STAGES:
        section[stage] = {**section[stage], "max_steps": args.steps}
        if stage.startswith("rl"):  # the curated RL pool, or (built sets have none) the embedded questions
            section[stage].update({"questions": str(sets / "rl_questions.jsonl")} if args.sets else
                                  {"questions": None, "question_limit": 16})
    params = {"train": section, "search": {**defaults["search"], "index": args.index}}
    if args.sets:  # the curated sets were written in the run's format and prompt
        params.update(format=defaults["format"], prompt=defaults["prompt"])
    params_file = work / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    per_step = {stage: examples(section[stage], stage) for stage in STAGES}
    results = []
    for stage in STAGES:
        started = time.time()
        subprocess.run([sys.executable, "-m", "train.run", f"stage={stage}"], cwd=ROOT, check=True,
                       env={**os.environ, "COA_PARAMS": str(params_file)}, stdout=subprocess.DEVNULL)
        m = json.loads((work / "runs" / stage / "metrics.json").read_text())
        results.append({"stage": stage, "per_step": per_step[stage], "steps": m["steps"],
                        "seconds_per_step": round(m["seconds_per_step"], 1), "peak_rss_gb": m["peak_rss_gb"],
                        "process_seconds": round(time.time() - started, 1), "data": m["data"]})
        print(json.dumps(results[-1]))
    report = {"model": "SmolLM2-135M-Instruct", "threads": args.threads, "sets": args.sets or "built",
              "gradient_checkpointing": section.get("gradient_checkpointing", False), "load_average": os.getloadavg(),
              "cpus": os.cpu_count(), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| stage | per step | s/step | peak RSS GB |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['stage']} | {r['per_step']} | {r['seconds_per_step']} | {r['peak_rss_gb']} |")


if __name__ == "__main__":
    main()
