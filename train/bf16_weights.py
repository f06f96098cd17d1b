"""bf16 weight copies for CPU mixed precision: one stochastically rounded copy per optimizer step.

Under ``torch.autocast`` every linear layer casts its float32 weight to bf16 on every forward, rounding to the
nearest bf16 value. Two costs follow:

* **Learning.** The embedded model is stored in bf16, so its float32 master weights start exactly on the bf16
  grid, and an AdamW update smaller than half a grid step (about |w| / 512: 1e-4 for a weight of 0.05, while
  SFT-1's updates are ~2e-5) rounds back to the same bf16 value: the forward does not see it until updates add up
  past the grid. SFT-1 (2e-5) learned several times slower in bf16 than in float32 (docs/bench_train.md).
  Rounding stochastically (up with probability the remainder's share of the grid step) makes the bf16 weight
  equal the master weight in expectation, so each update shows at once, on average.
* **Time.** The cast runs again in every micro-batch's forward (and a checkpointed recompute); the master weights
  change only at the optimizer step.

``Bf16Weights`` keeps one bf16 copy per linear weight, rounded when the weights have changed (after each optimizer
step: the callback's ``on_optimizer_step``), and the linear layers multiply with it under CPU autocast (outside
it, with the float32 weight as before). The gradient goes to the
float32 master weight as under autocast (the bf16 matmul's gradient, cast to float32); the optimizer, its state,
gradient clipping and the saved checkpoint still see only the float32 parameters.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from transformers import TrainerCallback

BF16_DROPPED_BITS = 16  # a float32 whose low 16 bits are zero is exactly a bf16: its high 16 bits


class RoundingNoise:
    """Uniform noise over the 16 dropped bits, cut from one pool drawn once: each call is a window of the pool at
    an offset drawn from ``generator``. A random number drawn per weight at every step cost more than the casts
    the copies save (docs/bench_train.md); a window costs one scalar draw. Over the steps, each weight's noise is a
    uniform draw from ``window`` pool entries (unbiased to ~1/sqrt(window) of a grid step); the weights of one
    window share a shifted pattern, which leaves each weight's expectation as it is."""

    def __init__(self, seed: int, chunk: int = 1 << 22, window: int = 1 << 20) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.pool = torch.randint(0, 1 << BF16_DROPPED_BITS, (chunk + window,), dtype=torch.int32, generator=generator)
        self.chunk, self.window = chunk, window

    def __call__(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` (at most ``chunk``) noise values: a view of the pool."""
        offset = int(torch.randint(0, self.window, (1,), generator=generator))
        return self.pool[offset : offset + n]


def stochastic_bf16(weight: torch.Tensor, generator: torch.Generator, noise: RoundingNoise) -> torch.Tensor:
    """``weight`` (float32) rounded to bf16 stochastically: to the next bf16 away from zero with probability the
    dropped bits' share of the grid step, else toward zero (unbiased: E[result] = weight)."""
    bits = weight.detach().contiguous().view(-1).view(torch.int32)
    summed = torch.empty_like(bits)
    for start in range(0, bits.numel(), noise.chunk):
        end = min(start + noise.chunk, bits.numel())
        torch.add(bits[start:end], noise(end - start, generator), out=summed[start:end])  # a carry rounds up
    high = summed.view(torch.int16)[1::2]  # little-endian: each int32's high half, the bf16 it truncates to
    return high.contiguous().view(torch.bfloat16).view(weight.shape)


class _Bf16Copy(torch.autograd.Function):
    """The weight's bf16 copy in the forward; in the backward, the gradient cast to float32 for the master
    weight (what autocast's cast does in its backward)."""

    @staticmethod
    def forward(ctx, weight, copy):
        return copy.view_as(copy)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(torch.float32), None


class Bf16Weights(TrainerCallback):
    """The linear layers of ``model`` multiply with bf16 copies of their float32 weights, rounded stochastically
    (``stochastic_bf16``) once per optimizer step. Pass it to the trainer as a callback. The rounding's noise is
    drawn from ``seed`` and the step it is made at, so a run resumed from a checkpoint rounds as the run it
    continues."""

    def __init__(self, model: nn.Module, seed: int) -> None:
        self.seed = seed
        self.step = 0  # the optimizer steps done when the copies are next rounded
        self.generator = torch.Generator()
        self.noise = RoundingNoise(seed)
        self.copies: dict[int, torch.Tensor] = {}  # by the weight's id: the tied LM head shares the embedding's
        self.weights: list[nn.Parameter] = []
        # what trains is fixed here: peft's disabled adapter (the reference model's forward) turns requires_grad off
        self.frozen: set[int] = set()
        self.stale = True
        for module in model.modules():
            if type(module) is nn.Linear:  # not LoRA's or quantised subclasses, which have forwards of their own
                if id(module.weight) not in self.copies:
                    self.copies[id(module.weight)] = None
                    self.weights.append(module.weight)
                    if not module.weight.requires_grad:
                        self.frozen.add(id(module.weight))
                module.forward = partial(self.linear, module)

    def refresh(self) -> None:
        self.generator.manual_seed(self.seed * 1_000_003 + self.step)
        with torch.no_grad():
            for weight in self.weights:  # a frozen weight (LoRA's base) is rounded once
                if id(weight) not in self.frozen or self.copies[id(weight)] is None:
                    self.copies[id(weight)] = stochastic_bf16(weight, self.generator, self.noise)
        self.stale = False

    def linear(self, module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled("cpu"):  # a float32 forward outside the training step: the master weight
            return nn.functional.linear(x, module.weight, module.bias)
        if self.stale:
            self.refresh()
        weight = _Bf16Copy.apply(module.weight, self.copies[id(module.weight)])
        return nn.functional.linear(x, weight, module.bias)  # under autocast: x to bf16, the copy as it is

    def on_step_begin(self, args, state, control, **kwargs):
        self.step = state.global_step

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.stale = True
