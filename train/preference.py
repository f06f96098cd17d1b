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
import os

import torch

from train.common import TokenCount, peft_config, training_args
from train.config import SFT1Config, TrainConfig

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # CPO lives in trl.experimental

from trl import DPOConfig, DPOTrainer  # noqa: E402
from trl.experimental.cpo import CPOConfig, CPOTrainer  # noqa: E402


def pair_mask(batch: dict) -> torch.Tensor:
    """The attention mask of CPO's one forward over a batch of pairs: the chosen rows then the rejected rows, each
    padded to the longer of the two sides (what ``CPOTrainer.concatenated_inputs`` builds)."""
    chosen, rejected = batch["chosen_attention_mask"], batch["rejected_attention_mask"]
    width = max(chosen.size(1), rejected.size(1))
    return torch.cat([torch.nn.functional.pad(m, (0, width - m.size(1))) for m in (chosen, rejected)])


class PaperCPOTrainer(CPOTrainer):
    """CPO with the paper's per-pair NLL normalisation, on ``prompt_ids``/``chosen_ids``/``rejected_ids``;
    ``tokens`` counts each forward pass's tokens and padding."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens = TokenCount()

    def tokenize_row(self, feature, model=None) -> dict:
        batch = {"prompt_input_ids": feature["prompt_ids"], "prompt_attention_mask": [1] * len(feature["prompt_ids"])}
        for side in ("chosen", "rejected"):
            ids = feature["prompt_ids"] + feature[f"{side}_ids"]
            batch[f"{side}_input_ids"] = ids
            batch[f"{side}_attention_mask"] = [1] * len(ids)
            batch[f"{side}_labels"] = [-100] * len(feature["prompt_ids"]) + feature[f"{side}_ids"]
        return batch

    def concatenated_forward(self, model, batch):
        self.tokens.add(pair_mask(batch))
        chosen_logps, *rest = super().concatenated_forward(model, batch)
        # with loss_type="simpo" the logps are per-sequence means: -mean over pairs of P̄(chosen)
        rest[3] = -chosen_logps.mean()
        return (chosen_logps, *rest)


class PretokenizedDPOTrainer(DPOTrainer):
    """DPO on the ids built by ``train.data`` (its own preparation would append EOS everywhere); ``tokens`` counts
    the policy's passes and the reference's (without gradients)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens = TokenCount()

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.tokens.add(inputs["attention_mask"])
        if not self.precompute_ref_logps:  # the reference's forward over the same batch
            self.tokens.add(inputs["attention_mask"], backward=False)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def build_sft1_trainer(cfg: TrainConfig, model, tokenizer, dataset, out, callbacks=()):
    stage: SFT1Config = cfg.sft1
    common = training_args(cfg, stage, out, max_length=stage.max_length)
    if stage.loss == "paper":
        args = CPOConfig(**{"loss_type": "simpo", "simpo_gamma": 0.0, "beta": 1.0, "cpo_alpha": stage.alpha,
                            "label_smoothing": 0.0, "remove_unused_columns": False, **common})
        return PaperCPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                               peft_config=peft_config(cfg, stage), callbacks=list(callbacks))
    args = DPOConfig(**{"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, stage.alpha],
                        "beta": stage.dpo_beta, **common})
    peft = peft_config(cfg, stage)
    # the reference is the start checkpoint; with LoRA, TRL disables the adapter instead of keeping a copy
    # (and without an explicit copy it would reload the weights from the model's saved path)
    ref = None if peft else copy.deepcopy(model).eval()
    return PretokenizedDPOTrainer(model=model, ref_model=ref, args=args, train_dataset=dataset,
                                  processing_class=tokenizer, peft_config=peft, callbacks=list(callbacks))
