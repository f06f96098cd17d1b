"""bf16 mixed precision against float32 on the real SmolLM2-135M, over the same SFT-2 steps: the matmuls really
run in bf16, the losses agree within stated tolerances, and the weights, AdamW's moments and the saved checkpoint
stay float32.

What bf16 changes, and what it must not: its forward multiplies with the weights rounded to 8 bits of mantissa,
so an update smaller than half a step of that grid (about |w| / 512: 1e-4 for a weight of 0.05) does not show in
the next bf16 forward; the float32 master weights keep it, and it shows once updates add up past the grid. The
test therefore compares (1) the first step's loss, the same weights computed both ways, and (2) what the steps
taught: the checkpoint each run saved, evaluated in float32 on the trained sequence. Measured here (3 steps at
2e-5 on one 659-token sequence): (1) 2.0162 vs 2.0191; (2) 2.019 -> 1.307 vs 2.019 -> 1.274, 95.6% of the float32
run's reduction, while the bf16 run's own logged loss of step 3 was 1.900 (float32: 1.368): the rounding above.
That was with autocast's round-to-nearest casts; a CPU's bf16 forward now multiplies with weights rounded
stochastically once per step (train.bf16_weights), which shows each update in expectation: the second test
holds each stage's logged losses over 8 steps to float32's.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from safetensors import safe_open

from coa.formats import get_format
from train.checkpoint import load_model, load_tokenizer, write_checkpoint
from train.config import SFT1Config, SFT2Config, TrainConfig
from train.data import sft_dataset
from train.sft import build_sft_trainer

STEPS = 3
COMPUTE_TOLERANCE = 0.005  # relative: one loss of the same weights, bf16 vs float32 matmuls
LEARNED_SHARE = 0.9  # the bf16 run's loss reduction (its weights evaluated in float32) over the float32 run's


def masked_nll(model, row: dict, bf16: bool = False) -> float:
    """The SFT loss by hand: mean negative log-likelihood of the tokens whose label is not -100."""
    ids, labels = torch.tensor([row["input_ids"]]), torch.tensor(row["labels"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids).logits[0, :-1].float()
    return torch.nn.functional.cross_entropy(logits, labels[1:], ignore_index=-100).item()


def train_steps(model_dir, tok, dataset, out, bf16: bool):
    """STEPS optimizer steps on the one sequence of ``dataset``: the trainer, its logged losses, the dtypes the
    first MLP's matmul produced, and the checkpoint it saved."""
    stage = SFT2Config(
        per_device_train_batch_size=1, gradient_accumulation_steps=1, max_steps=STEPS, learning_rate=2e-5
    )
    trainer = build_sft_trainer(TrainConfig(bf16=bf16), stage, load_model(model_dir, tok), tok, dataset, out)
    seen = set()
    trainer.model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return trainer, losses, seen, write_checkpoint(trainer.model, tok, out / "checkpoint")


@pytest.mark.model
@pytest.mark.slow
def test_bf16_sft_steps_match_float32_and_keep_float32_state(model_dir, sets_dir, tmp_path):
    tok = load_tokenizer(model_dir, model_dir)
    dataset, _ = sft_dataset(tok, [sets_dir / "coa.parquet"], False, 4096, "sft2")
    dataset = dataset.select([min(range(len(dataset)), key=lambda i: len(dataset[i]["input_ids"]))])
    row = dataset[0]
    start = load_model(model_dir, tok)
    first = masked_nll(start, row)
    before = {n: p.detach().clone() for n, p in start.named_parameters()}
    del start

    fp32, fp32_losses, fp32_seen, fp32_saved = train_steps(model_dir, tok, dataset, tmp_path / "fp32", bf16=False)
    del fp32
    bf16, bf16_losses, bf16_seen, bf16_saved = train_steps(model_dir, tok, dataset, tmp_path / "bf16", bf16=True)
    taught = {
        name: masked_nll(load_model(folder, tok), row) for name, folder in (("fp32", fp32_saved), ("bf16", bf16_saved))
    }

    assert fp32_seen == {torch.float32} and bf16_seen == {torch.bfloat16}  # autocast in the bf16 run only
    assert fp32_losses[0] == pytest.approx(first, rel=1e-4)  # the loss is the masked NLL we think it is
    assert len(fp32_losses) == len(bf16_losses) == STEPS and bf16_losses[0] != fp32_losses[0]
    assert bf16_losses[0] == pytest.approx(fp32_losses[0], rel=COMPUTE_TOLERANCE)
    assert taught["fp32"] < first - 0.2  # the steps taught the sequence...
    assert (first - taught["bf16"]) / (first - taught["fp32"]) >= LEARNED_SHARE  # ...nearly as much in bf16

    params = dict(bf16.model.named_parameters())
    assert {p.dtype for p in params.values()} == {torch.float32}
    moved = [n for n, p in params.items() if not torch.equal(p.detach(), before[n])]
    assert len(moved) == len(params), f"did not move: {sorted(set(params) - set(moved))[:5]}"
    moments = [t for state in bf16.optimizer.state_dict()["state"].values() for k, t in state.items() if k != "step"]
    assert moments and {t.dtype for t in moments} == {torch.float32}
    with safe_open(bf16_saved / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}


def test_bf16_auto_follows_the_hardware_and_reaches_trl(tmp_path):
    """``bf16: auto`` is on exactly where ``coa.model.has_native_bf16`` finds bf16 units (the detection serving
    uses); on a CPU, transformers takes bf16 only with ``use_cpu``; a bad value names the choices."""
    from trl import SFTConfig

    from coa.model import bf16_choice, cpu_bf16_choice, cpu_has_native_bf16, has_native_bf16
    from train.common import precision_args, training_args

    assert cpu_has_native_bf16("flags\t: fpu avx2 avx512f avx512_bf16") and not cpu_has_native_bf16("flags\t: avx2")
    # the choice says why, per kind of CPU (the bench prints it)
    amx, avx512, neither = (
        cpu_bf16_choice(f"flags\t: {flags}")
        for flags in ("avx512_bf16 amx_bf16 amx_tile", "avx512f avx512_bf16", "avx2")
    )
    assert amx[0] and "AMX" in amx[1] and avx512[0] and "avx512_bf16 (no AMX)" in avx512[1]
    assert not neither[0] and "emulated" in neither[1]
    assert bf16_choice()[0] is has_native_bf16()
    assert precision_args(TrainConfig())["bf16"] is has_native_bf16()
    assert precision_args(TrainConfig(bf16=False)) == {"bf16": False}
    forced = precision_args(TrainConfig(bf16=True))
    assert forced == ({"bf16": True} if torch.cuda.is_available() else {"bf16": True, "use_cpu": True})
    args = SFTConfig(**training_args(TrainConfig(bf16=True), SFT2Config(), tmp_path))
    assert args.bf16 and args.mixed_precision == "bf16"
    with pytest.raises(ValueError, match="bf16 must be auto, true or false; got 'yes please'"):
        TrainConfig(bf16="yes please")


# ---- each stage's own loss at its own learning rate, bf16 against float32 ------------------------------------

PARITY_STEPS = 8
# bf16's mean logged loss over steps 2-8 against float32's, relative. Measured (2 threads): sft1 0.4759 vs 0.4771,
# sft2 0.4473 vs 0.4537 with the stochastically rounded bf16 weights (train.bf16_weights); with autocast's
# round-to-nearest casts SFT-1's was 0.884 (losses 1.12 -> 0.77 against 1.12 -> 0.33): the start weights lie on
# the bf16 grid and its 2e-5 updates rounded back to them
LOSS_TOLERANCE = 0.05
QUESTION = "Which opera did Gian Carlo Menotti write for television in 1951?"


def short_sets(tok) -> dict:
    """A pair and a trajectory of ~60 tokens each, in the chat template, so 8 steps of the 135M model take seconds."""
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    fmt = get_format("autocoa")
    search = tok(
        "<think>\nI am not sure. " + fmt.search_call("Menotti 1951 television opera"), add_special_tokens=False
    )
    answer = tok("<think>\nI know it.\n</think>\n\n" + fmt.answer_text("Aida"), add_special_tokens=False)
    pair = {"prompt_ids": prompt_ids, "chosen_ids": search["input_ids"], "rejected_ids": answer["input_ids"]}
    correct = tok(
        "<think>\nIt was Amahl and the Night Visitors.\n</think>\n\n" + fmt.answer_text("Amahl and the Night Visitors"),
        add_special_tokens=False,
    )
    ids = prompt_ids + correct["input_ids"] + [tok.eos_token_id]
    sequence = {"input_ids": ids, "labels": [-100] * len(prompt_ids) + ids[len(prompt_ids) :]}
    return {"sft1": Dataset.from_list([pair]), "sft2": Dataset.from_list([sequence])}


def stage_losses(stage: str, model_dir, tok, dataset, out, bf16: bool) -> list[float]:
    """PARITY_STEPS optimizer steps of ``stage`` (its default loss and learning rate, one example a step) from the
    base model; the logged losses."""
    from train.preference import build_sft1_trainer

    settings = {"max_steps": PARITY_STEPS, "gradient_accumulation_steps": 1}
    model = load_model(model_dir, tok)
    if stage == "sft1":
        trainer = build_sft1_trainer(TrainConfig(bf16=bf16, sft1=SFT1Config(**settings)), model, tok, dataset, out)
    else:
        trainer = build_sft_trainer(TrainConfig(bf16=bf16), SFT2Config(**settings), model, tok, dataset, out)
    trainer.train()
    return [e["loss"] for e in trainer.state.log_history if "loss" in e]


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft1", "sft2"])
def test_bf16_learns_each_stage_as_float32_does(stage, model_dir, tmp_path):
    tok = load_tokenizer(model_dir, model_dir)
    dataset = short_sets(tok)[stage]
    fp32 = stage_losses(stage, model_dir, tok, dataset, tmp_path / "fp32", bf16=False)
    bf16 = stage_losses(stage, model_dir, tok, dataset, tmp_path / "bf16", bf16=True)
    print(f"{stage} losses: float32 {[round(x, 4) for x in fp32]}, bf16 {[round(x, 4) for x in bf16]}")

    assert len(fp32) == len(bf16) == PARITY_STEPS
    assert bf16[0] == pytest.approx(fp32[0], rel=0.02)  # the same start, computed both ways
    assert fp32[-1] < 0.7 * fp32[0]  # float32 learned the example...
    later_fp32, later_bf16 = sum(fp32[1:]) / (PARITY_STEPS - 1), sum(bf16[1:]) / (PARITY_STEPS - 1)
    assert later_bf16 == pytest.approx(later_fp32, rel=LOSS_TOLERANCE)  # ...and bf16 as fast
