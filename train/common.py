"""What every stage passes to its TRL config: optimisation, precision, logging, LoRA."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from coa.model import has_native_bf16
from train.bf16_weights import Bf16Weights
from train.config import StageConfig, TrainConfig


def on_gpu() -> bool:
    return torch.cuda.is_available()


def world_size() -> int:
    """Processes of a data-parallel launch (``accelerate launch`` / ``torchrun`` set WORLD_SIZE); 1 alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 of a data-parallel launch (or the only process): the one that writes a stage's outputs."""
    return int(os.environ.get("RANK", "0")) == 0


def use_bf16(cfg: TrainConfig) -> bool:
    """Whether the stage trains in bf16 mixed precision: ``bf16: auto`` follows the hardware
    (``coa.model.has_native_bf16``, the same detection as serving's ``dtype: auto``)."""
    return has_native_bf16() if cfg.bf16 == "auto" else bool(cfg.bf16)


def precision_args(cfg: TrainConfig) -> dict:
    """TRL/transformers precision arguments. ``bf16=True`` makes accelerate wrap the model's forward in
    ``torch.autocast(device, bfloat16)``; the parameters, their gradients and AdamW's moments stay float32.
    On a CPU, transformers accepts ``bf16`` only with ``use_cpu=True`` (it is the device anyway)."""
    bf16 = use_bf16(cfg)
    return {"bf16": bf16, **({"use_cpu": True} if bf16 and not on_gpu() else {})}


def bf16_weight_copies(cfg: TrainConfig, trainer):
    """On a CPU in bf16, ``trainer``'s linear layers multiply with bf16 copies of their float32 weights, rounded
    stochastically once per optimizer step (``train.bf16_weights``): autocast's round-to-nearest cast in every
    forward hid SFT-1's small updates from the forward (several times slower learning than float32). Returns
    ``trainer``."""
    if cfg.bf16_weight_copies and use_bf16(cfg) and not on_gpu():
        trainer.add_callback(Bf16Weights(trainer.model, cfg.seed))
    return trainer


def use_liger(cfg: TrainConfig) -> bool:
    """Liger's layer kernels: ``liger_kernels: auto`` = on a CUDA GPU where the package is installed (its Triton
    kernels have no CPU path)."""
    if cfg.liger_kernels != "auto":
        return bool(cfg.liger_kernels)
    return on_gpu() and importlib.util.find_spec("liger_kernel") is not None


def training_args(cfg: TrainConfig, stage: StageConfig, out: Path, **method_args) -> dict:
    """Keyword arguments for a TRL ``*Config`` writing into the work folder ``out``: the stage's settings,
    then the method's, then ``trl_args``."""
    return {
        "output_dir": str(out),
        "learning_rate": stage.learning_rate,
        "num_train_epochs": stage.num_train_epochs,
        "max_steps": stage.max_steps,
        "per_device_train_batch_size": stage.per_device_train_batch_size,
        "gradient_accumulation_steps": stage.gradient_accumulation_steps,
        **precision_args(cfg),
        **({"use_liger_kernel": True} if use_liger(cfg) else {}),
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "logging_steps": cfg.logging_steps,
        # resumable checkpoints (weights, optimizer, RNG, data position) in the work folder; the stage's
        # output itself is written by train.checkpoint (merged adapters, completion marker)
        "save_strategy": "steps" if cfg.save_steps else "no",
        **({"save_steps": cfg.save_steps, "save_total_limit": 1} if cfg.save_steps else {}),
        "report_to": [] if cfg.report_to == "none" else [cfg.report_to],
        "seed": cfg.seed,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": on_gpu(),
        "disable_tqdm": True,
        # every parameter gets a gradient in these methods: DDP's unused-parameter search only costs time
        **({"ddp_find_unused_parameters": False} if world_size() > 1 else {}),
        **method_args,
        **stage.trl_args,
    }


def peft_config(cfg: TrainConfig, stage: StageConfig):
    """A LoRA config when the stage's rank (``stage.lora_r``, else the top-level ``lora_r``) is > 0, else None
    (full fine-tuning). RL stages get no LoRA dropout: the rollout engine samples from the merged weights
    without it, and the loss's probability ratio must compare the same function."""
    rank = cfg.lora_r if stage.lora_r is None else stage.lora_r
    if rank <= 0:
        return None
    from peft import LoraConfig

    rl = hasattr(stage, "num_generations")
    return LoraConfig(
        r=rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0 if rl else cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        task_type="CAUSAL_LM",
    )


class TokenCount:
    """What a stage's forward passes computed: token positions (padding included) and real tokens, for passes with
    gradients (forward and backward) and without (RL's old-policy log-probs, a DPO reference). Per kind of pass it
    also counts sequences and sums their lengths squared, the quantity attention's cost follows (``bench/
    bench_train.py`` turns the counts into FLOPs). A trainer calls ``add`` once per pass; ``train.run`` writes
    ``summary`` into the stage's metrics."""

    KINDS = ("forward_backward", "forward_only")

    def __init__(self) -> None:
        self.computed = 0
        self.counts = {kind: {"tokens": 0, "sequences": 0, "attention": 0} for kind in self.KINDS}

    @property
    def real(self) -> int:
        return sum(c["tokens"] for c in self.counts.values())

    @property
    def backward(self) -> int:
        return self.counts["forward_backward"]["tokens"]

    def add(
        self,
        mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        backward: bool | None = None,
        context: list[int] | None = None,
    ) -> None:
        """One pass over a batch: ``mask`` (rows x positions) is 1 at real tokens; padding-free rows (several
        sequences in one row, no mask) pass ``position_ids`` instead, which restart at 0 at each sequence.
        ``context`` (per row) is how many cached tokens each row's tokens also attend to (a shared prefix computed
        in an earlier pass): its tokens are not counted again, their attention is. ``backward`` defaults to whether
        autograd is recording."""
        backward = torch.is_grad_enabled() if backward is None else backward
        if position_ids is not None:
            starts = (position_ids == 0).flatten().nonzero().flatten().tolist() + [position_ids.numel()]
            lengths = [b - a for a, b in zip(starts, starts[1:])]
            self.computed += position_ids.numel()
        else:
            lengths = mask.sum(dim=1).tolist()
            self.computed += mask.numel()
        context = context or [0] * len(lengths)
        count = self.counts["forward_backward" if backward else "forward_only"]
        count["tokens"] += int(sum(lengths))
        count["sequences"] += sum(1 for n, c in zip(lengths, context) if n and not c)
        count["attention"] += int(sum((c + n) ** 2 - c * c for n, c in zip(lengths, context)))

    def summary(self, seconds: float | None = None) -> dict:
        """The stage's metrics: computed and real tokens, the padding fraction (computed positions that held no
        token), the counts per kind of pass and, given the seconds the optimizer steps took, real tokens of passes
        with gradients per second."""
        out = {
            "computed_tokens": self.computed,
            "real_tokens": self.real,
            "padding_fraction": round(1 - self.real / self.computed, 6) if self.computed else 0.0,
        }
        for kind, count in self.counts.items():
            out.update({f"{kind}_{name}": value for name, value in count.items()})
        if seconds:
            out.update(seconds=round(seconds, 3), forward_backward_tokens_per_second=round(self.backward / seconds, 2))
        return out
