"""What every stage passes to its TRL config: optimisation, precision, logging, LoRA."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from train.config import StageConfig, TrainConfig


def on_gpu() -> bool:
    return torch.cuda.is_available()


def world_size() -> int:
    """Processes of a data-parallel launch (``accelerate launch`` / ``torchrun`` set WORLD_SIZE); 1 alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 of a data-parallel launch (or the only process): the one that writes a stage's outputs."""
    return int(os.environ.get("RANK", "0")) == 0


def training_args(cfg: TrainConfig, stage: StageConfig, out: Path, **method_args) -> dict:
    """Keyword arguments for a TRL ``*Config`` writing into the work folder ``out``: the stage's settings,
    then the method's, then ``trl_args``."""
    bf16 = on_gpu() if cfg.bf16 is None else cfg.bf16
    return {
        "output_dir": str(out),
        "learning_rate": stage.learning_rate,
        "num_train_epochs": stage.num_train_epochs,
        "max_steps": stage.max_steps,
        "per_device_train_batch_size": stage.per_device_train_batch_size,
        "gradient_accumulation_steps": stage.gradient_accumulation_steps,
        "bf16": bf16,
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
    return LoraConfig(r=rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0 if rl else cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")
