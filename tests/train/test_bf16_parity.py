"""bf16 mixed precision against float32 on the real SmolLM2-135M: the same SFT-2 steps give the same losses
within a stated tolerance, the matmuls really ran in bf16, and the weights, AdamW's moments and the saved
checkpoint stay float32 (so updates smaller than bf16's resolution, as RL's are, survive)."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from train.checkpoint import load_model, load_tokenizer, write_checkpoint
from train.config import SFT2Config, TrainConfig
from train.data import sft_dataset
from train.sft import build_sft_trainer

STEPS = 3
# |bf16 loss - fp32 loss| / fp32 loss, per step. bf16 keeps 8 bits of mantissa (relative rounding 2^-9 = 0.2%
# per operand); over 30 layers and a 49K-word softmax the mean token loss of one ~600-token sequence moved
# by at most ~0.3% in three steps here. 2% leaves room for other CPUs' kernels and still fails a run that
# trains on other tokens or at another rate.
TOLERANCE = 0.02


def masked_nll(model, row: dict, bf16: bool) -> float:
    """The SFT loss by hand: mean negative log-likelihood of the tokens whose label is not -100."""
    ids, labels = torch.tensor([row["input_ids"]]), torch.tensor(row["labels"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids).logits[0, :-1].float()
    return torch.nn.functional.cross_entropy(logits, labels[1:], ignore_index=-100).item()


def train_steps(model_dir, tok, dataset, out, bf16: bool):
    """STEPS optimizer steps of one sequence each; the trainer, its logged losses and the matmul dtypes seen."""
    stage = SFT2Config(per_device_train_batch_size=1, gradient_accumulation_steps=1, max_steps=STEPS,
                       learning_rate=2e-5)
    trainer = build_sft_trainer(TrainConfig(bf16=bf16), stage, load_model(model_dir, tok), tok, dataset, out)
    seen = set()
    trainer.model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    trainer.train()
    return trainer, [e["loss"] for e in trainer.state.log_history if "loss" in e], seen


@pytest.mark.model
@pytest.mark.slow
def test_bf16_sft_steps_match_float32_and_keep_float32_state(model_dir, sets_dir, tmp_path):
    tok = load_tokenizer(model_dir, model_dir)
    dataset, _ = sft_dataset(tok, [sets_dir / "coa.parquet"], False, 4096, "sft2")
    dataset = dataset.select([min(range(len(dataset)), key=lambda i: len(dataset[i]["input_ids"]))])  # every step
    start = load_model(model_dir, tok)
    first = {bf16: masked_nll(start, dataset[0], bf16) for bf16 in (False, True)}
    before = {n: p.detach().clone() for n, p in start.named_parameters()}
    del start

    fp32, fp32_losses, fp32_seen = train_steps(model_dir, tok, dataset, tmp_path / "fp32", bf16=False)
    del fp32
    bf16, bf16_losses, bf16_seen = train_steps(model_dir, tok, dataset, tmp_path / "bf16", bf16=True)

    assert fp32_seen == {torch.float32} and bf16_seen == {torch.bfloat16}  # autocast on in the bf16 run only
    assert fp32_losses[0] == pytest.approx(first[False], rel=1e-4)  # the loss is the masked NLL we think it is
    assert bf16_losses[0] == pytest.approx(first[True], rel=1e-3) and bf16_losses[0] != fp32_losses[0]
    assert len(fp32_losses) == len(bf16_losses) == STEPS and fp32_losses[-1] < fp32_losses[0]
    assert bf16_losses == pytest.approx(fp32_losses, rel=TOLERANCE)

    params = dict(bf16.model.named_parameters())
    assert {p.dtype for p in params.values()} == {torch.float32}
    moved = [n for n, p in params.items() if not torch.equal(p.detach(), before[n])]
    assert len(moved) == len(params), f"did not move: {sorted(set(params) - set(moved))[:5]}"
    moments = [t for state in bf16.optimizer.state_dict()["state"].values() for k, t in state.items() if k != "step"]
    assert moments and {t.dtype for t in moments} == {torch.float32}
    folder = write_checkpoint(bf16.model, tok, tmp_path / "checkpoint")
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
