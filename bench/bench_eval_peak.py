"""vLLM CPU generation of the 135M student against this machine's matmul peak and its memory bandwidth.

    python bench/bench_eval_peak.py [--model models/SmolLM2-135M-Instruct] [--questions 64] [--max-tokens 160]
                                    [--batches 16,64] [--dtypes float32,bfloat16] [--out bench/out/eval_peak.json]

The evaluation's first turn, as ``evaluate.run`` sends it: the held-out questions' chat prompts in the configured
format and prompt (``coa.prompts.render_prompt`` plus the prefill), greedy, stopping at the format's tool-call
close, through the project's own in-process engine (``coa.engines.vllm.VLLMEngine``). Each setting gets a fresh
engine in its own process (vLLM keeps one per process) and generates the same requests in batches of ``--batches``;
the engine's start is timed apart. Per setting it prints generated tokens per second and the model FLOP/s of the
generated tokens: 2·N each (N the parameters, the tied embedding as the LM head) plus attention (4·layers·width per
earlier token of its context), over the float32 and bf16 matmul peaks measured in the same run. The prompts' own
FLOPs are left out: they share the chat template's long prefix, which vLLM's prefix cache computes once, so
counting every prompt token would claim work that was not done (a lower bound, then)
(``bench/bench_train.py``'s GEMMs). ``coa.model.bf16_choice`` says which dtype ``dtype: auto`` takes on this CPU.

Decoding a few sequences reads every weight once a step whatever the batch, so its bound can be the memory, not
the arithmetic. Each setting also prints the bytes its decoding steps read (the weights at the dtype's size once a
step, a batch taking as many steps as its longest generation, plus each generated token's read of the keys and values
before it) per second, over the read bandwidth measured in the same run (``memory_bandwidth``: the best of summing a
512 MiB float32 tensor on the torch threads).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def one_setting(model: str, questions: int, max_tokens: int, batch: int, dtype: str) -> dict:
    """Runs in its own process: one engine, the requests in batches; returns the counts and times."""
    import torch
    from transformers import AutoConfig

    from coa.config import load_config
    from coa.engines import Request
    from coa.engines.vllm import VLLMEngine
    from coa.formats import get_format
    from coa.prompts import render_prompt
    from coa.questions import load_questions
    from evaluate.run import EvalConfig

    cfg = load_config(EvalConfig, "evaluate", [])
    fmt = get_format(cfg.format)
    started = time.perf_counter()
    engine = VLLMEngine(model, dtype=dtype)
    start_s = time.perf_counter() - started
    tok = engine.tokenizer
    rows = load_questions(ROOT / "data/raw/hotpotqa/hotpotqa_dev_union_flashrag.jsonl.gz", limit=questions)
    prompts = [render_prompt(tok, q["question"], cfg.prompt) + cfg.prompt.prefill for q in rows]
    requests = [
        Request(tok(p, add_special_tokens=False)["input_ids"], max_tokens, [fmt.search_close], episode=None)
        for p in prompts
    ]
    engine.generate_batch(requests[:2])  # warm-up
    generated = prompt_tokens = attention = steps = 0
    started = time.perf_counter()
    for i in range(0, len(requests), batch):
        chunk = requests[i : i + batch]
        outs = engine.generate_batch(chunk)
        steps += max(len(g.token_ids) for g in outs)
        for r, g in zip(chunk, outs):
            n, p = len(g.token_ids), len(r.ids)
            generated += n
            prompt_tokens += p
            attention += n * p + n * n // 2  # each generated token against the tokens before it
    seconds = time.perf_counter() - started
    config = AutoConfig.from_pretrained(model)
    params = sum(math.prod(shape) for shape in _weight_shapes(model))
    head = config.hidden_size // config.num_attention_heads
    flops = 2 * params * generated + 4 * config.num_hidden_layers * config.num_attention_heads * head * attention
    element = torch.empty(0, dtype=getattr(torch, dtype)).element_size()
    kv_width = config.num_key_value_heads * head
    read = params * element * steps + 2 * config.num_hidden_layers * kv_width * element * attention
    return {
        "engine_start_s": round(start_s, 1),
        "seconds": round(seconds, 2),
        "generated_tokens": generated,
        "prompt_tokens": prompt_tokens,
        "generated_per_s": round(generated / seconds, 1),
        "gflops": round(flops / seconds / 1e9, 1),
        "decode_steps": steps,
        "read_gb_per_s": round(read / seconds / 1e9, 2),
        "threads": torch.get_num_threads(),
    }


def memory_bandwidth(repeats: int = 5) -> float:
    """The best read rate (bytes/s) of summing a 512 MiB float32 tensor on this process's torch threads."""
    import torch

    x = torch.ones(2**27)
    x.sum()  # first touch
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        x.sum()
        best = max(best, x.numel() * x.element_size() / (time.perf_counter() - started))
    return best


def _weight_shapes(model: str):
    from safetensors import safe_open

    for f in sorted(Path(model).glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            for name in st.keys():
                yield st.get_slice(name).get_shape()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--batches", default="16,64")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/eval_peak.json")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: batch,dtype in this process
    args = ap.parse_args()
    from coa.model import base_model_dir, bf16_choice

    model = args.model or str(base_model_dir())
    if args.one:
        batch, dtype = args.one.split(",")
        print(json.dumps(one_setting(model, args.questions, args.max_tokens, int(batch), dtype)))
        return
    import torch

    from bench_train import matmul_peak

    torch.set_num_threads(2)
    peaks = {"float32": matmul_peak(torch.float32), "bfloat16": matmul_peak(torch.bfloat16)}
    choice, why = bf16_choice()
    header = {"peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()}, "bf16_auto": choice, "why": why}
    header["read_gb_per_s"] = round(memory_bandwidth() / 1e9, 2)
    print(json.dumps(header), flush=True)
    rows = []
    for batch in map(int, args.batches.split(",")):
        for dtype in args.dtypes.split(","):
            cmd = [sys.executable, __file__, "--model", model, "--questions", str(args.questions)]
            cmd += ["--max-tokens", str(args.max_tokens), "--one", f"{batch},{dtype}"]
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            last = (done.stdout.strip().splitlines() or [""])[-1]
            row = {"batch": batch, "dtype": dtype}
            if done.returncode or not last.startswith("{"):
                row["error"] = (done.stderr.strip().splitlines() or ["?"])[-1]
            else:
                row.update(json.loads(last))
                row["mfu"] = round(row["gflops"] / header["peak_gflops"][dtype], 4)
                row["mbu"] = round(row["read_gb_per_s"] / header["read_gb_per_s"], 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**header, "rows": rows}, indent=1))
    print("| batch | dtype | engine start s | generated tokens/s | GFLOP/s | of the dtype's matmul peak | GB/s read |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['batch']} | {r['dtype']} | error: {r['error']} |")
        else:
            print(
                f"| {r['batch']} | {r['dtype']} | {r['engine_start_s']} | {r['generated_per_s']} | {r['gflops']} | "
                f"{r['mfu']:.1%} | {r['read_gb_per_s']} ({r['mbu']:.0%} of {header['read_gb_per_s']}) |"
            )


if __name__ == "__main__":
    main()
