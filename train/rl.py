"""RL-1 (simulated environment) and RL-2 (real search environment): TRL's GRPOTrainer + our rollout.

Both stages roll out through ``train.rollout.make_rollout`` (the one agent loop); they differ only in
``tools``: both stop at the search-close tag; ``real`` searches and inserts the observation with ``env_mask``
0, ``simulated`` inserts only the observation's opening tag (``env_mask`` 0) and the policy writes the
observation itself (in the loss).
Rewards: ``train.rewards`` (correctness + format term).
"""
from __future__ import annotations

import os

import torch

from coa.agent import Budget
from coa.formats import get_format
from train.common import TokenCount, on_gpu, peft_config, training_args
from train.config import RL1Config, TrainConfig
from train.heldout_reward import heldout_callback
from train.rewards import make_rewards
from train.rollout import make_rollout

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental

from trl import GRPOConfig, GRPOTrainer  # noqa: E402
from trl.kernels import chunked_logprob  # noqa: E402

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

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal):
        if any(v is not None for v in multimodal.values()):  # images: TRL's own chunking
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                **multimodal)
        size, prompt_len = batch_size or input_ids.size(0), input_ids.size(1) - logits_to_keep
        parts = []
        for start in range(0, input_ids.size(0), size):
            ids, mask = input_ids[start:start + size], attention_mask[start:start + size]
            used = mask.any(dim=0).nonzero().flatten().tolist()
            head = min(used[0], prompt_len) if used else 0
            tail = max(used[-1] + 1, prompt_len + 1) if used else ids.size(1)  # at least one completion column
            self.tokens.add(mask[:, head:tail])
            parts.append(super()._get_per_token_logps_and_entropies(
                model, ids[:, head:tail], mask[:, head:tail], tail - prompt_len, None, compute_entropy,
                compute_aux_loss))

        def widen(t):
            return torch.nn.functional.pad(t, (0, logits_to_keep - t.size(1)))

        logps = torch.cat([widen(p[0]) for p in parts])
        entropies = torch.cat([widen(p[1]) for p in parts]) if compute_entropy else None
        aux_loss = torch.stack([p[2] for p in parts]).mean() if compute_aux_loss else None
        return logps, entropies, aux_loss


def rollout_budget(cfg: TrainConfig, stage: RL1Config) -> Budget:
    """The search environment's budget; in the simulated environment the policy's own observations get the
    room real ones take outside ``max_tokens`` (``observation_tokens`` per allowed search)."""
    budget = cfg.search.budget
    return budget.with_written_observations(stage.observation_tokens) if stage.tools == "simulated" else budget


def grpo_config(cfg: TrainConfig, stage: RL1Config, out) -> GRPOConfig:
    return GRPOConfig(**training_args(
        cfg, stage, out,
        num_generations=stage.num_generations,
        temperature=stage.temperature,
        beta=stage.beta,
        loss_type=stage.loss_type,  # explicit: the paper is GRPO, TRL 1.16's default is dapo
        # model tokens; the rollout enforces it (real observations extra, simulated ones inside it)
        max_completion_length=rollout_budget(cfg, stage).max_tokens,
    ))


def build_rl_trainer(cfg: TrainConfig, stage: RL1Config, model, tokenizer, dataset, out,
                     callbacks=(), reward_funcs=None, searcher=None):
    """GRPOTrainer for rl1/rl2. ``searcher`` defaults to the configured search environment's for
    tools="real"; ``reward_funcs`` to ``make_rewards`` from the stage config."""
    fmt = get_format(cfg.prompt.format)
    tile_lm_head_for_cpu()
    if stage.tools == "real" and searcher is None:
        searcher = cfg.search.searcher()
    rollout = make_rollout(fmt, rollout_budget(cfg, stage), cfg.prompt.prefill, stage.tools, searcher, stage.engine,
                           stage.sync_every, stage.kv_cache_gib)
    rewards = reward_funcs or make_rewards(stage.reward_metric, stage.format_penalty, fmt.name)
    args = grpo_config(cfg, stage, out)
    if args.use_vllm:
        raise ValueError("trl_args use_vllm is not used: the agent rollout has its own vLLM engine with weight "
                         "sync on CPU and GPU; set rl1.engine=vllm / rl2.engine=vllm instead")
    trainer = TrimmingGRPOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=dataset,
                                  processing_class=tokenizer, peft_config=peft_config(cfg, stage),
                                  rollout_func=rollout, callbacks=list(callbacks))
    if stage.heldout_reward_every:
        trainer.add_callback(heldout_callback(trainer, stage, cfg.prompt, fmt, rollout_budget(cfg, stage), rewards,
                                              searcher))
    return trainer
