"""Several sequences per micro-batch (padding-free rows) against one: the same sequences per optimizer step give the
same loss and the same update, so ``per_device_train_batch_size`` x ``gradient_accumulation_steps`` is a speed
setting only (the Trainer divides each step's summed token losses by the step's trained tokens)."""

from __future__ import annotations

import pytest
import torch

from train.checkpoint import load_model, load_tokenizer
from train.config import SFT2Config, TrainConfig
from train.data import sft_dataset
from train.sft import build_sft_trainer

LAYOUTS = ((1, 4, False), (2, 2, True), (4, 1, True))  # sequences per micro-batch, accumulation, padding-free
STEPS = 2
# (loss, update), relative: the logged losses and the weights' change over the steps, against 1 x 4. Measured on the
# tiny model: float32 1e-7 and 4e-6 (sums in another order); bf16 (stochastically rounded weight copies, the same
# per step in every layout) 5e-6 and 8e-3 (each micro-batch's activations rounded on their own)
TOLERANCE = {False: (1e-5, 1e-4), True: (1e-4, 5e-2)}


def train(tiny_dir, model_dir, sets_dir, out, layout, bf16: bool):
    micro, accumulation, padding_free = layout
    tok = load_tokenizer(tiny_dir, model_dir)
    stage = SFT2Config(
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        padding_free=padding_free,
        max_steps=STEPS,
        learning_rate=1e-3,
    )
    dataset, _ = sft_dataset(tok, [sets_dir / name for name in stage.data], False, 4096, "sft2")
    assert len(dataset) == micro * accumulation  # each step trains every sequence once
    model = load_model(tiny_dir, tok)
    start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    trainer = build_sft_trainer(TrainConfig(bf16=bf16), stage, model, tok, dataset, out)
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return losses, torch.cat([p.detach().flatten() for p in trainer.model.parameters()]) - start


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_sequences_per_micro_batch_leave_the_loss_and_the_update_unchanged(
    bf16, tiny_dir, model_dir, sets_dir, tmp_path
):
    (losses, update), *others = [
        train(tiny_dir, model_dir, sets_dir, tmp_path / f"{m}x{a}", (m, a, free), bf16) for m, a, free in LAYOUTS
    ]
    assert len(losses) == STEPS and update.abs().sum() > 0
    for other_losses, other_update in others:
        loss_tolerance, update_tolerance = TOLERANCE[bf16]
        assert other_losses == pytest.approx(losses, rel=loss_tolerance)
        assert ((other_update - update).norm() / update.norm()).item() < update_tolerance
