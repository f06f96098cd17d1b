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

BF16_DROPPED_BITS = 16  # a float32 whose low 16 bits are zero is exactly a bf16


def stochastic_bf16(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``weight`` (float32) rounded to bf16 stochastically: to the next bf16 away from zero with probability the
    dropped bits' share of the grid step, else toward zero (unbiased: E[result] = weight)."""
    bits = weight.detach().contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << BF16_DROPPED_BITS, bits.shape, dtype=torch.int32, generator=generator)
    kept = (bits + noise) & -(1 << BF16_DROPPED_BITS)  # the carry rounds the magnitude up
    return kept.view(torch.float32).to(torch.bfloat16)


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
                    self.copies[id(weight)] = stochastic_bf16(weight, self.generator)
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
