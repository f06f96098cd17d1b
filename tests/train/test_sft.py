"""SFT-2/3 through TRL's SFTTrainer: decode what the collated batches train on."""

from __future__ import annotations

import pytest
import torch

from coa.trajectory import read_trajectories
from tests.train.conftest import FMT
from train.checkpoint import load_model, load_tokenizer
from train.config import SFT2Config, SFT3Config, TrainConfig
from train.data import sft_dataset
from train.sft import build_sft_trainer


def _trainer(stage_cls, tiny_dir, model_dir, sets_dir, out):
    tok = load_tokenizer(tiny_dir, model_dir)
    stage = stage_cls(per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=1, learning_rate=1e-3)
    dataset, _ = sft_dataset(tok, [sets_dir / name for name in stage.data], stage.observation_loss, 4096, "sft")
    return build_sft_trainer(TrainConfig(), stage, load_model(tiny_dir, tok), tok, dataset, out), tok


def _spans(ids: torch.Tensor, trained: torch.Tensor, tok) -> tuple[list[str], list[str]]:
    """Decoded runs of trained and of untrained tokens, in order."""
    runs: dict[bool, list[str]] = {True: [], False: []}
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or trained[i] != trained[start]:
            runs[bool(trained[start])].append(tok.decode(ids[start:i]))
            start = i
    return runs[True], runs[False]


@pytest.mark.parametrize("stage_cls", [SFT2Config, SFT3Config])
def test_batches_train_exactly_the_right_segments(stage_cls, tiny_dir, model_dir, sets_dir, tmp_path):
    trainer, tok = _trainer(stage_cls, tiny_dir, model_dir, sets_dir, tmp_path)
    trajectories = {t.prompt: t for name in ("coa.parquet", "cot.parquet") for t in read_trajectories(sets_dir / name)}
    eos, seen = tok.eos_token, 0
    for batch in trainer.get_train_dataloader():
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
            ids, labels = ids[mask.bool()], labels[mask.bool()]
            trained_text, untrained_text = _spans(ids, labels != -100, tok)
            assert torch.equal(labels[labels != -100], ids[labels != -100])
            prefill = "".join(s["text"] for s in traj_prefill(trajectories, untrained_text[0]))
            traj = trajectories[untrained_text[0].removesuffix(prefill)]  # prompt + prefill: never trained
            model_segs = [s["text"] for s in traj.segments if s["kind"] == "model"]
            observations = [s["text"] for s in traj.segments if s["kind"] == "observation"]
            after_prefill = "".join(s["text"] for s in traj.segments if s["kind"] != "prefill")
            if stage_cls is SFT3Config:  # world model: everything the policy saw after the prompt and prefill
                assert trained_text == [after_prefill + eos] and untrained_text == [traj.prompt + prefill]
            else:  # model-written segments and the end token; prompt, prefill and observations masked
                assert trained_text == model_segs[:-1] + [model_segs[-1] + eos]
                assert untrained_text == [traj.prompt + prefill] + observations
                assert all(FMT.result_open not in t for t in trained_text)
            seen += 1
    assert seen == 4 and any("observation" in [s["kind"] for s in t.segments] for t in trajectories.values())


def traj_prefill(trajectories: dict, untrained_head: str) -> list[dict]:
    """The prefill segments of the trajectory whose prompt starts this untrained run of text."""
    traj = next(t for p, t in trajectories.items() if untrained_head.startswith(p))
    return [s for s in traj.segments if s["kind"] == "prefill"]


def test_a_step_changes_every_parameter(tiny_dir, model_dir, sets_dir, tmp_path):
    trainer, _ = _trainer(SFT2Config, tiny_dir, model_dir, sets_dir, tmp_path)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    for name, param in trainer.model.named_parameters():
        assert not torch.equal(param, before[name]), f"{name} did not change"


def test_the_loss_is_the_masked_nll_with_the_lm_head_only_on_trained_positions(tiny_dir, model_dir, sets_dir, tmp_path):
    trainer, _ = _trainer(SFT2Config, tiny_dir, model_dir, sets_dir, tmp_path)
    model, batch = trainer.model, next(iter(trainer.get_train_dataloader()))
    targets = batch["labels"][:, 1:]
    n_trained = (targets != -100).sum()
    projected = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: projected.append(i[0].shape[1]))
    got = trainer.compute_loss(model, batch, num_items_in_batch=n_trained)
    hook.remove()
    with torch.no_grad():  # by hand: every position projected, the trained targets' NLL summed over their count
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    want = (
        torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
        )
        / n_trained
    )
    assert torch.allclose(got.detach(), want, rtol=1e-5), (got.item(), want.item())
    assert projected == [int((targets != -100).any(dim=0).sum())] and projected[0] < targets.shape[1]
