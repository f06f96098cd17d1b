"""RL rollout speed: the vLLM engine (in-process, weights synced) vs HF ``generate``, same batch, same run.

    python bench/bench_rollout.py [--prompts 12] [--max-tokens 256] [--threads 2]

Both engines run the same agent loop (``coa.agent.drive``) on the same held-out questions with real
search (BM25 over the embedded corpus), greedy, from the embedded 135M model in float32. Prints
model tokens/s of each and the ratio, then splits a GRPO-shaped step on the vLLM rollout's batch into
rollout / weight sync / reference forward (no grad) / policy forward+backward, so one sees where the
step's time goes once rollouts are fast. Nothing is written except the printed table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def episodes(tok, questions, prompt_cfg):
    from coa.agent import start_episode
    from coa.prompts import render_prompt

    return [
        start_episode(render_prompt(tok, q["question"], prompt_cfg), tok, prefill=prompt_cfg.prefill, tools="real")
        for q in questions
    ]


def model_tokens(eps) -> int:
    return sum(sum(r["env_mask"]) for r in (ep.rollout() for ep in eps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from coa.agent import Budget, drive
    from coa.engines import make_engine
    from coa.formats import SEARCH_R1
    from coa.model import base_model_dir
    from coa.prompts import PromptConfig
    from coa.questions import DEFAULT_QUESTIONS, load_questions
    from coa.search import DEFAULT_CORPUS, build_index, load_searcher

    torch.set_num_threads(args.threads)
    model_dir = str(base_model_dir())
    tok = AutoTokenizer.from_pretrained(model_dir)
    questions = load_questions(DEFAULT_QUESTIONS, limit=args.prompts)
    prompt_cfg = PromptConfig(format="search_r1", mode="coa", demonstrations=True, prefill="<think>\n")
    budget = Budget(max_actions=2, max_tokens=args.max_tokens, topk=3)
    scratch = tempfile.TemporaryDirectory(prefix="bench_rollout_")  # removed at exit
    searcher = load_searcher(build_index(DEFAULT_CORPUS, Path(scratch.name) / "index", show_progress=False))
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)

    rows = {}
    hf = make_engine("hf", model=policy, tokenizer=tok)
    started = time.perf_counter()
    hf_eps = drive(episodes(tok, questions, prompt_cfg), hf, searcher, SEARCH_R1, budget)
    rows["hf"] = (time.perf_counter() - started, model_tokens(hf_eps))

    started = time.perf_counter()
    vllm = make_engine("vllm", model=model_dir, tokenizer=tok)
    engine_start = time.perf_counter() - started
    started = time.perf_counter()
    vllm.sync_weights(policy.state_dict().items())
    sync_s = time.perf_counter() - started
    started = time.perf_counter()
    v_eps = drive(episodes(tok, questions, prompt_cfg), vllm, searcher, SEARCH_R1, budget)
    rows["vllm"] = (time.perf_counter() - started, model_tokens(v_eps))

    print(
        f"{args.prompts} prompts x <= {args.max_tokens} model tokens, real search, greedy, float32, "
        f"{args.threads} torch threads"
    )
    print("| engine | wall s | model tokens | tokens/s |\n|---|---|---|---|")
    for name, (wall, n) in rows.items():
        print(f"| {name} | {wall:.1f} | {n} | {n / wall:.1f} |")
    ratio = (rows["vllm"][1] / rows["vllm"][0]) / (rows["hf"][1] / rows["hf"][0])
    print(
        f"\nvLLM / HF rollout throughput: {ratio:.2f}x (vLLM engine start {engine_start:.1f} s, once per stage)",
        flush=True,
    )

    # a GRPO-shaped step on the vLLM batch, one rollout per micro-batch as the RL stages train (the whole
    # batch's full-vocabulary logits at once ran this machine out of memory): reference forward (no grad),
    # then policy forward + backward
    seqs = [torch.tensor([r["prompt_ids"] + r["completion_ids"]]) for r in (ep.rollout() for ep in v_eps)]
    started = time.perf_counter()
    with torch.no_grad():
        for ids in seqs:
            policy(input_ids=ids)
    ref_s = time.perf_counter() - started
    started = time.perf_counter()
    for ids in seqs:
        logits = policy(input_ids=ids).logits[:, :-1]
        torch.log_softmax(logits.float(), -1).gather(2, ids[:, 1:, None]).mean().backward()
    backward_s = time.perf_counter() - started

    step = rows["vllm"][0] + sync_s + ref_s + backward_s
    print("\nstep split with vLLM rollouts (s, share):")
    for name, value in (
        ("rollout", rows["vllm"][0]),
        ("weight sync", sync_s),
        ("reference forward", ref_s),
        ("policy forward+backward", backward_s),
    ):
        print(f"  {name:<24} {value:6.1f}  {100 * value / step:4.0f}%")


if __name__ == "__main__":
    main()
