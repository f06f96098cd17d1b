"""RL-1 (simulated environment) and RL-2 (real search environment): TRL's GRPOTrainer + our rollout.

Both stages roll out through ``train.rollout.make_rollout`` (the one agent loop); they differ only in
``tools``: both stop at the search-close tag; ``real`` searches and inserts the observation with ``env_mask``
0, ``simulated`` inserts only the observation's opening tag (``env_mask`` 0) and the policy writes the
observation itself (in the loss).
Rewards: ``train.rewards`` (correctness + format term). ``teacher``: the optional teacher term on failed questions
(``train.teacher_guided``; ``rl*.teacher_weight``).
"""

from __future__ import annotations

from coa.agent import Budget
from coa.formats import get_format
from train.common import bf16_weight_copies, peft_config, training_args
from train.config import RL1Config, TrainConfig
from train.heldout_reward import heldout_callback
from train.rewards import make_rewards
from train.rollout import make_rollout
from train.trl_glue import TeacherGuidedGRPOTrainer, tile_lm_head_for_cpu

from trl import GRPOConfig


def rollout_budget(cfg: TrainConfig, stage: RL1Config) -> Budget:
    """The search environment's budget; in the simulated environment the policy's own observations get the
    room real ones take outside ``max_tokens`` (``observation_tokens`` per allowed search)."""
    budget = cfg.search.budget
    return budget.with_written_observations(stage.observation_tokens) if stage.tools == "simulated" else budget


def grpo_config(cfg: TrainConfig, stage: RL1Config, out) -> GRPOConfig:
    return GRPOConfig(
        **training_args(
            cfg,
            stage,
            out,
            num_generations=stage.num_generations,
            temperature=stage.temperature,
            beta=stage.beta,
            loss_type=stage.loss_type,  # explicit: the paper is GRPO, TRL 1.16's default is dapo
            scale_rewards=stage.scale_rewards,
            # model tokens; the rollout enforces it (real observations extra, simulated ones inside it)
            max_completion_length=rollout_budget(cfg, stage).max_tokens,
        )
    )


def build_rl_trainer(
    cfg: TrainConfig,
    stage: RL1Config,
    model,
    tokenizer,
    dataset,
    out,
    callbacks=(),
    reward_funcs=None,
    searcher=None,
    teacher=None,
):
    """GRPOTrainer for rl1/rl2. ``searcher`` defaults to the configured search environment's for
    tools="real"; ``reward_funcs`` to ``make_rewards`` from the stage config; ``teacher`` (a
    ``train.teacher_guided.TeacherTerm``) adds the teacher term, None: plain GRPO."""
    fmt = get_format(cfg.prompt.format)
    tile_lm_head_for_cpu()
    if stage.tools == "real" and searcher is None:
        searcher = cfg.search.searcher()
    tools = cfg.search.loop_tools(fmt, searcher, tokenizer)  # None: search only
    rollout = make_rollout(
        fmt,
        rollout_budget(cfg, stage),
        cfg.prompt.prefill,
        stage.tools,
        searcher,
        stage.engine,
        stage.sync_every,
        stage.kv_cache_gib,
        tools,
    )
    rewards = reward_funcs or make_rewards(
        stage.reward_metric,
        stage.format_penalty,
        fmt.name,
        stage.failed_call_penalty,
        stage.judge,
        stage.evidence_reward,
        stage.evidence_gate,
        stage.echo_penalty,
    )
    args = grpo_config(cfg, stage, out)
    if args.use_vllm:
        raise ValueError(
            "trl_args use_vllm is not used: the agent rollout has its own vLLM engine with weight "
            "sync on CPU and GPU; set rl1.engine=vllm / rl2.engine=vllm instead"
        )
    trainer = TeacherGuidedGRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(cfg, stage),
        rollout_func=rollout,
        callbacks=list(callbacks),
        teacher=teacher,
    )
    if stage.heldout_reward_every:
        trainer.add_callback(
            heldout_callback(trainer, stage, cfg.prompt, fmt, rollout_budget(cfg, stage), rewards, searcher, tools)
        )
    return bf16_weight_copies(cfg, trainer)  # LoRA's frozen base: rounded to bf16 once, not cast every forward
