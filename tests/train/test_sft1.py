"""SFT-1: the trainer's loss is the paper's formula; no EOS after a search-tag continuation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.train.conftest import FMT
from train.checkpoint import load_model, load_tokenizer
from train.config import SFT1Config, TrainConfig
from train.data import pair_dataset, read_pairs
from train.preference import build_sft1_trainer


def _trainer(tiny_dir, model_dir, sets_dir, out, **stage):
    tok = load_tokenizer(tiny_dir, model_dir)
    dataset, _ = pair_dataset(tok, sets_dir / "pairs.parquet", 4096)
    cfg = TrainConfig(
        sft1=SFT1Config(
            per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=1, learning_rate=1e-3, **stage
        )
    )
    return build_sft1_trainer(cfg, load_model(tiny_dir, tok), tok, dataset, out), tok


def _mean_logp(model, prompt_ids: list[int], continuation: list[int]) -> torch.Tensor:
    """P̄: mean log-prob of the continuation tokens given the prompt, one unpadded sequence."""
    ids = torch.tensor([prompt_ids + continuation], device=model.device)
    logps = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    token_logps = logps.gather(1, targets[:, None])[:, 0]
    return token_logps[len(prompt_ids) - 1 :].mean()


def test_loss_is_the_paper_formula(tiny_dir, model_dir, sets_dir, tmp_path):
    alpha = 0.2
    trainer, _ = _trainer(tiny_dir, model_dir, sets_dir, tmp_path, alpha=alpha)
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
        by_hand = []
        for prompt, chosen, rejected in zip(batch["prompt_ids"], batch["chosen_ids"], batch["rejected_ids"]):
            c, r = _mean_logp(model, prompt, chosen), _mean_logp(model, prompt, rejected)
            by_hand.append(-F.logsigmoid(c - r) + alpha * -c)
    expected = torch.stack(by_hand).mean()
    assert abs(loss.item() - expected.item()) < 1e-5
    # CPO's own NLL (token mean over the batch) differs here: lengths differ, so the check can fail
    lengths = [len(c) for c in batch["chosen_ids"]]
    assert len(set(lengths)) > 1


def test_no_eos_after_a_search_tag_continuation(tiny_dir, model_dir, sets_dir, tmp_path):
    trainer, tok = _trainer(tiny_dir, model_dir, sets_dir, tmp_path)
    by_prompt = {r["prompt"]: r for r in read_pairs(sets_dir / "pairs.parquet")}
    seen = 0
    for batch in trainer.get_train_dataloader():  # what the model is trained on, after TRL's collator
        for i, prompt in enumerate(batch["prompt_input_ids"]):
            row = by_prompt[tok.decode(prompt[batch["prompt_attention_mask"][i].bool()])]
            for side in ("chosen", "rejected"):
                ids = batch[f"{side}_input_ids"][i][batch[f"{side}_attention_mask"][i].bool()]
                labels = batch[f"{side}_labels"][i]
                trained = tok.decode(labels[labels != -100])
                if row[f"{side}_ends_turn"]:
                    assert trained == row[side] + tok.eos_token and ids[-1] == tok.eos_token_id
                else:
                    assert trained == row[side] and trained.endswith(FMT.search_close)
                    assert ids[-1] != tok.eos_token_id
            seen += 1
    assert seen == 4


@pytest.mark.parametrize("loss", ["paper", "dpo"])
@pytest.mark.slow
def test_a_step_changes_every_parameter(tiny_dir, model_dir, sets_dir, tmp_path, loss):
    trainer, _ = _trainer(tiny_dir, model_dir, sets_dir, tmp_path, loss=loss)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    for name, param in trainer.model.named_parameters():
        assert not torch.equal(param, before[name]), f"{name} did not change"
    if loss == "dpo":  # the reference stayed frozen
        for name, param in trainer.ref_model.named_parameters():
            assert torch.equal(param, before[name]), f"reference {name} changed"


def test_shared_prefix_forward_matches_the_concatenated_one(tiny_dir, model_dir, sets_dir, tmp_path):
    """The prompt run once (its KV cache shared by both sides) gives CPO's concatenated forward's log-probs and
    gradients, on a batch of pairs whose prompts differ in length (left-padded)."""
    from trl.experimental.cpo import CPOTrainer

    trainer, _ = _trainer(tiny_dir, model_dir, sets_dir, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    assert len(set(batch["prompt_attention_mask"].sum(dim=1).tolist())) > 1
    model = trainer.model
    results = {}
    for name, forward in (("shared", trainer.shared_prefix_forward), ("concat", CPOTrainer.concatenated_forward)):
        model.zero_grad(set_to_none=True)
        args = (model, batch) if name == "shared" else (trainer, model, batch)
        chosen, rejected, *_ = forward(*args)
        (chosen.sum() - 2 * rejected.sum()).backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        results[name] = chosen.detach(), rejected.detach(), grads
    (c1, r1, g1), (c2, r2, g2) = results["shared"], results["concat"]
    torch.testing.assert_close(c1, c2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(r1, r2, atol=1e-5, rtol=1e-4)
    assert g1.keys() == g2.keys() and len(g1) > 0
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], atol=1e-5, rtol=1e-3, msg=f"gradient of {name}")


def test_shared_prefix_counts_each_prompt_once(tiny_dir, model_dir, sets_dir, tmp_path):
    trainer, _ = _trainer(tiny_dir, model_dir, sets_dir, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.shared_prefix_forward(trainer.model, batch)
    prompts = batch["prompt_attention_mask"].sum(dim=1).tolist()
    conts = [
        int(batch[f"{side}_attention_mask"][i].sum()) - p
        for i, p in enumerate(prompts)
        for side in ("chosen", "rejected")
    ]
    count = trainer.tokens.counts["forward_backward"]
    assert count["tokens"] == sum(prompts) + sum(conts)
    assert count["sequences"] == len(prompts)
    contexts = [p for p in prompts for _ in range(2)]
    assert count["attention"] == sum(p * p for p in prompts) + sum(
        (p + c) ** 2 - p * p for p, c in zip(contexts, conts)
    )
