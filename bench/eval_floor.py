"""What an evaluation must compute, and how far its time is from that work at the machine's matmul peak.

    python bench/eval_floor.py runs/eval/base runs/eval/sft2 ... [--seconds sft2=138,rl2=126] [--dtype float32]

Reads each evaluation's trajectories (``runs/eval/<name>/trajectories/<dataset>``) and counts, in the student's
tokenizer, the tokens the engine had to run through the model, each episode's requests replayed against vLLM's
prefix cache at its best (no block evicted before its episode's next request):

  prefilled   what each request adds to the cache: the first, its prompt less the prefix every prompt shares (the
              chat template and instruction, in whole cache blocks, counted once for the run); each later one, the
              segments the model did not write since its last generation (observations, prefills) and the tokens
              of the last partly filled block before them, which the cache does not keep (blocks are cached whole:
              ``--block``: 32 tokens, the project's engine on a CPU; vLLM's own default there is 128)
  decoded     every token the model wrote (its segments' ``token_ids``), one decoding step each

FLOPs are 2·N per decoded token (N the parameters, the tied embedding as the LM head, ``bench_train.model_shape``)
and 2·(N − the LM head) per prefilled one (vLLM projects only a request's last position onto the vocabulary), plus
attention, 4·layers·width per earlier token of the context. Over the matmul peak of ``--dtype`` measured in this
process (``bench_train.matmul_peak``) that is the evaluation's floor: the time its work would take at 100% of the
peak. ``--seconds`` gives each evaluation's measured time (e.g. from a ``dvc repro``'s output times); the table
then shows the share of the peak it ran at, and what halving it would ask. Prefill batches many tokens per
weight read, decoding few, so the decoded share says how much of the work runs memory-bound.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from coa.engines.vllm import CPU_BLOCK_SIZE  # noqa: E402


def shared_prefix(prompts: list[list[int]], block: int) -> int:
    """The tokens every prompt starts with, in whole cache blocks.

    >>> shared_prefix([list(range(40)), list(range(35)) + [0]], block=16)
    32
    """
    if not prompts:
        return 0
    first, n = prompts[0], min(map(len, prompts))
    common = next((i for i in range(n) if any(p[i] != first[i] for p in prompts)), n)
    return common // block * block


def work(rows: list[dict], tokenizer, block: int = CPU_BLOCK_SIZE) -> dict:
    """Prefilled and decoded tokens of one evaluation's trajectories, and their attention context (the sum over
    computed tokens of the tokens before each)."""
    prompts = [tokenizer(r["prompt"], add_special_tokens=False)["input_ids"] for r in rows]
    shared = shared_prefix(prompts, block)
    prefilled, decoded, context = shared, 0, shared * (shared - 1) // 2
    for r, prompt in zip(rows, prompts):
        position, cached = len(prompt), shared  # tokens in the episode's context; of them, in the cache
        request = True  # the next model segment starts a request (not a continuation of the last one)
        for seg in r["segments"]:
            written = seg["kind"] == "model" and seg["token_ids"]  # the ids the engine generated, as they were
            n = len(seg["token_ids"]) if written else len(tokenizer(seg["text"], add_special_tokens=False)["input_ids"])
            if seg["kind"] != "model":  # context the next request brings
                position, request = position + n, True
                continue
            if request:  # the engine prefills what its cache does not hold
                prefilled += position - cached
                context += sum(range(cached, position))
                request = False
            decoded += n
            context += n * position + n * (n - 1) // 2
            position += n
            cached = position // block * block
    return {
        "trajectories": len(rows),
        "shared_prefix": shared,
        "prefilled": prefilled,
        "decoded": decoded,
        "context": context,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("evals", nargs="+", type=Path, help="evaluation folders (runs/eval/<name>)")
    ap.add_argument("--seconds", default="", help="NAME=S,...: each evaluation's measured time")
    ap.add_argument("--dtype", default="float32", help="the dtype the evaluation served (its peak is the floor's)")
    ap.add_argument(
        "--block",
        type=int,
        default=CPU_BLOCK_SIZE,
        help="the engine's KV cache block (coa.engines.vllm: 32 on a CPU; vLLM's own 128 there, 16 on a GPU)",
    )
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    args = ap.parse_args()
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from bench_train import matmul_peak, model_shape
    from coa.model import base_model_dir
    from coa.trajectory import read_table

    measured = {k: float(v) for k, v in (item.split("=") for item in args.seconds.split(",") if item)}
    torch.set_num_threads(args.threads)
    peak = matmul_peak(getattr(torch, args.dtype))
    shape = model_shape()
    config = AutoConfig.from_pretrained(base_model_dir())
    body = shape["params"] - config.vocab_size * config.hidden_size
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir())
    print(json.dumps({"dtype": args.dtype, "peak_gflops": round(peak / 1e9, 1), "threads": args.threads, **shape}))
    print(
        "| evaluation | trajectories | prefilled tokens | decoded tokens | TFLOP | floor at the peak (s) "
        "| measured (s) | of the peak | halving it needs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for folder in args.evals:
        rows = [r for d in sorted((folder / "trajectories").iterdir()) if d.is_dir() for r in read_table(d).to_pylist()]
        w = work(rows, tokenizer, args.block)
        attention = 4 * shape["layers"] * shape["width"] * w["context"]
        flops = 2 * body * w["prefilled"] + 2 * shape["params"] * w["decoded"] + attention
        floor = flops / peak
        seconds = measured.get(folder.name)
        ran = f"{floor / seconds:.1%}" if seconds else "–"
        halving = f"{2 * floor / seconds:.1%}" if seconds else "–"
        print(
            f"| {folder.name} | {w['trajectories']} | {w['prefilled']:,} | {w['decoded']:,} | {flops / 1e12:.1f} | "
            f"{floor:.0f} | {seconds or '–'} | {ran} | {halving} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
