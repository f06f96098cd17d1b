"""What one decoding step of the 135M student costs on this CPU, part by part, against its memory bandwidth.

    python bench/bench_decode_step.py [--batches 1,16,64] [--prompt-tokens 400] [--kv-cache-dtype auto]
                                      [--compile] [--out bench/out/decode_step.json]

Decoding reads every weight once a step (540 MB in float32) and each sequence's keys and values, so on a CPU
its bound is the memory, not the arithmetic. Three measurements, all float32, in one run:

- ``read``: the best read rate of summing a 512 MiB tensor (``bench_eval_peak.memory_bandwidth``), the roofline;
- ``gemm``: the student's linear shapes at M rows (M = sequences in the step), each as the weight's bytes read per
  second, three ways: ``torch.nn.functional.linear`` on the checkpoint's ``[out, in]`` weight (what transformers'
  ``generate``, the ``hf`` engine, runs), ``x @ W.T`` on a contiguous ``[in, out]`` copy, and vLLM's prepacked
  oneDNN matmul (what its CPU backend runs);
- ``step``: vLLM's decoding step at each batch, the project's engine settings (in-process, prefix cache): the
  prompts (random ids, ``--prompt-tokens`` each) prefilled and cached first, then 32 tokens a sequence
  (``ignore_eos``), the step's time being the difference over 32; beside it the bytes the step must read
  (weights once, plus each sequence's keys and values) over the ``read`` roofline. ``--compile`` starts vLLM
  without ``enforce_eager`` (its torch.compile; the start time is printed), ``--kv-cache-dtype`` its cache dtype.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

STEPS = 32


def best_seconds(fn, *args, repeats: int = 20) -> float:
    fn(*args)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - started)
    return min(times)


def gemm_rates(model: str, rows: list[int]) -> list[dict]:
    """GB/s of weight read per linear shape of ``model`` (vLLM's merged q/k/v and gate/up) and M."""
    import torch
    import torch.nn.functional as F
    import vllm._custom_ops as ops
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model)
    head = c.hidden_size // c.num_attention_heads
    qkv = (c.num_attention_heads + 2 * c.num_key_value_heads) * head
    shapes = {
        "qkv": (qkv, c.hidden_size),
        "o": (c.hidden_size, c.hidden_size),
        "gate_up": (2 * c.intermediate_size, c.hidden_size),
        "down": (c.hidden_size, c.intermediate_size),
        "lm_head": (c.vocab_size, c.hidden_size),
    }
    out = []
    for m in rows:
        for name, (n, k) in shapes.items():
            w, x = torch.randn(n, k), torch.randn(m, k)
            w_in_out = w.t().contiguous()
            handler = ops.create_onednn_mm(w.t(), 32)
            gb = w.numel() * w.element_size() / 1e9
            out.append(
                {
                    "m": m,
                    "shape": name,
                    "linear_gb_s": round(gb / best_seconds(F.linear, x, w), 1),
                    "x_at_wt_gb_s": round(gb / best_seconds(torch.matmul, x, w_in_out), 1),
                    "onednn_gb_s": round(gb / best_seconds(ops.onednn_mm, handler, x, None), 1),
                }
            )
    return out


def decode_step(model: str, batch: int, prompt_tokens: int, kv_cache_dtype: str, compile_: bool) -> dict:
    """Runs in its own process (vLLM keeps one engine per process): one batch's decoding step."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from transformers import AutoConfig
    from vllm import LLM, SamplingParams, TokensPrompt

    started = time.perf_counter()
    llm = LLM(
        model=model,
        dtype="float32",
        enforce_eager=not compile_,
        max_model_len=4096,
        seed=0,
        enable_chunked_prefill=False,
        enable_prefix_caching=True,
        kv_cache_memory_bytes=2**31,
        kv_cache_dtype=kv_cache_dtype,
    )
    start_s = time.perf_counter() - started
    rng = random.Random(0)
    prompts = [
        TokensPrompt(prompt_token_ids=[rng.randrange(100, 40000) for _ in range(prompt_tokens)]) for _ in range(batch)
    ]

    def run(tokens: int) -> float:
        params = SamplingParams(max_tokens=tokens, ignore_eos=True, temperature=0.0)
        started = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        return time.perf_counter() - started

    run(1)  # prefill, now cached
    prefill = (run(1) + run(1)) / 2
    step_s = (run(STEPS + 1) - prefill) / STEPS
    c = AutoConfig.from_pretrained(model)
    kv_bytes_per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    kv_bytes_per_token *= 2 if kv_cache_dtype in ("bfloat16", "float16") else 4
    return {
        "engine_start_s": round(start_s, 1),
        "step_ms": round(step_s * 1e3, 1),
        "tokens_per_s": round(batch / step_s, 1),
        "kv_gb_per_step": round(batch * (prompt_tokens + STEPS // 2) * kv_bytes_per_token / 1e9, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--prompt-tokens", type=int, default=400)
    ap.add_argument("--kv-cache-dtype", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/decode_step.json")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: this batch in this process
    args = ap.parse_args()
    from coa.model import base_model_dir

    model = args.model or str(base_model_dir())
    if args.one:
        print(json.dumps(decode_step(model, args.one, args.prompt_tokens, args.kv_cache_dtype, args.compile)))
        return
    import torch

    from bench_eval_peak import _weight_shapes, memory_bandwidth

    torch.set_num_threads(2)
    read = memory_bandwidth()
    weight_gb = sum(torch.Size(s).numel() for s in _weight_shapes(model)) * 4 / 1e9
    batches = [int(b) for b in args.batches.split(",")]
    report = {"read_gb_s": round(read / 1e9, 2), "weights_gb": round(weight_gb, 3)}
    print(json.dumps(report), flush=True)
    report["gemm"] = gemm_rates(model, batches)
    print("| M | shape | F.linear GB/s | x @ W.T (contiguous) GB/s | vLLM oneDNN GB/s |")
    print("|---|---|---|---|---|")
    for g in report["gemm"]:
        print(
            f"| {g['m']} | {g['shape']} | {g['linear_gb_s']} | {g['x_at_wt_gb_s']} | {g['onednn_gb_s']} |", flush=True
        )
    report["steps"] = []
    for batch in batches:
        cmd = [sys.executable, __file__, "--model", model, "--prompt-tokens", str(args.prompt_tokens)]
        cmd += ["--kv-cache-dtype", args.kv_cache_dtype, "--one", str(batch)] + ["--compile"] * args.compile
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        last = (done.stdout.strip().splitlines() or [""])[-1]
        if done.returncode or not last.startswith("{"):
            row = {"batch": batch, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
        else:
            row = {"batch": batch, **json.loads(last)}
            row["read_gb"] = round(weight_gb + row["kv_gb_per_step"], 3)
            row["of_read_roofline"] = round(row["read_gb"] / (row["step_ms"] / 1e3) / report["read_gb_s"], 3)
        report["steps"].append(row)
    print("| sequences | engine start s | step ms | tokens/s | GB read a step (weights + KV) | of the read roofline |")
    print("|---|---|---|---|---|---|")
    for r in report["steps"]:
        if "error" in r:
            print(f"| {r['batch']} | error: {r['error']} |")
        else:
            print(
                f"| {r['batch']} | {r['engine_start_s']} | {r['step_ms']} | {r['tokens_per_s']} | {r['read_gb']} | "
                f"{r['of_read_roofline']:.0%} |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
