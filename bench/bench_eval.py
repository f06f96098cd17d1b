"""Evaluation engines: in-process vLLM (the default) vs a vLLM server vs HF generate, same model, same run.

    python bench/bench_eval.py --model runs/train/sft3 [--limit 40] [--engines vllm,server] [--concurrency 128]
    python bench/bench_eval.py --model runs/train/rl1 --limit 300 --engines vllm --kv-blocks 128,32

Runs ``python -m evaluate.run`` once per engine on the same held-out questions (params.yaml's search
environment, prompt and format; greedy, float32), each in its own process so every engine starts cold as
it does in ``dvc repro``, and prints wall time (engine start included), the ratio to the first engine,
EM, and how many trajectories are token-for-token identical to the first engine's: greedy decoding in
float32 should not depend on the engine. ``server`` runs with synthesis's concurrency (16 in flight);
the in-process engines take every question in one batch. ``--kv-blocks`` runs ``vllm`` once per KV-cache
block size (``evaluate.run kv_block``; 0 = the engine's, 32 tokens on CPU where vLLM's own is 128): the prefix
cache reuses whole blocks only, and ``bench/eval_floor.py --block`` counts the tokens each size leaves to recompute.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def texts(folder: Path) -> dict[str, list[str]]:
    from coa.trajectory import read_table

    return {r["question_id"]: [s["text"] for s in r["segments"]] for r in read_table(folder).to_pylist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/train/sft3")
    ap.add_argument("--questions", default="runs/split/heldout.jsonl")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--engines", default="vllm,server")
    ap.add_argument("--concurrency", type=int, default=128, help="in-process engines; server: 16")
    ap.add_argument(
        "--out", default="", help="keep the evaluations here (for bench/eval_floor.py); empty = a temporary folder"
    )
    ap.add_argument("--kv-blocks", default="0", help="vllm: KV-cache block sizes, one run each (0 = the engine's)")
    args = ap.parse_args()
    blocks = [int(b) for b in args.kv_blocks.split(",")]
    runs = [
        (engine if engine != "vllm" or block == 0 else f"vllm-block{block}", engine, block)
        for engine in args.engines.split(",")
        for block in (blocks if engine == "vllm" else [0])
    ]
    scratch = None if args.out else tempfile.TemporaryDirectory(prefix="bench_eval_")  # removed at exit
    out = Path(args.out or scratch.name)
    rows = []
    for name, engine, block in runs:
        concurrency = 16 if engine == "server" else args.concurrency
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "evaluate.run",
                f"name={name}",
                f"model={args.model}",
                f"questions=[{args.questions}]",
                f"limit={args.limit}",
                f"engine={engine}",
                f"concurrency={concurrency}",
                f"kv_block={block}",
                f"out_root={out}",
            ],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        dataset = Path(args.questions).name.split(".")[0]
        em = json.loads((out / name / "metrics.json").read_text())["datasets"][dataset]["em"]
        rows.append((name, seconds, em, texts(out / name / "trajectories" / dataset)))
    first = rows[0]
    print(f"model {args.model}, {args.limit} questions of {args.questions}, greedy, float32")
    print("| engine | wall s | speed vs " + first[0] + " | EM | trajectories identical to " + first[0] + " |")
    print("|---|---|---|---|---|")
    for engine, seconds, em, traj in rows:
        same = sum(traj.get(q) == t for q, t in first[3].items())
        print(f"| {engine} | {seconds:.1f} | {first[1] / seconds:.2f}x | {em:.3f} | {same}/{len(first[3])} |")


if __name__ == "__main__":
    main()
