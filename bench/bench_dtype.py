"""Serving dtype on this CPU: vLLM CPU prefill and decode throughput in float32 vs bfloat16.

    python bench/bench_dtype.py [--prompts 32] [--prompt-tokens 900] [--new-tokens 32] [--rounds 2]

Starts the embedded SmolLM2-135M on vLLM CPU once per dtype (same flags as synthesis and evaluation),
sends the same CoA-sized prompts (held-out HotpotQA questions with their BM25 passages, as a search
observation would hold them; 16 in flight) and prints prompt tokens/s, completion tokens/s and the
ratio float32 / bfloat16, next to what ``synth.serve.serving_dtype("auto")`` picks from the CPU flags.
Rounds alternate between the dtypes' servers so load from other work hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

import httpx

from coa.formats import get_format
from coa.procs import free_port
from coa.questions import DEFAULT_QUESTIONS, load_questions
from coa.search import DEFAULT_CORPUS, build_index, load_searcher
from coa.model import cpu_has_native_bf16
from coa.model import serving_dtype
from synth.serve import VLLMServerConfig, start_engine


def prompts(n: int, target_tokens: int, tokenizer) -> list[str]:
    scratch = tempfile.TemporaryDirectory(prefix="bench_dtype_")  # removed when the prompts are built
    index = build_index(DEFAULT_CORPUS, scratch.name, show_progress=False)
    searcher, fmt = load_searcher(index), get_format("search_r1")
    out = []
    for q in load_questions(DEFAULT_QUESTIONS)[-n:]:
        docs = searcher.search([q["question"]], 8)[0]
        text = f"Question: {q['question']}\n"
        for k in range(1, len(docs) + 1):
            text = f"Question: {q['question']}\n<think>\n" + fmt.observation(docs[:k])
            if len(tokenizer(text)["input_ids"]) >= target_tokens:
                break
        out.append(text)
    return out


async def run_round(base_url: str, texts: list[str], new_tokens: int, in_flight: int = 16) -> tuple[int, int, float]:
    sem = asyncio.Semaphore(in_flight)
    async with httpx.AsyncClient(timeout=600) as client:

        async def one(text: str) -> tuple[int, int]:
            async with sem:
                r = await client.post(
                    f"{base_url}/completions",
                    json={
                        "model": "bench",
                        "prompt": text,
                        "max_tokens": new_tokens,
                        "temperature": 0.0,
                        "ignore_eos": True,
                    },
                )
                usage = r.json()["usage"]
                return usage["prompt_tokens"], usage["completion_tokens"]

        started = time.perf_counter()
        done = await asyncio.gather(*(one(t) for t in texts))
    return sum(p for p, _ in done), sum(c for _, c in done), time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=900)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from coa.model import base_model_dir

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir())
    texts = prompts(args.prompts, args.prompt_tokens, tokenizer)
    servers, results = {}, {"float32": [], "bfloat16": []}
    try:
        for dtype in results:
            cfg = VLLMServerConfig(dtype=dtype, port=free_port(), served_name="bench")
            servers[dtype] = (start_engine(cfg), cfg.base_url)
        for i in range(args.rounds):
            for dtype in results if i % 2 == 0 else list(results)[::-1]:
                # the prefix cache would serve round 2 from memory: vary the prompts per round
                results[dtype].append(
                    asyncio.run(run_round(servers[dtype][1], [f"[{i}] {t}" for t in texts], args.new_tokens))
                )
    finally:
        for server, _ in servers.values():
            if server is not None:
                server.stop()
    rate = {}
    print(
        f"CPU native bf16 (avx512_bf16/AMX): {cpu_has_native_bf16()}; serving_dtype('auto') -> "
        f"{serving_dtype('auto', cuda=False)}"
    )
    print(f"{'dtype':10} {'prompt tok/s':>13} {'completion tok/s':>17} {'wall s':>8}")
    for dtype, rounds in results.items():
        p, c, wall = (sum(x[i] for x in rounds) for i in range(3))
        rate[dtype] = p / wall
        print(f"{dtype:10} {p / wall:13.0f} {c / wall:17.1f} {wall:8.1f}")
    print(f"float32 / bfloat16 throughput: {rate['float32'] / rate['bfloat16']:.2f}x")


if __name__ == "__main__":
    main()
