"""Training throughput on a CUDA GPU against the card's bf16 peak: SFT-2 padded against padding-free, SFT-1, RL-2.

    # on any machine with the project installed and an index (dvc repro index): what the GPU needs, ~24 MB
    python bench/bench_gpu.py prepare --index runs/index --out .gpu
    # on the GPU (no network, no model download; trl, datasets, liger-kernel, openai, bm25s ... as wheels: docs)
    python bench/bench_gpu.py run --data .gpu --out bench/out/gpu.json [--steps 12] [--warmup 3] [--only 1.5b]
    python bench/bench_gpu.py run --data .gpu --only compile     # torch.compile on and off, the fastest rows
    python bench/bench_gpu.py run --data .gpu --only stages --steps 4 --warmup 1   # SFT-1, and RL-2 with hf rollouts

``prepare`` writes the SmolLM2 tokenizer and model config (no weights) and realistic SFT-2 sets: CoA and CoT
trajectories of real HotpotQA questions with real BM25 results in the run's format
(``tests/fixtures/trajectories.py``, as ``bench/bench_train.py`` builds them), ``bench/bench_train.py``'s SFT-1 pairs
and a copy of the BM25 index (RL-2 searches for real). ``run`` builds random-initialised
students of two shapes, the SmolLM2-135M and a Qwen2.5-1.5B (28 layers, 1,536 wide, 151,936-token vocabulary),
and trains each configuration with the project's own ``python -m train.run stage=sft2`` in its own process:
bf16 mixed precision (float32 master weights, fused AdamW), observations masked, ``max_steps`` cut to ``--steps``.

Per configuration it prints real tokens per second over the steps after ``--warmup`` (the stage's tokens per step
taken as its mean), MFU as 6·N·tokens/s over the card's dense bf16 peak (989 TFLOP/s for an H100/H200 SXM; also
against the 8192³ bf16 GEMM rate measured at the start), with causal attention's FLOPs beside it, the padding
fraction and the peak GPU memory. The configurations: today's default (one sequence per micro-batch, four
accumulated, SDPA), and padding-free micro-batches sized to the card (``sft2.padding_free``: the sequences of a
micro-batch in one row, no padding) with the variable-length flash kernel and Liger's layer kernels
(``attn_implementation=auto``, ``liger_kernels=auto``), and the same rows with SDPA (the block-diagonal mask)
and no Liger, which says what the kernels add. ``--only stages`` times SFT-1 and RL-2 (GRPO with the ``hf`` rollout
engine), each at the default shape and batched; RL rows add the generated tokens a second, and their MFU counts 2N
a generated token. Reports: docs/bench_train.md#on-a-gpu.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEC_BF16_TFLOPS = 989.0  # H100 / H200 SXM dense bf16 (the MFU convention of the issue and the papers)
QWEN_1_5B_SHAPE = {  # Qwen2.5-1.5B's architecture; the vocabulary covers the SmolLM2 tokenizer's ids
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}
Config = namedtuple(
    "Config",
    "name student micro accumulation padding_free attention liger compile group stage",
    defaults=(False, "main", "sft2"),
)
CONFIGS = (
    Config("135m 1x4 sdpa (default)", "135m", 1, 4, False, "sdpa", False),
    Config("135m 4 padding-free varlen+liger (same steps)", "135m", 4, 1, True, "auto", "auto"),
    Config("135m 64 padding-free varlen+liger", "135m", 64, 1, True, "auto", "auto"),
    Config("1.5b 32 padding-free varlen+liger", "1.5b", 32, 1, True, "auto", "auto"),
    Config("1.5b 1x4 sdpa (default)", "1.5b", 1, 4, False, "sdpa", False),
    Config("1.5b 32 padding-free sdpa", "1.5b", 32, 1, True, "sdpa", False),
    # what each kernel adds, and where the small student stops scaling (--only extra)
    Config("1.5b 32 padding-free varlen", "1.5b", 32, 1, True, "auto", False, group="extra"),
    Config("135m 64 padding-free varlen", "135m", 64, 1, True, "auto", False, group="extra"),
    Config("135m 128 padding-free varlen+liger", "135m", 128, 1, True, "auto", "auto", group="extra"),
    # torch.compile (inductor) on the fastest rows, each beside the same row without it (--only compile)
    Config("135m 64 padding-free varlen+liger", "135m", 64, 1, True, "auto", "auto", group="compile"),
    Config("135m 64 padding-free varlen+liger+compile", "135m", 64, 1, True, "auto", "auto", True, "compile"),
    Config("1.5b 32 padding-free varlen+liger", "1.5b", 32, 1, True, "auto", "auto", group="compile"),
    Config("1.5b 32 padding-free varlen+liger+compile", "1.5b", 32, 1, True, "auto", "auto", True, "compile"),
    # the other stages (--only stages): SFT-1's pairs, and RL-2's GRPO with the hf rollout engine and real search
    # (micro x accumulation rollouts a step, generated in one batch), each at the default shape and batched
    Config("135m rl2 hf 1x8 (default)", "135m", 1, 8, False, "sdpa", False, group="stages", stage="rl2"),
    Config("135m rl2 hf 16x4", "135m", 16, 4, False, "sdpa", False, group="stages", stage="rl2"),
    Config("1.5b rl2 hf 4x4", "1.5b", 4, 4, False, "sdpa", False, group="stages", stage="rl2"),  # 16x4: out of memory
    Config("135m sft1 1x4 sdpa (default)", "135m", 1, 4, False, "sdpa", False, group="stages", stage="sft1"),
    Config("135m sft1 32x1 sdpa+liger", "135m", 32, 1, False, "sdpa", "auto", group="stages", stage="sft1"),
    Config("1.5b sft1 16x1 sdpa+liger", "1.5b", 16, 1, False, "sdpa", "auto", group="stages", stage="sft1"),
)
GROUPS = tuple(dict.fromkeys(c.group for c in CONFIGS if c.group != "main"))  # --only NAME


def prepare(index: Path, out: Path, questions: int) -> None:
    from transformers import AutoTokenizer

    from coa.model import base_model_dir
    from coa.questions import DEFAULT_QUESTIONS, load_questions
    from coa.search import load_searcher
    from coa.trajectory import write_trajectories
    from tests.fixtures.trajectories import realistic_trajectories

    from bench.bench_train import build_sets

    base = out / "base"
    base.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(base_model_dir())
    tok.save_pretrained(base)
    shutil.copy(base_model_dir() / "config.json", base / "config.json")
    fmt = yaml.safe_load((ROOT / "params.yaml").read_text())["format"]
    rows = realistic_trajectories(
        load_questions(DEFAULT_QUESTIONS, limit=questions), load_searcher(index), samples=1, fmt=fmt, tokenizer=tok
    )
    sets = out / "sets"
    sets.mkdir(exist_ok=True)
    write_trajectories(sets / "coa.parquet", [t for t in rows if t.mode == "coa"])
    write_trajectories(sets / "cot.parquet", [t for t in rows if t.mode == "cot"])
    build_sets(out / "pair_sets", index, questions)  # SFT-1's pairs at each CoA trajectory's first decision
    shutil.copytree(index, out / "index", dirs_exist_ok=True)  # RL-2's real search
    print(f"{out}: tokenizer, config, {len(rows)} trajectories ({fmt}), pairs (autocoa) and the index")


def gemm_tflops() -> float:
    import torch

    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize()
    return 10 * 2 * 8192**3 / (time.perf_counter() - started) / 1e12


def make_student(data: Path, name: str, folder: Path) -> dict:
    """A random-initialised student saved as a train.run start model (safetensors, the SmolLM2 tokenizer)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if name == "135m":
        config = AutoConfig.from_pretrained(data / "base")
    else:
        config = AutoConfig.for_model(**{k: v for k, v in QWEN_1_5B_SHAPE.items() if k != "architectures"})
        config.architectures = QWEN_1_5B_SHAPE["architectures"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(data / "base").save_pretrained(folder)
    shape = {
        "params": sum(p.numel() for p in model.parameters()),
        "layers": config.num_hidden_layers,
        "width": config.num_attention_heads * (config.hidden_size // config.num_attention_heads),
    }
    del model
    return shape


def stage_args(data: Path, config: Config) -> list[str]:
    """What differs per stage: its data, and the settings only it has."""
    stage = config.stage
    if stage == "sft1":  # bench_train's pairs are written in the autocoa format
        return [f"sets_dir={data / 'pair_sets'}", "format=autocoa"]
    if stage == "rl2":  # the embedded questions, real BM25 search, rollouts from transformers generate
        return ["rl2.engine=hf", "rl2.questions=null", "rl2.question_limit=256", f"search.index={data / 'index'}"]
    return [f"sets_dir={data / 'sets'}", f"{stage}.padding_free={str(config.padding_free).lower()}"]


def run_config(work: Path, data: Path, student: Path, config: Config, steps: int) -> dict:
    from evaluate.checks import read_steps

    runs = work / "runs" / config.student / config.name.replace(" ", "_")
    shutil.rmtree(runs, ignore_errors=True)
    stage = config.stage
    cmd = [
        sys.executable, "-m", "train.run", f"stage={stage}", f"model={student}", f"base_model={data / 'base'}",
        f"runs_dir={runs}", "bf16=true", "save_dtype=bfloat16",
        f"{stage}.max_steps={steps}", f"{stage}.per_device_train_batch_size={config.micro}",
        f"{stage}.gradient_accumulation_steps={config.accumulation}",
        f"attn_implementation={config.attention}", f"liger_kernels={str(config.liger).lower()}",
    ] + stage_args(data, config) + ([f"{stage}.trl_args.torch_compile=true"] if config.compile else [])  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:], "wall_s": round(wall, 1)}
    metrics = json.loads((runs / stage / "metrics.json").read_text())
    logged = read_steps(runs / stage / "steps.csv")
    metrics["losses"] = [row["loss"] for row in logged if "loss" in row]
    if stage == "rl2":  # what the rollouts generated each step (TRL's mean completion length x rollouts)
        rollouts = config.micro * config.accumulation
        metrics["generated_tokens"] = [
            round(row["completions/mean_length"] * rollouts) for row in logged if "completions/mean_length" in row
        ]
    shutil.rmtree(runs, ignore_errors=True)  # a 1.5B checkpoint is 3 GB
    return {"metrics": metrics, "wall_s": round(wall, 1)}


def summarise(result: dict, shape: dict, warmup: int, peak: float) -> dict:
    metrics = result["metrics"]
    tokens = metrics["tokens"]
    seconds = metrics["step_seconds"]
    timed = seconds[warmup:] or seconds
    steps = len(seconds)
    per_step = tokens["forward_backward_tokens"] / steps
    attention_per_step = tokens["forward_backward_attention"] / steps
    step_s = sum(timed) / len(timed)
    tokens_per_s = per_step / step_s
    model_tflops = 6 * shape["params"] * tokens_per_s / 1e12
    rl = {}
    if "generated_tokens" in metrics:  # RL: generation (2N a token) and the forward-only passes count too
        generated = metrics["generated_tokens"][warmup:] or metrics["generated_tokens"]
        generated_per_step = sum(generated) / len(generated)
        forward_only_per_step = tokens["forward_only_tokens"] / steps
        model_tflops += 2 * shape["params"] * (generated_per_step + forward_only_per_step) / step_s / 1e12
        rl = {"generated_per_step": round(generated_per_step), "generated_per_s": round(generated_per_step / step_s)}
    attention_tflops = 6 * shape["layers"] * shape["width"] * attention_per_step / step_s / 1e12
    return {
        **rl,
        "s_per_step": round(step_s, 3),
        "tokens_per_step": round(per_step),
        "tokens_per_s": round(tokens_per_s),
        "mfu_spec": round(model_tflops / SPEC_BF16_TFLOPS, 4),
        "mfu_measured_peak": round(model_tflops / peak, 4),
        "mfu_with_attention_spec": round((model_tflops + attention_tflops) / SPEC_BF16_TFLOPS, 4),
        "padding_fraction": tokens["padding_fraction"],
        "peak_gpu_memory_gb": metrics.get("peak_gpu_memory_gb"),
        "attention": metrics.get("data", {}).get("attn_implementation"),
        "losses": [round(x, 4) for x in metrics["losses"]],
    }


def run(data: Path, out: Path, steps: int, warmup: int, only: str | None) -> None:
    import torch

    assert torch.cuda.is_available(), "bench_gpu.py run needs a CUDA GPU"
    work = Path(os.environ.get("BENCH_GPU_WORK", "/tmp/bench_gpu"))
    work.mkdir(parents=True, exist_ok=True)
    peak = gemm_tflops()
    header = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "bf16_gemm_tflops_8192": round(peak, 1),
        "spec_tflops": SPEC_BF16_TFLOPS,
        "steps": steps,
        "warmup": warmup,
    }
    print(json.dumps(header), flush=True)
    rows, shapes = [], {}
    if only in GROUPS:
        chosen = [c for c in CONFIGS if c.group == only]
    else:
        chosen = [c for c in CONFIGS if c.group == "main" and only in (None, c.student)]
    for config in chosen:
        student = config.student
        if student not in shapes:
            shapes[student] = make_student(data, student, work / student)
        result = run_config(work, data, work / student, config, steps)
        row = {"config": config.name, "params": shapes[student]["params"], "wall_s": result["wall_s"]}
        if "metrics" in result:
            metrics = result["metrics"]
            row["raw"] = {k: metrics.get(k) for k in ("tokens", "step_seconds", "losses", "peak_gpu_memory_gb", "data")}
            row.update(summarise(result, shapes[student], warmup, peak))
        else:
            row.update(result)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "raw"}), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**header, "rows": rows}, indent=1))
    same = [r for r in rows if r["config"].startswith(("135m 1x4", "135m 4 ")) and "losses" in r]
    if len(same) == 2:  # the same sequences per step, padded one by one against padding-free in one row
        gap = max(abs(a - b) for a, b in zip(same[0]["losses"], same[1]["losses"]))
        print(json.dumps({"loss_parity_max_abs_difference": round(gap, 4), "steps": len(same[0]["losses"])}))
    print(
        "| configuration | tokens/step | s/step | tokens/s | generated tokens/s | MFU (spec) | + attention | padding "
        "| peak GPU GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['config']} | error: {r['error']} |")
            continue
        print(
            f"| {r['config']} | {r['tokens_per_step']} | {r['s_per_step']} | {r['tokens_per_s']} | "
            f"{r.get('generated_per_s', '-')} | "
            f"{r['mfu_spec']:.1%} | {r['mfu_with_attention_spec']:.1%} | {r['padding_fraction']:.3f} | "
            f"{r['peak_gpu_memory_gb']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--index", type=Path, default=ROOT / "runs/index")
    p.add_argument("--out", type=Path, default=ROOT / ".gpu")
    p.add_argument("--questions", type=int, default=300)
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, default=ROOT / ".gpu")
    r.add_argument("--out", type=Path, default=ROOT / "bench/out/gpu.json")
    r.add_argument("--steps", type=int, default=12)
    r.add_argument("--warmup", type=int, default=3)
    r.add_argument("--only", choices=("135m", "1.5b", *GROUPS))
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.index, args.out, args.questions)
    else:
        run(args.data, args.out, args.steps, args.warmup, args.only)


if __name__ == "__main__":
    main()
