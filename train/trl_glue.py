"""Everything train/ takes from TRL's internals, in one place, behind a version guard.

TRL's trainers change monthly; what the stages rely on beyond TRL's public API lives here, and
``tests/train/test_trl_glue.py`` checks each piece against the installed TRL (a signature, a module global, a
tuple layout), so an upgrade fails there, naming the TRL symbol, instead of silently training something else:

  ``chunked_logprob.TOKEN_CHUNK_SIZE``                  module global: the fused LM head's tile (tile_lm_head_for_cpu)
  ``GRPOTrainer._get_per_token_logps_and_entropies``    private method, overridden (TrimmingGRPOTrainer); returns
                                                         (logps, entropies, aux_loss)
  ``GRPOTrainer._log_metric`` / ``GRPOTrainer._metrics`` private: a value joins the step's log row (log_metric,
                                                         add_step_metric)
  ``GRPOTrainer._calculate_rewards``                    private, overridden (TeacherGuidedGRPOTrainer): called with
                                                         the batch's rows; returns every process's rewards (rows in
                                                         process order x reward functions)
  ``GRPOTrainer.loss_is_scaled_for_ga``                 True: compute_loss's result is already divided by the
                                                         accumulation steps and backpropagated as returned, so a term
                                                         added to one micro-batch counts once per optimizer step
  ``CPOTrainer.concatenated_forward``                   positional tuple (chosen_logps, rejected_logps,
                                                         chosen_logits, rejected_logits, nll_loss[, aux]);
                                                         PaperCPOTrainer replaces nll_loss; its shared-prefix
                                                         forward returns the same layout and reads CPOTrainer's
                                                         pad_token_id, aux_loss_enabled, is_encoder_decoder
                                                         (tests/train/test_sft1.py: against CPO's own forward)
  ``CPOTrainer.tokenize_row``                           overridden: CPO reads our pre-built ids
  ``DPOTrainer._prepare_dataset`` / ``precompute_ref_logps``   private: DPO keeps our pre-built ids
  ``trl.models.unwrap_model_for_generation``            not exported by ``trl``: generation on the live policy
  ``rollout_func`` (experimental)                       GRPOTrainer's rollout plug point (train.rollout)

The guard: importing this module checks that the installed TRL is one these were tested on
(``TRL_SUPPORTED``); another version stops with one line naming both. ``COA_ALLOW_TRL=1`` lets it run anyway
(then run ``pytest tests/train/test_trl_glue.py`` first: it names the patch that no longer fits).
"""

from __future__ import annotations

import os

import torch
from packaging.specifiers import SpecifierSet
from packaging.version import Version

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # CPO and rollout_func live in / are marked experimental

import trl  # noqa: E402

TRL_SUPPORTED = ">=1.16,<1.17"  # the TRL versions tests/train/test_trl_glue.py passed on (pyproject pins 1.16.0)
ALLOW_ENV = "COA_ALLOW_TRL"


def check_trl_version(version: str | None = None) -> None:
    """Refuse a TRL outside ``TRL_SUPPORTED`` (one line naming both), unless ``COA_ALLOW_TRL=1``."""
    installed = version or trl.__version__
    if Version(installed) in SpecifierSet(TRL_SUPPORTED) or os.environ.get(ALLOW_ENV) == "1":
        return
    raise RuntimeError(
        f"train/ needs trl{TRL_SUPPORTED} (it patches TRL internals: train/trl_glue.py), but trl {installed} is "
        f"installed: pip install 'trl{TRL_SUPPORTED}', or set {ALLOW_ENV}=1 to try it anyway (then run "
        "pytest tests/train/test_trl_glue.py: it names the TRL symbol that changed)"
    )


check_trl_version()

from trl import DPOTrainer, GRPOTrainer  # noqa: E402
from trl.experimental.cpo import CPOTrainer  # noqa: E402
from trl.kernels import chunked_logprob  # noqa: E402
from trl.models import unwrap_model_for_generation  # noqa: E402,F401  (re-exported for train.rollout, train.heldout_reward)

from train.common import TokenCount, on_gpu  # noqa: E402
from train.rewards import CORRECTNESS  # noqa: E402

# ---- GRPO ------------------------------------------------------------------------------------------------

# Tokens per projection tile of GRPOTrainer's fused LM head on CPU. TRL projects up to 4,096 tokens x 32,768
# vocabulary columns at once, and its torch fold (no Triton on CPU) holds ~5 float32 temporaries of a tile:
# +0.85 GB during a forward of a 1,300-token rollout, the stage's peak. 512-token tiles cap them at ~0.3 GB at any
# length, with the same log-probs (tests/train/test_rl.py; docs/bench_rl_memory.md).
CPU_TOKEN_TILE = 512


def tile_lm_head_for_cpu() -> None:
    """On CPU, GRPOTrainer's fused LM head runs ``CPU_TOKEN_TILE`` tokens at a time (a TRL module setting, so it
    holds for the process); on a GPU TRL's Triton kernel keeps its own tiles."""
    if not on_gpu():
        chunked_logprob.TOKEN_CHUNK_SIZE = CPU_TOKEN_TILE


class TrimmingGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose forward passes (old, reference and training log-probs) run each chunk at its own
    length. TRL pads a generation batch to its longest prompt and completion and slices micro-batches from
    it, so one rollout that runs to the token budget makes every micro-batch that long: measured on RL-1,
    a step of 12 rollouts with one 1,520-token repetition loop had not finished after 12 min; trimmed, 256 s. Each chunk drops
    the padding columns no row in it uses (left of the prompts, right of the completions); its log-probs
    and entropies come back padded with zeros to the batch's width, where ``completion_mask`` is 0. A
    row's tokens then sit at positions from 0, as in generation and SFT. ``tokens`` counts what each chunk
    computed (its trimmed width x rows) against its real tokens."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens = TokenCount()

    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **multimodal,
    ):
        if any(v is not None for v in multimodal.values()):  # images: TRL's own chunking
            return super()._get_per_token_logps_and_entropies(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                batch_size,
                compute_entropy,
                compute_aux_loss,
                **multimodal,
            )
        size, prompt_len = batch_size or input_ids.size(0), input_ids.size(1) - logits_to_keep
        parts = []
        for start in range(0, input_ids.size(0), size):
            ids, mask = input_ids[start : start + size], attention_mask[start : start + size]
            used = mask.any(dim=0).nonzero().flatten().tolist()
            head = min(used[0], prompt_len) if used else 0
            tail = max(used[-1] + 1, prompt_len + 1) if used else ids.size(1)  # at least one completion column
            self.tokens.add(mask[:, head:tail])
            parts.append(
                super()._get_per_token_logps_and_entropies(
                    model,
                    ids[:, head:tail],
                    mask[:, head:tail],
                    tail - prompt_len,
                    None,
                    compute_entropy,
                    compute_aux_loss,
                )
            )

        def widen(t):
            return torch.nn.functional.pad(t, (0, logits_to_keep - t.size(1)))

        logps = torch.cat([widen(p[0]) for p in parts])
        entropies = torch.cat([widen(p[1]) for p in parts]) if compute_entropy else None
        aux_loss = torch.stack([p[2] for p in parts]).mean() if compute_aux_loss else None
        return logps, entropies, aux_loss


class TeacherGuidedGRPOTrainer(TrimmingGRPOTrainer):
    """``TrimmingGRPOTrainer`` with an optional teacher term (``train.teacher_guided.TeacherTerm``; None: plain
    GRPO): the scored rollouts' correctness is noted per question, and the term is backpropagated, one correction at
    a time, in each optimizer step's last micro-batch."""

    def __init__(self, *args, teacher=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        generate_every = self.args.steps_per_generation * self.num_iterations
        if teacher is not None and generate_every != self.args.gradient_accumulation_steps:
            raise ValueError(
                "teacher_weight > 0 needs fresh rollouts at every optimizer step: trl_args steps_per_generation x "
                f"num_iterations ({generate_every}) must equal gradient_accumulation_steps "
                f"({self.args.gradient_accumulation_steps})"
            )

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self.teacher is not None and self.model.training:
            mine = self.accelerator.process_index * len(prompts)  # this process's rows of the gathered rewards
            correctness = rewards[mine : mine + len(prompts), CORRECTNESS].tolist()
            self.teacher.note([row["question_id"] for row in inputs], correctness)
        return rewards

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # sync_gradients: the last micro-batch of the optimizer step (the loss is backpropagated unscaled)
        if self.teacher is not None and self.model.training and self.accelerator.sync_gradients:

            def backward(share):
                with self.accelerator.no_sync(model):  # this micro-batch's own backward syncs the gradients
                    self.accelerator.backward(share)  # as the trainer's (its loss scaler, if any)

            term, metrics = self.teacher.step_loss(model, backward, self.tokens)
            for name, value in metrics.items():
                add_step_metric(self, name, float(value))
            if term is not None:
                loss = loss + term  # detached (its gradient is in place): the logged loss includes the term
        return loss


def log_metric(trainer, name: str, value: float) -> None:
    """One value of this step's log row (GRPOTrainer averages what a step logs under ``name``)."""
    trainer._log_metric(name, value)


def has_step_metrics(trainer) -> bool:
    """Whether ``trainer`` keeps GRPOTrainer's per-step metric lists (``_metrics``), which its ``log`` merges."""
    return isinstance(getattr(trainer, "_metrics", None), dict) and "train" in trainer._metrics


def add_step_metric(trainer, name: str, value: float) -> None:
    """``value`` joins the training metrics GRPOTrainer's next ``log`` averages into the step's row."""
    trainer._metrics["train"][name].append(value)


# ---- SFT-1: CPO and DPO on pre-built ids -------------------------------------------------------------------

NLL_LOSS = 4  # the position of nll_loss in CPOTrainer.concatenated_forward's tuple


def pair_mask(batch: dict) -> torch.Tensor:
    """The attention masks of a CPO batch's chosen and rejected rows, as one tensor (chosen first)."""
    chosen, rejected = batch["chosen_attention_mask"], batch["rejected_attention_mask"]
    width = max(chosen.size(1), rejected.size(1))
    return torch.cat([torch.nn.functional.pad(m, (0, width - m.size(1))) for m in (chosen, rejected)])


class PaperCPOTrainer(CPOTrainer):
    """CPO with the paper's per-pair NLL normalisation, on ``prompt_ids``/``chosen_ids``/``rejected_ids``;
    ``tokens`` counts each forward pass's tokens and padding.

    A pair's two sides share their prompt (the prefix up to the decision point, most of each sequence), so the
    forward runs it once: the prompt with the KV cache on, then both continuations on that cache, the gradient
    flowing back through it (``shared_prefix_forward``). The log-probs are those of the two whole sequences.
    With gradient checkpointing (which turns the cache off) it runs CPO's own concatenated forward."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens = TokenCount()

    def shared_prefix_forward(self, model, batch) -> tuple:
        """CPO's ``concatenated_forward`` tuple (per-sequence mean log-probs of the continuations, as
        ``loss_type="simpo"`` asks; the logits of the continuation positions; CPO's NLL term) from one pass over
        each prompt and one over both continuations."""
        prompt, prompt_mask = batch["prompt_input_ids"], batch["prompt_attention_mask"]  # left-padded
        prompt_lengths = prompt_mask.sum(dim=1).tolist()
        sides = []  # row 2i: pair i's chosen continuation, 2i + 1: its rejected one (the cache's repeat order)
        for i, n in enumerate(prompt_lengths):
            for side in ("chosen", "rejected"):
                ids, mask = batch[f"{side}_input_ids"][i], batch[f"{side}_attention_mask"][i]
                sides.append(ids[n : int(mask.sum())])
        conts = torch.nn.utils.rnn.pad_sequence(sides, batch_first=True, padding_value=self.pad_token_id)
        longest = conts.size(1)
        lengths = torch.tensor([len(c) for c in sides], device=conts.device)
        cont_mask = (torch.arange(longest, device=conts.device) < lengths[:, None]).long()
        positions = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)
        self.tokens.add(prompt_mask)
        head = model(
            input_ids=prompt, attention_mask=prompt_mask, position_ids=positions, use_cache=True, logits_to_keep=1
        )
        cache = head.past_key_values
        cache.batch_repeat_interleave(2)
        starts = torch.tensor(prompt_lengths, device=prompt.device).repeat_interleave(2)
        self.tokens.add(cont_mask, context=starts.tolist())
        tail = model(
            input_ids=conts,
            attention_mask=torch.cat([prompt_mask.repeat_interleave(2, dim=0), cont_mask], dim=1),
            position_ids=starts[:, None] + torch.arange(longest, device=conts.device),
            past_key_values=cache,
            use_cache=False,
        )
        # position j's logits predict continuation token j: the prompt's last position, then the continuation's own
        logits = torch.cat([head.logits.repeat_interleave(2, dim=0), tail.logits[:, :-1]], dim=1).float()
        token_logps = torch.log_softmax(logits, dim=-1).gather(-1, conts[..., None])[..., 0]
        mean_logps = (token_logps * cont_mask).sum(dim=1) / cont_mask.sum(dim=1)
        chosen, rejected = mean_logps[0::2], mean_logps[1::2]
        nll = -(token_logps[0::2] * cont_mask[0::2]).sum() / cont_mask[0::2].sum()  # CPO's token mean; replaced below
        return chosen, rejected, logits[0::2], logits[1::2], nll

    def tokenize_row(self, feature, model=None) -> dict:
        batch = {"prompt_input_ids": feature["prompt_ids"], "prompt_attention_mask": [1] * len(feature["prompt_ids"])}
        for side in ("chosen", "rejected"):
            ids = feature["prompt_ids"] + feature[f"{side}_ids"]
            batch[f"{side}_input_ids"] = ids
            batch[f"{side}_attention_mask"] = [1] * len(ids)
            batch[f"{side}_labels"] = [-100] * len(feature["prompt_ids"]) + feature[f"{side}_ids"]
        return batch

    def concatenated_forward(self, model, batch):
        if getattr(model, "is_gradient_checkpointing", False) or self.aux_loss_enabled or self.is_encoder_decoder:
            self.tokens.add(pair_mask(batch))
            out = list(super().concatenated_forward(model, batch))
        else:
            out = list(self.shared_prefix_forward(model, batch))
        # with loss_type="simpo" the logps are per-sequence means: -mean over pairs of P̄(chosen)
        out[NLL_LOSS] = -out[0].mean()
        return tuple(out)


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
