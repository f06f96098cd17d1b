"""SFT-2 (how to act) and SFT-3 (world model): one trainer, the ``observation_loss`` switch.

The dataset holds ``input_ids``/``labels`` built segment by segment by ``train.data.sft_dataset``;
TRL's SFTTrainer uses a pre-tokenised dataset with ``labels`` as it is (its prompt/completion and
``assistant_only_loss`` machinery is not involved: SmolLM2's template has no generation markers).

``packing``: TRL's best-fit-decreasing packing puts whole sequences (none is cut: ``train.data`` drops the
longer ones) side by side in rows of up to ``max_length`` tokens, padding-free. The collator restarts the
position ids at 0 for each sequence, and transformers builds the attention mask from them, so a token attends
only to earlier tokens of its own sequence (with sdpa and eager as with flash-attention's varlen kernels). The
loss is unchanged: masked tokens stay -100, and the Trainer divides the summed token losses of all
micro-batches of an optimizer step by the step's count of trained tokens, packed or not.
"""

from __future__ import annotations

from transformers import Trainer
from trl import SFTConfig, SFTTrainer

from train.common import TokenCount, bf16_weight_copies, on_gpu, peft_config, training_args
from train.config import SFT2Config, TrainConfig


class CountingSFTTrainer(SFTTrainer):
    """SFTTrainer that counts the tokens and the padding of every forward pass (``tokens``).

    On a CPU the loss is transformers' own (``Trainer.compute_loss``: the LM head under the autocast dtype, the
    cross-entropy over float32 logits, summed and divided by the step's trained tokens, as TRL's), with the LM head
    applied only where a label is trained (``trained_positions_only``). TRL's fused LM head, which SFTTrainer uses
    for its entropy and top-1 metrics, has a Triton kernel on GPUs but folds in float32 torch on a CPU: 1.3x slower
    per bf16 SFT-2 step for the same loss (docs/bench_train.md), so those two logged metrics are left out there."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens = TokenCount()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "attention_mask" in inputs:
            self.tokens.add(inputs["attention_mask"])
        else:  # padding-free: one row of several sequences
            self.tokens.add(None, position_ids=inputs["position_ids"])
        if on_gpu():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return Trainer.compute_loss(self, model, trained_positions_only(inputs), return_outputs, num_items_in_batch)


def trained_positions_only(inputs: dict) -> dict:
    """The micro-batch with the LM head kept to the positions that predict a trained label.

    SFT-2 masks the observations, most of its tokens, and the vocabulary projection of a masked position is
    wasted work. transformers' causal-LM forward projects only ``logits_to_keep`` (here the positions whose next
    label is trained in any row) and takes ``shift_labels`` as the targets already shifted, so the loss is the
    same sum over the same trained tokens."""
    targets = inputs["labels"][:, 1:]
    positions = (targets != -100).any(dim=0).nonzero().squeeze(1)
    kept = targets[:, positions].contiguous()
    return {**inputs, "labels": kept, "shift_labels": kept, "logits_to_keep": positions}


def build_sft_trainer(cfg: TrainConfig, stage: SFT2Config, model, tokenizer, dataset, out, callbacks=()):
    args = SFTConfig(
        **training_args(
            cfg,
            stage,
            out,
            # padding-free rows without packing: TRL refuses a max_length it would not enforce; train.data has
            # already dropped the longer sequences
            max_length=None if stage.padding_free and not stage.packing else stage.max_length,
            packing=stage.packing,
            packing_strategy="bfd",
            padding_free=stage.padding_free,
        )
    )
    trainer = CountingSFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(cfg, stage),
        callbacks=list(callbacks),
    )
    return bf16_weight_copies(cfg, trainer)
