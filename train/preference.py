"""SFT-1, when to act: the paper's contrastive loss on decision-point pairs.

    L = -log σ(P̄(chosen) - P̄(rejected)) + α · (-P̄(chosen))

P̄ is the mean log-prob of the continuation's tokens given the shared prompt (prefix included); there
is no reference model. TRL's experimental CPO computes the first term exactly with
``loss_type="simpo", simpo_gamma=0, beta=1`` (its P̄ is the per-sequence mean), but its NLL term is a
token mean over the whole batch, which weights long chosen continuations more than the paper's
per-pair mean; ``PaperCPOTrainer`` replaces only that term and feeds CPO the ids built by
``train.data`` (CPO's own tokenisation appends EOS to every continuation).

``loss=dpo`` is offered as the alternative: DPO's sigmoid term (with a reference model: a frozen copy
of the start checkpoint) + α·NLL (``loss_type=["sigmoid", "sft"]``); TRL's ``sft`` term is a token
mean over the batch.
"""

from __future__ import annotations

import copy


from train.common import bf16_weight_copies, peft_config, training_args
from train.config import SFT1Config, TrainConfig
from train.trl_glue import PaperCPOTrainer, PretokenizedDPOTrainer

from trl import DPOConfig
from trl.experimental.cpo import CPOConfig


def build_sft1_trainer(cfg: TrainConfig, model, tokenizer, dataset, out, callbacks=()):
    stage: SFT1Config = cfg.sft1
    common = training_args(cfg, stage, out, max_length=stage.max_length)
    if stage.loss == "paper":
        args = CPOConfig(
            **{
                "loss_type": "simpo",
                "simpo_gamma": 0.0,
                "beta": 1.0,
                "cpo_alpha": stage.alpha,
                "label_smoothing": 0.0,
                "remove_unused_columns": False,
                **common,
            }
        )
        trainer = PaperCPOTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config(cfg, stage),
            callbacks=list(callbacks),
        )
        return bf16_weight_copies(cfg, trainer)
    args = DPOConfig(
        **{"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, stage.alpha], "beta": stage.dpo_beta, **common}
    )
    peft = peft_config(cfg, stage)
    # the reference is the start checkpoint; with LoRA, TRL disables the adapter instead of keeping a copy
    # (and without an explicit copy it would reload the weights from the model's saved path)
    ref = None if peft else copy.deepcopy(model).eval()
    trainer = PretokenizedDPOTrainer(
        model=model,
        ref_model=ref,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft,
        callbacks=list(callbacks),
    )
    return bf16_weight_copies(cfg, trainer)
