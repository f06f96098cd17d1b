"""SFT-2 (how to act) and SFT-3 (world model): one trainer, the ``observation_loss`` switch.

The dataset holds ``input_ids``/``labels`` built segment by segment by ``train.data.sft_dataset``;
TRL's SFTTrainer uses a pre-tokenised dataset with ``labels`` as it is (its prompt/completion and
``assistant_only_loss`` machinery is not involved: SmolLM2's template has no generation markers).
"""
from __future__ import annotations

from trl import SFTConfig, SFTTrainer

from train.common import peft_config, training_args
from train.config import SFT2Config, TrainConfig


def build_sft_trainer(cfg: TrainConfig, stage: SFT2Config, model, tokenizer, dataset, out, callbacks=()):
    args = SFTConfig(**training_args(cfg, stage, out, max_length=stage.max_length, packing=False))
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft_config(cfg, stage), callbacks=list(callbacks))
