"""Settings of the five training stages: one dataclass per stage, TRL style.

``TrainConfig`` holds what every stage shares (where checkpoints live, precision, LoRA, the RL prompt)
and one section per stage; ``python -m train.run stage=sft2 sft2.max_steps=10 num_threads=2`` fills
it from ``params.yaml`` (section ``train``) and ``key=value`` overrides (dotted keys reach a stage).

Defaults are the embedded default run's (``params.yaml``: the 135M student through all five stages on 2 CPU
cores; ``tests/test_settings.py`` keeps the two equal). The paper's values (learning rates, pairs/sequences/
prompts per optimizer step, GRPO group size 5, KL 0.001, temperature 0.6, full fine-tuning, 80 + 16 RL steps)
are ``presets/paper.yaml``: ``preset=paper``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from coa import paths
from coa.agent import OBSERVATION_TOKENS
from coa.environment import SearchEnvConfig
from coa.formats import FORMAT
from coa.judge import NAME as LLM_JUDGE
from coa.judge import JudgeConfig
from coa.prompts import PromptConfig
from coa.score import METRICS
from coa.stages import STAGES
from train.rewards import EVIDENCE_GATES

REPORT_TO = ("none", "tensorboard")
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flex_attention", "varlen")  # train/attention.py
GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "luspo", "sapo", "vespo")  # TRL 1.16's GRPOConfig
GRPO_REWARD_SCALES = ("group", "batch", "none")  # TRL 1.16's GRPOConfig.scale_rewards
SAVE_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class StageConfig:
    """Optimisation settings every stage has (passed to the stage's TRL config)."""

    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs over the set (ignored if max_steps > 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; -1 = run num_train_epochs."})
    # one example per micro-batch: without gradient checkpointing a 2,400-token CoA sequence of the 135M
    # model holds ~6 GB of activations; the paper's examples per step come from accumulation
    per_device_train_batch_size: int = field(
        default=1, metadata={"help": "Examples per micro-batch (RL: completions)."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    max_length: int = field(
        default=4096,
        metadata={"help": "Longest sequence in tokens; longer examples are dropped (and counted), never cut."},
    )
    trl_args: dict = field(
        default_factory=dict,
        metadata={
            "help": "Extra keyword arguments for the TRL config, e.g. {lr_scheduler_type: cosine} or, for GRPO, "
            "{use_vllm: true, vllm_mode: colocate}."
        },
    )
    lora_r: int | None = field(
        default=None,
        metadata={
            "help": "This stage's LoRA rank (0 = full fine-tuning); null = the top-level lora_r. The other LoRA "
            "settings (alpha, dropout, target modules) are the top-level ones."
        },
    )


@dataclass
class SFT1Config(StageConfig):
    """SFT-1, when to act: contrastive pairs at decision points."""

    learning_rate: float = 2e-5  # the paper: 5e-6
    max_steps: int = 16  # the paper: 2 epochs
    gradient_accumulation_steps: int = 4  # pairs per step (the paper: 16)
    max_length: int = 1024
    data: str = field(default="pairs.parquet", metadata={"help": "Pair set (PAIR_SCHEMA), relative to sets_dir."})
    loss: str = field(
        default="paper",
        metadata={
            "help": "'paper': -logσ(P̄(chosen) - P̄(rejected)) + α·(-P̄(chosen)), P̄ the length-normalised "
            "log-prob, no reference model (TRL CPO, simpo γ=0 β=1, per-sequence NLL); "
            "'dpo': DPO sigmoid + α·NLL (TRL DPO, reference = the start checkpoint)."
        },
    )
    alpha: float = field(default=0.2, metadata={"help": "Weight α of the NLL term on the chosen side."})
    dpo_beta: float = field(default=0.1, metadata={"help": "β of the DPO sigmoid term (loss=dpo only)."})

    def __post_init__(self) -> None:
        if self.loss not in ("paper", "dpo"):
            raise ValueError(f"sft1.loss must be 'paper' or 'dpo', got {self.loss!r}")


@dataclass
class SFT2Config(StageConfig):
    """SFT-2, how to act: CoA and CoT trajectories, observation tokens masked."""

    learning_rate: float = 2e-4  # the paper: 5e-5
    num_train_epochs: float = 1.0  # the paper: 2
    gradient_accumulation_steps: int = 4  # sequences per step (the paper: 32)
    max_length: int = 1536  # keeps the multi-search trajectories (docs/experiments/sft2_length_cut.md)
    data: list = field(
        default_factory=lambda: ["coa.parquet", "cot.parquet"],
        metadata={"help": "Trajectory sets (TRAJECTORY_SCHEMA), relative to sets_dir."},
    )
    observation_loss: bool = field(default=False, metadata={"help": "Train on observation tokens too."})
    padding_free: bool = field(
        default=False,
        metadata={
            "help": "A micro-batch's per_device_train_batch_size sequences concatenated into one row, no padding "
            "(TRL padding_free): position ids restart at 0 per sequence and each attends only to itself (a "
            "variable-length kernel on a GPU, a block-diagonal mask on a CPU); sequences per step and the loss "
            "(token mean over the optimizer step) unchanged."
        },
    )
    packing: bool = field(
        default=False,
        metadata={
            "help": "Pack whole sequences into micro-batches of up to max_length tokens (TRL best-fit decreasing, "
            "padding-free): each sequence keeps its own position ids from 0 and attends only to itself, and "
            "the loss stays the token mean over the optimizer step; per_device_train_batch_size then counts "
            "packed rows. Off: one row per sequence, padded to the longest of its micro-batch."
        },
    )


@dataclass
class SFT3Config(SFT2Config):
    """SFT-3, world model: the same sets with the observation tokens in the loss."""

    observation_loss: bool = True
    learning_rate: float = 5e-6  # the paper: 5e-5
    max_steps: int = 16  # the paper: 2 epochs


@dataclass
class RL1Config(StageConfig):
    """GRPO with a simulated environment: the policy writes its own observations."""

    tools: str = field(
        default="simulated",
        metadata={
            "help": "'simulated' (stop at the search tag, open the observation, the policy writes it) or 'real' "
            "(stop, search, insert the observation)."
        },
    )
    engine: str = field(
        default="vllm",
        metadata={
            "help": "Rollout engine: 'hf' (the policy's own generate) or 'vllm' (vllm.LLM in-process, CPU or GPU, "
            "given the policy's weights every sync_every optimizer steps)."
        },
    )
    sync_every: int = field(default=1, metadata={"help": "Optimizer steps between weight syncs to the vLLM engine."})
    kv_cache_gib: float = field(
        default=0.5,
        metadata={
            "help": "engine=vllm on CPU: the engine's KV cache (GiB); it must hold one step's rollouts at once "
            "(bench/bench_rl_memory.py measures what a size costs)."
        },
    )
    observation_tokens: int = field(
        default=OBSERVATION_TOKENS,
        metadata={
            "help": "tools='simulated': room per search (x search.max_actions) added to search.max_tokens for the "
            "observations the policy writes itself. The real environment's observations do not count against "
            "max_tokens; without this room a simulated trajectory that searches cannot finish, and the format "
            "penalty teaches the policy to stop searching."
        },
    )
    learning_rate: float = 2e-4  # the paper: 7e-7 (full fine-tuning); here a LoRA adapter
    max_steps: int = 3  # the paper: 80 simulated steps
    lora_r: int | None = 16  # the paper: 0 (full fine-tuning)
    num_generations: int = field(default=4, metadata={"help": "Completions per prompt (the GRPO group; the paper: 5)."})
    gradient_accumulation_steps: int = 12  # completions per step (the paper: 240 = 48 prompts x 5)
    temperature: float = field(default=0.6, metadata={"help": "Sampling temperature of the rollouts."})
    beta: float = field(
        default=0.0,
        metadata={
            "help": "KL coefficient to the start checkpoint (0: no reference model is loaded; the paper: 0.001)."
        },
    )
    questions: str | None = field(
        default=f"{paths.curate('sets')}/rl_questions.jsonl",
        metadata={
            "help": "Training question pool (FlashRAG jsonl/parquet): curate's rl_questions.jsonl is the split's "
            "training pool minus the curated eval split and contaminated questions; null = "
            "coa.questions.DEFAULT_QUESTIONS."
        },
    )
    question_limit: int | None = field(default=64, metadata={"help": "Use only the first N questions (null: all)."})
    reward_metric: str = field(
        default="f1",
        metadata={
            "help": "Answer correctness: em | f1 | cover_em | autocoa_lenient (the paper's own scorer) | llm_judge "
            "(an LLM's verdict, with judge.base_url)."
        },
    )
    judge: JudgeConfig = field(
        default_factory=JudgeConfig,
        metadata={"help": "reward_metric=llm_judge: the judge (coa.judge); its verdicts are cached per answer"},
    )
    format_penalty: float = field(
        default=1.0,
        metadata={"help": "Subtracted when the trajectory does not parse as well-formed (0 disables the format term)."},
    )
    failed_call_penalty: float = field(
        default=0.0,
        metadata={
            "help": "Subtracted per tool call whose result is an error (refused, or failed: train/rewards.py); "
            "0 disables the term."
        },
    )
    evidence_reward: float = field(
        default=0.0,
        metadata={
            "help": "Added times the share of the question's evidence passages the environment returned to the "
            "rollout (a reward for the search that finds the next hop; train/rewards.py); 0 disables the term."
        },
    )
    evidence_gate: str = field(
        default="none",
        metadata={
            "help": "evidence_reward's gate: none (paid whatever the answer) | answer (times the rollout's answer "
            "correctness: paid only for evidence that led to a right answer)."
        },
    )
    echo_penalty: float = field(
        default=0.0,
        metadata={
            "help": "Subtracted where the answer repeats one of the rollout's own search queries that the question "
            "does not name (the bridge entity given back as the answer, one hop short; train/rewards.py); 0 "
            "disables the term."
        },
    )
    loss_type: str = field(
        default="grpo",
        metadata={
            "help": "How GRPO aggregates token losses (TRL's loss_type; TRL 1.16 defaults to 'dapo'): 'grpo' = mean "
            "over each completion's tokens, then over completions (the GRPO paper and AutoCoA's verl run); "
            "'dapo' = sum over all active tokens of the accumulated batch / their count (no length bias); "
            "'dr_grpo' = sum / (completions x max_completion_length); 'bnpo' = like dapo per local batch."
        },
    )
    scale_rewards: str = field(
        default="group",
        metadata={
            "help": "What GRPO divides a reward's deviation from its group mean by (TRL's scale_rewards): 'group' = "
            "the group's std (the GRPO paper; a term that alone varies in a group drives it at full strength "
            "whatever its weight) | 'batch' = the step's std | 'none' = nothing (Dr. GRPO; weights stay weights)."
        },
    )

    heldout_reward_every: int = field(
        default=0,
        metadata={
            "help": "Every N optimizer steps (and before the first) roll out the policy greedily on heldout_questions "
            "and on the first questions of its own pool: heldout_reward / pool_reward in steps.csv beside "
            "reward (train/heldout_reward.py). 0 = off."
        },
    )
    heldout_questions: str = field(
        default=f"{paths.curate('sets')}/eval_questions.parquet",
        metadata={"help": "Questions never trained on for heldout_reward (refused if any is in the stage's pool)."},
    )
    heldout_limit: int = field(default=16, metadata={"help": "Questions per set the held-out reward rolls out."})
    teacher_weight: float = field(
        default=0.0,
        metadata={
            "help": "Teacher-guided RL (DGPO's pull toward the teacher on wrong answers, train/teacher_guided.py): "
            "each optimizer step adds teacher_weight x the token-mean NLL of teacher_corrections' rows of the "
            "questions with a rollout of correctness 0 in that step (the teacher's tokens only). 0 = plain GRPO "
            "(the corrections are not read)."
        },
    )
    teacher_corrections: str | None = field(
        default=None,
        metadata={
            "help": "teacher_weight > 0: a corrections set (trajectory schema, file or folder of parquet shards, "
            "e.g. synth.onpolicy's corrections.parquet of this stage's start policy on its question pool): a "
            "student prefix as prefill, the teacher's continuation as model segments."
        },
    )

    def __post_init__(self) -> None:
        key = "rl2" if isinstance(self, RL2Config) else "rl1"
        if not self.teacher_weight >= 0:  # NaN too
            raise ValueError(f"{key}.teacher_weight must be >= 0 (0 = plain GRPO), got {self.teacher_weight}")
        if self.teacher_weight > 0 and not self.teacher_corrections:
            raise ValueError(
                f"{key}.teacher_weight={self.teacher_weight:g} needs {key}.teacher_corrections (a corrections set, "
                "e.g. synth.onpolicy's corrections.parquet); or teacher_weight=0 for plain GRPO"
            )
        if self.failed_call_penalty < 0:
            raise ValueError(f"failed_call_penalty must be >= 0 (it is subtracted), got {self.failed_call_penalty}")
        if not self.evidence_reward >= 0:
            raise ValueError(f"{key}.evidence_reward must be >= 0 (0 = off), got {self.evidence_reward}")
        if not self.echo_penalty >= 0:
            raise ValueError(f"{key}.echo_penalty must be >= 0 (it is subtracted; 0 = off), got {self.echo_penalty}")
        if self.evidence_gate not in EVIDENCE_GATES:
            raise ValueError(
                f"{key}.evidence_gate must be one of {', '.join(EVIDENCE_GATES)}; got {self.evidence_gate!r}"
            )
        if self.heldout_reward_every < 0:
            raise ValueError(f"heldout_reward_every must be >= 0 (0 = off), got {self.heldout_reward_every}")
        if self.heldout_limit < 1:
            raise ValueError(f"heldout_limit must be >= 1, got {self.heldout_limit}")
        if self.tools not in ("simulated", "real"):
            raise ValueError(f"tools must be 'simulated' or 'real', got {self.tools!r}")
        if self.engine not in ("hf", "vllm"):
            raise ValueError(f"engine must be 'hf' or 'vllm', got {self.engine!r}")
        if self.kv_cache_gib <= 0:
            raise ValueError(f"kv_cache_gib must be > 0, got {self.kv_cache_gib}")
        if self.sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {self.sync_every}")
        if self.observation_tokens < 0:
            raise ValueError(f"observation_tokens must be >= 0, got {self.observation_tokens}")
        if self.loss_type not in GRPO_LOSS_TYPES:
            raise ValueError(f"loss_type must be one of TRL's {', '.join(GRPO_LOSS_TYPES)}; got {self.loss_type!r}")
        if self.scale_rewards not in GRPO_REWARD_SCALES:
            raise ValueError(
                f"{key}.scale_rewards must be one of {', '.join(GRPO_REWARD_SCALES)}; got {self.scale_rewards!r}"
            )
        if self.reward_metric not in (*METRICS, LLM_JUDGE):
            raise ValueError(
                f"reward_metric must be one of {', '.join((*METRICS, LLM_JUDGE))}; got {self.reward_metric!r}"
            )
        if self.reward_metric == LLM_JUDGE and not self.judge.base_url:
            raise ValueError("reward_metric=llm_judge needs judge.base_url (an OpenAI-compatible chat server)")
        if self.per_device_train_batch_size * self.gradient_accumulation_steps % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size*gradient_accumulation_steps ({self.per_device_train_batch_size}*"
                f"{self.gradient_accumulation_steps}) must be a multiple of num_generations ({self.num_generations})"
            )


@dataclass
class RL2Config(RL1Config):
    """GRPO with the real search environment."""

    tools: str = "real"
    learning_rate: float = 5e-4  # the paper: 7e-7
    max_steps: int = 12  # the paper: 16 real-environment steps
    gradient_accumulation_steps: int = 8  # the paper: 240
    temperature: float = 1.0  # the paper: 0.6


@dataclass
class ScheduleConfig:
    """One RL step budget split between rl1 (simulated) and rl2 (real search): the paper's 80 + 16 of 96 steps,
    and the simulated:real frontier (docs/experiments/frontier.md). Applies to ``stage=rl`` and to ``stage=rl1``
    / ``stage=rl2`` alike (the DVC stages), so ``dvc exp run -S train.rl.max_steps=12 -S train.rl.rl1_fraction=0.75``
    is one arm of the grid; a stage given 0 steps passes its start checkpoint on."""

    max_steps: int = field(
        default=0,
        metadata={
            "help": "RL steps in all (the paper: 96), split by rl1_fraction; 0 = each stage runs its own max_steps."
        },
    )
    rl1_fraction: float = field(
        default=5 / 6,
        metadata={
            "help": "Share of the steps run by rl1 (simulated): 0 = real only, 0.5 = 1:1, 0.75 = 3:1, 5/6 = 5:1 (the "
            "paper), 0.875 = 7:1, 1 = simulated only."
        },
    )

    def split(self) -> tuple[int, int]:
        if not 0 <= self.rl1_fraction <= 1:
            raise ValueError(f"rl.rl1_fraction must be within [0, 1], got {self.rl1_fraction}")
        first = round(self.max_steps * self.rl1_fraction)
        return first, self.max_steps - first


@dataclass
class TrainConfig:
    """Everything ``python -m train.run`` reads; see the module docstring of ``train.run``."""

    stage: str = field(default="sft1", metadata={"help": "sft1 | sft2 | sft3 | rl1 | rl2 | rl (rl1 then rl2)."})
    model: str | None = field(
        default=None,
        metadata={
            "help": "Start checkpoint; default the previous stage's output (sft1: the base model); 'base' = base."
        },
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "The model whose tokenizer every checkpoint must share; default coa.model.base_model_dir()."},
    )
    runs_dir: str = field(default="runs/train", metadata={"help": "Each stage writes RUNS_DIR/<stage>/."})
    chain: list = field(
        default_factory=lambda: list(STAGES),
        metadata={
            "help": "Stages that train (the ablation grid: [sft2] = SFT-2 only); a stage left out saves its start "
            "checkpoint unchanged, so the stages after it start from the last one that trained."
        },
    )
    on_empty_set: str = field(
        default="error",
        metadata={
            "help": "An SFT stage whose sets have no rows: 'error', or 'pass_through' (the start checkpoint is saved "
            "unchanged with metrics saying so; for tiny teachers that yield no correct data)."
        },
    )
    sets_dir: str = field(default="runs/curate/sets", metadata={"help": "Folder of the curated sets."})
    format: str = field(
        default=FORMAT,
        metadata={
            "help": "Format preset of the sets and the RL prompt (autocoa | search_r1); params.yaml's top-level "
            "`format`, shared with synth, curate and evaluate. A set written in another format fails."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed of TRL's data order, dropout and sampling."})
    bf16: bool | str = field(
        default="auto",
        metadata={
            "help": "bf16 mixed precision (autocast: matmuls in bf16; weights, gradients, optimizer state and "
            "checkpoints stay float32). 'auto' = on where the hardware has bf16 units (a GPU from Ampere on, a "
            "CPU with avx512_bf16 or AMX: coa.model.has_native_bf16), off where bf16 would be emulated; "
            "true / false force it. Every stage, and RL's vLLM engine, follow it."
        },
    )
    bf16_weight_copies: bool = field(
        default=True,
        metadata={
            "help": "bf16 on a CPU: linear layers multiply with bf16 copies of the float32 weights, rounded "
            "stochastically once per optimizer step (train/bf16_weights.py); false = autocast's round-to-nearest "
            "cast in every forward, which hides updates under half a bf16 step (SFT-1 learned several times "
            "slower than float32)."
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in the backward: less memory per step for a little more compute."},
    )
    attn_implementation: str = field(
        default="auto",
        metadata={
            "help": "Attention kernel: auto | sdpa | eager | flex_attention | varlen. 'auto' = 'varlen' (torch's "
            "variable-length flash kernel: padding-free micro-batches with no mask, train/attention.py) for a "
            "padding-free SFT stage on a CUDA GPU, else 'sdpa'."
        },
    )
    liger_kernels: bool | str = field(
        default="auto",
        metadata={
            "help": "Liger's fused RMSNorm, rotary and SwiGLU kernels (TRL use_liger_kernel; the LM head stays TRL's "
            "fused one). 'auto' = on a CUDA GPU where liger-kernel is installed (./install.sh --gpu), else off."
        },
    )
    num_threads: int = field(
        default=2,
        metadata={"help": "torch CPU threads (1 where cores are shared; 0 = torch's default). Ignored on GPU."},
    )
    lora_r: int = field(
        default=0,
        metadata={
            "help": "LoRA rank via peft; 0 = full fine-tuning. Adapters are "
            "merged before saving, so every checkpoint is a plain model."
        },
    )
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (update scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: str = field(
        default="all-linear",
        metadata={"help": "peft target_modules ('all-linear' = every linear layer but the LM head)."},
    )
    logging_steps: int = field(default=1, metadata={"help": "Log (steps.csv, report_to) every N optimizer steps."})
    save_steps: int = field(
        default=100,
        metadata={
            "help": "Save a resumable TRL checkpoint (weights, optimizer, RNG, data position) in the stage's work "
            "folder RUNS_DIR/<stage>.work every N steps; 0 = never (resume=true then has nothing to resume)."
        },
    )
    resume: bool = field(
        default=False,
        metadata={
            "help": "Continue from the last complete checkpoint in RUNS_DIR/<stage>.work instead of starting over "
            "(same settings, same data); false clears that folder first."
        },
    )
    report_to: str = field(
        default="none",
        metadata={
            "help": "'none' or 'tensorboard' (event files in RUNS_DIR/<stage>.work/logs; offline, needs the "
            "tensorboard package)."
        },
    )
    save_dtype: str = field(
        default="auto",
        metadata={
            "help": "Weights dtype of the saved checkpoint: 'auto' = the dtype trained in (float32, with or without "
            "bf16 mixed precision: RL's small updates survive), or bfloat16 / float16 / float32."
        },
    )
    prompt: PromptConfig = field(default_factory=PromptConfig, metadata={"help": "RL prompt rendering."})
    search: SearchEnvConfig = field(
        default_factory=SearchEnvConfig,
        metadata={
            "help": "RL's search environment and budgets: params.yaml's top-level `search` (the one synthesis and "
            "evaluation use)."
        },
    )
    sft1: SFT1Config = field(default_factory=SFT1Config, metadata={"help": SFT1Config.__doc__})
    sft2: SFT2Config = field(default_factory=SFT2Config, metadata={"help": SFT2Config.__doc__})
    sft3: SFT3Config = field(default_factory=SFT3Config, metadata={"help": SFT3Config.__doc__})
    rl1: RL1Config = field(default_factory=RL1Config, metadata={"help": RL1Config.__doc__})
    rl2: RL2Config = field(default_factory=RL2Config, metadata={"help": RL2Config.__doc__})
    rl: ScheduleConfig = field(default_factory=ScheduleConfig, metadata={"help": ScheduleConfig.__doc__})

    def __post_init__(self) -> None:
        if self.stage not in (*STAGES, "rl"):
            raise ValueError(f"stage must be one of {', '.join((*STAGES, 'rl'))}; got {self.stage!r}")
        if self.report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}; got {self.report_to!r}")
        if self.bf16 not in (True, False, "auto"):
            raise ValueError(f"bf16 must be auto, true or false; got {self.bf16!r}")
        if self.liger_kernels not in (True, False, "auto"):
            raise ValueError(f"liger_kernels must be auto, true or false; got {self.liger_kernels!r}")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)}; got {self.attn_implementation!r}"
            )
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(f"save_dtype must be one of {', '.join(SAVE_DTYPES)}; got {self.save_dtype!r}")
        if isinstance(self.chain, str):
            self.chain = [self.chain]
        if not set(self.chain) <= set(STAGES):
            raise ValueError(f"chain must list stages among {', '.join(STAGES)}; got {self.chain}")
        if self.rl.max_steps < 0:
            raise ValueError(f"rl.max_steps must be >= 0 (0 = each RL stage's own max_steps); got {self.rl.max_steps}")
        self.rl.split()  # checks the fraction
        if self.save_steps < 0:
            raise ValueError(f"save_steps must be >= 0 (0 = no resumable checkpoints); got {self.save_steps}")
        # a copy: the caller's PromptConfig is not changed (the RL prompt follows the one configured format)
        self.prompt = replace(self.prompt, format=self.format, tools=list(self.search.tools))
