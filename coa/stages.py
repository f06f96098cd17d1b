"""The method's stages and the models a run evaluates: one list each, which every validator and default reads.

STAGES      the five training stages, in order (SFT-1 when to act, SFT-2 how to act, SFT-3 world model,
            RL-1 simulated environment, RL-2 real environment)
PREVIOUS    the stage each one starts from (None: the base model)
BASELINES   untrained rows of the evaluation: the base model as the paper prompts it, and ReAct-prompted
EVALUATED   every row of the run's tables, in order
"""

from __future__ import annotations

SFT_STAGES = ("sft1", "sft2", "sft3")
RL_STAGES = ("rl1", "rl2")
STAGES = SFT_STAGES + RL_STAGES
PREVIOUS: dict[str, str | None] = {"sft1": None, "sft2": "sft1", "sft3": "sft2", "rl1": "sft3", "rl2": "rl1"}
BASELINES = ("base", "react")
EVALUATED = BASELINES + STAGES
