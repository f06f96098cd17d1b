"""Training: the five AutoCoA stages on TRL (``python -m train.run stage=sft1|sft2|sft3|rl1|rl2|rl``).

config       one dataclass per stage (``train:`` section of params.yaml + key=value)
data         curated sets → token ids (pairs without a spurious EOS, segment-wise SFT labels, RL prompts)
preference   SFT-1: the paper's loss on TRL's CPO (per-pair NLL), or DPO + NLL
sft          SFT-2/3: SFTTrainer on pre-tokenised ids/labels, the observation_loss switch
rollout      RL rollouts through coa.agent.run_batch as a TRL rollout_func (env_mask on observations)
rewards      correctness + format term
rl           GRPOTrainer for rl1 (simulated environment) and rl2 (real search)
checkpoint   HF checkpoints (bf16, tokenizer, chat template), tokenizer checks, metrics files
run          the CLI; its docstring lists the CPU defaults and the GPU settings
"""
