"""The fixed costs of one optimizer step of the 135M student on a CPU, measured alternately in one process.

    python bench/bench_step_costs.py [--threads 2] [--repeats 5]

Per optimizer step: AdamW's update of the float32 weights (``torch.optim.AdamW`` fused, as transformers picks, and
foreach); the bf16 weight copies rounded stochastically once per step (``train.bf16_weights``, and as it was with
a random draw per weight); and what autocast casts instead, every linear weight to bf16 by round-to-nearest, in
every forward (x 4 micro-batches at 1 x 4, and again in a checkpointed recompute). Medians of ``--repeats``, the kinds taking turns.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coa.model import base_model_dir  # noqa: E402
from train.bf16_weights import RoundingNoise, stochastic_bf16  # noqa: E402


def per_weight_draw(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The baseline: stochastic rounding as ``train.bf16_weights`` did it before ``RoundingNoise``."""
    bits = weight.view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, generator=generator)
    return ((bits + noise) & -(1 << 16)).view(torch.float32).to(torch.bfloat16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model_dir(), dtype=torch.float32)
    params = [p for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    weights = list({id(m.weight): m.weight for m in model.modules() if type(m) is nn.Linear}.values())
    optimizers = {
        "AdamW fused": torch.optim.AdamW(params, lr=1e-5, fused=True),
        "AdamW foreach": torch.optim.AdamW(params, lr=1e-5, foreach=True),
    }
    generator, noise = torch.Generator().manual_seed(0), RoundingNoise(seed=0)
    with torch.no_grad():
        kinds = {
            **{name: opt.step for name, opt in optimizers.items()},
            "bf16 copies, stochastic rounding": lambda: [stochastic_bf16(w, generator, noise) for w in weights],
            "bf16 copies, a random draw per weight (before the noise pool)": lambda: [
                per_weight_draw(w, generator) for w in weights
            ],
            "autocast casts, one forward": lambda: [w.to(torch.bfloat16) for w in weights],
        }
        times = {name: [] for name in kinds}
        for _ in range(args.repeats + 1):  # the first round warms up
            for name, run in kinds.items():
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
    n = sum(p.numel() for p in params)
    print(
        f"{n / 1e6:.1f}M parameters ({sum(w.numel() for w in weights) / 1e6:.1f}M in linear layers), {args.threads} threads"
    )
    print("| per optimizer step | seconds (median) |\n|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values[1:]):.3f} |")


if __name__ == "__main__":
    main()
