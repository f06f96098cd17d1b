"""Where an RL step's memory goes: resident memory after each phase of one GRPO-shaped step.

    python bench/bench_rl_memory.py [--model runs/train/rl1] [--prompts 12] [--kv-cache-gib 0.5] [--lora-r 16]
    python bench/bench_rl_memory.py --compare ...   # the stages' memory settings vs TRL's tiles, trim per step

RL-2 at the default run's shape, phase by phase, in one process as ``train.run`` runs it: the imports,
the float32 policy, the in-process vLLM engine (its own float32 copy of the weights and its KV cache),
one batch of rollouts (real BM25 search over the embedded corpus, the default prompt and budget), then
two optimizer steps on that batch, each forward + backward of every rollout in turn (gradient
checkpointing on; log-probs and entropies through TRL's fused LM head, as GRPOTrainer computes them), the
AdamW step (with full fine-tuning the first allocates the two moments, which every later step holds) and the
weight sync to the engine. After each phase: resident memory now (``VmRSS``), its change, and the peak so far
(``VmHWM``, what the stages' ``peak_rss_gb`` reports). Nothing is written except the printed table.

The stages' memory settings are on unless ``--trl-defaults``: ``train.trl_glue.tile_lm_head_for_cpu`` (the fused LM
head's token tile) and the allocator's free pages given back after each rollout's backward, not only after each step
(``train.checkpoint.release_free_memory``). ``--compare`` runs the bench twice, in fresh processes, without and
with them, and prints both tables and the peaks' ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def memory_gb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in GB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return tuple(int(fields[k].split()[0]) / 1024**2 for k in ("VmRSS", "VmHWM"))


class Phases:
    def __init__(self):
        self.rows, self.last = [], memory_gb()[0]

    def mark(self, name: str, seconds: float = 0.0) -> None:
        rss, peak = memory_gb()
        self.rows.append((name, rss, rss - self.last, peak, seconds))
        print(f"{name:<40} rss {rss:6.2f} GB ({rss - self.last:+.2f})  peak {peak:6.2f}", file=sys.stderr, flush=True)
        self.last = rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="start checkpoint (default: the embedded base model)")
    ap.add_argument("--prompts", type=int, default=12, help="rollouts in the step (the default run: 3 x 4)")
    ap.add_argument("--kv-cache-gib", type=float, default=0.5, help="the vLLM engine's KV cache on CPU")
    ap.add_argument("--lora-r", type=int, default=16, help="LoRA rank (the RL stages' default; 0: full fine-tuning)")
    ap.add_argument(
        "--trl-defaults",
        action="store_true",
        help="TRL's 4,096-token LM-head tiles, free pages given back after each step only "
        "(what the stages had before their settings)",
    )
    ap.add_argument("--compare", action="store_true", help="run with --trl-defaults, then without, and compare")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.compare:
        return compare([a for a in sys.argv[1:] if a != "--compare"])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    phases = Phases()
    import torch
    import vllm  # noqa: F401 - its import is part of what an RL stage holds
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.utils import add_fused_lm_head

    from coa.agent import drive, start_episode
    from coa.engines import make_engine
    from coa.environment import SearchEnvConfig
    from coa.formats import SEARCH_R1
    from coa.model import base_model_dir
    from coa.prompts import PromptConfig, render_prompt
    from coa.questions import DEFAULT_QUESTIONS, load_questions
    from coa.search import DEFAULT_CORPUS, build_index, load_searcher
    from train.config import RL2Config

    torch.set_num_threads(args.threads)
    phases.mark("imports (torch, vllm, transformers)")
    model_dir = args.model or str(base_model_dir())
    tok = AutoTokenizer.from_pretrained(model_dir)
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    temperature = RL2Config.temperature  # the RL stages' rollout temperature
    add_fused_lm_head(policy, temperature=temperature, outputs=("log_probs", "entropy"))  # GRPOTrainer's LM head
    if not args.trl_defaults:
        from train.trl_glue import tile_lm_head_for_cpu

        tile_lm_head_for_cpu()
    policy.gradient_checkpointing_enable()
    policy.config.use_cache = False
    if args.lora_r:
        from peft import LoraConfig, get_peft_model

        policy = get_peft_model(
            policy,
            LoraConfig(
                r=args.lora_r, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
            ),
        )
        policy.enable_input_require_grads()
    trained = [p for p in policy.parameters() if p.requires_grad]
    phases.mark(f"policy float32 ({sum(p.numel() for p in trained) / 1e6:.1f}M trained)")
    scratch = tempfile.TemporaryDirectory(prefix="bench_rl_memory_")  # removed at exit
    searcher = load_searcher(build_index(DEFAULT_CORPUS, Path(scratch.name) / "index", show_progress=False))
    phases.mark("search index (BM25, embedded corpus)")

    started = time.perf_counter()
    engine = make_engine(
        "vllm", model=model_dir, tokenizer=tok, temperature=temperature, kv_cache_gib=args.kv_cache_gib
    )
    phases.mark(f"vLLM engine (KV cache {args.kv_cache_gib:g} GiB)", time.perf_counter() - started)

    prompt_cfg = PromptConfig(format="search_r1", mode="coa", demonstrations=False, prefill="<think>\n")
    env = SearchEnvConfig()
    questions = load_questions(DEFAULT_QUESTIONS, limit=args.prompts)
    episodes = [
        start_episode(render_prompt(tok, q["question"], prompt_cfg), tok, prefill=prompt_cfg.prefill, tools="real")
        for q in questions
    ]
    started = time.perf_counter()
    drive(episodes, engine, searcher, SEARCH_R1, env.budget, seeds=list(range(len(episodes))))
    rollouts = [ep.rollout() for ep in episodes]
    lengths = [len(r["prompt_ids"]) + len(r["completion_ids"]) for r in rollouts]
    phases.mark(f"rollouts ({len(episodes)}, longest {max(lengths)} tokens)", time.perf_counter() - started)

    from train.checkpoint import release_free_memory
    from train.rollout import policy_weights

    class Unwrapped:  # policy_weights reads the model through the trainer's accelerator
        class accelerator:
            unwrap_model = staticmethod(lambda m: m)

        model = policy

    optimizer = torch.optim.AdamW(trained, lr=1e-6)
    for step in (1, 2):  # the second step runs with the optimizer's moments held, as every later step does
        started = time.perf_counter()
        for r in rollouts:  # one rollout per micro-batch, as the RL stages train
            ids = torch.tensor([r["prompt_ids"] + r["completion_ids"]])
            keep = len(r["completion_ids"])
            labels = ids.clone()
            labels[:, :-keep] = -100  # only the completion is scored, as GRPOTrainer does
            out = policy(input_ids=ids, labels=labels, fused_lm_head=True)
            logps, entropy = out.log_probs[:, -keep:], out.entropy[:, -keep:]
            mask = torch.tensor([r["env_mask"]], dtype=logps.dtype)
            # the entropy is logged, not trained on, but GRPOTrainer computes it in the same pass
            (-(logps * mask).sum() / mask.sum() / len(rollouts) + 0 * entropy.sum()).backward()
            del out, logps, entropy
            if not args.trl_defaults:
                release_free_memory()  # as train.run does after each micro-batch
        phases.mark(f"step {step}: forward + backward (each rollout)", time.perf_counter() - started)
        started = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # the HF Trainer's way: gradients are freed between steps
        release_free_memory()  # as train.run does at each step's end
        phases.mark(f"step {step}: AdamW step", time.perf_counter() - started)
        started = time.perf_counter()
        engine.sync_weights(policy_weights(Unwrapped))
        phases.mark(f"step {step}: weight sync", time.perf_counter() - started)

    settings = "TRL's tiles, trim per step" if args.trl_defaults else "the stages' memory settings"
    print(
        f"two RL-2 steps on one batch of {len(rollouts)} rollouts, longest {max(lengths)} tokens, KV cache "
        f"{args.kv_cache_gib:g} GiB, LoRA r {args.lora_r}, {args.threads} torch threads, {settings}"
    )
    print("| phase | rss GB | change GB | peak GB | s |\n|---|---|---|---|---|")
    for name, rss, change, peak, seconds in phases.rows:
        print(f"| {name} | {rss:.2f} | {change:+.2f} | {peak:.2f} | {seconds:.1f} |")


def compare(argv: list[str]) -> None:
    """The bench in two fresh processes (the tile setting holds for a process's life): defaults, then ours."""
    import subprocess

    peaks = []
    for extra in (["--trl-defaults"], []):
        table = subprocess.run(
            [sys.executable, __file__, *argv, *extra], check=True, capture_output=True, text=True
        ).stdout
        print(table)
        peaks.append(
            max(
                float(row.split("|")[4])
                for row in table.splitlines()
                if row.startswith("| ") and not row.startswith("| phase")
            )
        )
    print(
        f"peak: {peaks[0]:.2f} GB with TRL's tiles and trim per step, {peaks[1]:.2f} GB with the stages' "
        f"settings ({peaks[1] / peaks[0]:.2f}x)"
    )


if __name__ == "__main__":
    main()
