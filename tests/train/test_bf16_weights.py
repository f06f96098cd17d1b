"""train.bf16_weights: stochastic rounding to bf16 is unbiased where round-to-nearest hides small updates, and the
linear layers multiply with a copy rounded once per optimizer step while the gradient reaches the float32 weight."""

from __future__ import annotations

import torch
from torch import nn

from train.bf16_weights import Bf16Weights, RoundingNoise, stochastic_bf16


def test_stochastic_rounding_shows_an_update_round_to_nearest_hides():
    generator, noise = torch.Generator().manual_seed(0), RoundingNoise(seed=0)
    on_grid = torch.tensor([0.05, -0.05, 1.0]).to(torch.bfloat16).float()
    assert torch.equal(stochastic_bf16(on_grid, generator, noise).float(), on_grid)  # a bf16 value stays itself
    # a weight on the grid moved by an update of 2e-5, a tenth of its grid step (2.4e-4 at 0.05)
    moved = on_grid[:1].repeat(200_000) + 2e-5
    assert torch.equal(moved.to(torch.bfloat16).float(), on_grid[:1].repeat(200_000))  # round-to-nearest: gone
    rounded = stochastic_bf16(moved, generator, noise)
    assert rounded.dtype == torch.bfloat16
    assert set(rounded.float().unique().tolist()) == {
        on_grid[0].item(),
        on_grid[0].item() + 2**-12,
    }  # 0.05's neighbours
    shift = (rounded.float().mean() - on_grid[0]).item()
    assert abs(shift - 2e-5) < 2e-6  # unbiased: on average the weight moved by the update


def test_the_noise_windows_round_every_weight_unbiased_over_steps_and_across_chunks():
    """A weight longer than one chunk of the pool (three windows here), rounded at many steps: each element's mean
    over the steps is its float32 value, what a draw per weight per step gave; signs and shapes are kept."""
    generator, noise = torch.Generator().manual_seed(1), RoundingNoise(seed=1, chunk=1_000, window=4_096)
    grid = torch.linspace(-0.5, 0.5, 2_500).to(torch.bfloat16).float().view(50, 50)
    step = 2.0 ** (torch.floor(torch.log2(grid.abs().clamp(min=1e-3))) - 7)  # the bf16 grid step: 8 bits of mantissa
    weight = grid + 0.3 * step * grid.sign()  # 30% of the way to the next bf16 away from zero
    steps = torch.stack([stochastic_bf16(weight, generator, noise).float() for _ in range(2_000)])
    assert steps.shape == (2_000, 50, 50)
    assert set(torch.unique(torch.sign(steps[:, grid != 0] * grid[grid != 0])).tolist()) == {1.0}
    moved_up = (steps.abs() > grid.abs()).float().mean(0)[grid.abs() > 1e-3]
    assert moved_up.min() > 0.24 and moved_up.max() < 0.36  # each weight: ~30% up, none stuck on one side
    assert abs(moved_up.mean().item() - 0.3) < 0.01


def test_linear_layers_use_one_copy_per_optimizer_step_and_train_the_float32_weight():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.Linear(16, 4, bias=False))
    reference = [layer.weight.detach().clone() for layer in model]
    copies = Bf16Weights(model, seed=0)
    x = torch.randn(3, 8)

    def loss():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x).float().square().sum()

    loss().backward()
    first = dict(copies.copies)
    loss().backward()  # a second micro-batch of the same optimizer step: the same copies
    assert all(copies.copies[k] is first[k] for k in first)
    for layer, weight in zip(model, reference):
        assert layer.weight.grad.dtype == torch.float32 and layer.weight.grad.abs().sum() > 0
        assert copies.copies[id(layer.weight)].dtype == torch.bfloat16
        assert (copies.copies[id(layer.weight)].float() - weight).abs().max() <= weight.abs().max() / 2**7
    # the same gradient as autocast's own cast would give, had it rounded to the same bf16 values
    plain = nn.Sequential(nn.Linear(8, 16, bias=False), nn.Linear(16, 4, bias=False))
    with torch.no_grad():
        for dst, layer in zip(plain, model):
            dst.weight.copy_(copies.copies[id(layer.weight)].float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain(x).float().square().sum().backward()
    for dst, layer in zip(plain, model):
        torch.testing.assert_close(layer.weight.grad, 2 * dst.weight.grad)  # two micro-batches accumulated
    copies.on_optimizer_step(None, None, None)
    loss()
    assert all(copies.copies[k] is not first[k] for k in first)  # rounded again after the step


def test_outside_autocast_the_float32_weight_computes():
    model = nn.Linear(8, 4, bias=False)
    Bf16Weights(model, seed=0)
    x = torch.randn(2, 8)
    assert torch.equal(model(x), x @ model.weight.T)
