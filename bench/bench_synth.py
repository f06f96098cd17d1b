"""Synthesis throughput: the toolkit's CoA synthesis vs the raw engine, same server, same tokens.

    python bench/bench_synth.py                                  # embedded vLLM CPU teacher
    python bench/bench_synth.py limit=64 concurrency=32 teacher_url=http://127.0.0.1:8100/v1

1. toolkit: ``synth`` CoA synthesis of ``limit`` questions at ``concurrency`` trajectories in flight
   (real BM25 search, observations appended, continuations, parquet shards, summary).
2. raw replay: the same engine driven directly over HTTP at the same concurrency with the requests
   the toolkit sent (per trajectory, one call after another: the same texts, observations included,
   each generating exactly as many tokens with ``ignore_eos``): the same engine work and the same
   total completion tokens, without the toolkit (no parsing, search, bookkeeping, shards).
3. raw one-shot: one request per trajectory (its prompt, all its completion tokens at once). The
   engine then never reads an observation: the gap to it is the cost of multi-turn CoA itself.

After an untimed warm-up the three are timed ``repeats`` times in turn; the ratio of completion
tokens/s, toolkit / raw replay, is the headline (target >= 0.9); toolkit / one-shot is printed too.
Results go to ``bench/out/synth.json``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

import httpx

from coa.config import load_config
from coa.prompts import PromptConfig
from coa.trajectory import read_trajectories
from synth.config import SynthConfig
from synth.run import build_jobs, execute, load_tokenizer
from synth.serve import VLLMServerConfig, embedded_teacher
from synth.teacher import TeacherConfig


@dataclass
class BenchConfig:
    limit: int = field(default=48, metadata={"help": "questions (one trajectory each)"})
    concurrency: int = field(default=16, metadata={"help": "requests / trajectories in flight on both sides"})
    max_tokens: int = field(default=256, metadata={"help": "token budget per trajectory"})
    repeats: int = field(default=2, metadata={"help": "alternating toolkit/raw rounds"})
    format: str = field(default="search_r1", metadata={"help": "tags the 135M model closes often enough to search"})
    prefill: str = field(default="<think>\nI need to search.\n<search>", metadata={"help": "assistant start"})
    index: str = field(default="runs/index", metadata={"help": "coa.search index (built if missing)"})
    teacher_url: str = field(default="", metadata={"help": "empty = start the embedded teacher"})
    out: str = field(default="bench/out/synth.json", metadata={"help": "results file"})


def synth_config(cfg: BenchConfig, url: str, out: str, offset: int = 0) -> SynthConfig:
    return SynthConfig(
        mode="coa",
        format=cfg.format,
        limit=cfg.limit,
        offset=offset,
        max_tokens=cfg.max_tokens,
        index=cfg.index,
        concurrency=cfg.concurrency,
        out=out,
        progress=False,
        teacher=TeacherConfig(base_url=url),
        prompt=PromptConfig(prefill=cfg.prefill),
    )


def toolkit_round(cfg: BenchConfig, url: str, offset: int) -> tuple[dict, list]:
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as out:
        scfg = synth_config(cfg, url, out, offset)
        jobs = build_jobs(scfg)
        cpu = time.process_time()
        summary = execute(scfg, jobs)
        cpu = time.process_time() - cpu
        rows = read_trajectories(out)
    run = summary["run"]
    return {
        "wall_s": run["wall_s"],
        "completion_tokens": run["completion_tokens"],
        "tok_s": run["completion_tokens_per_s"],
        "teacher_calls": run["teacher_calls"],
        "searches": run["search_calls"],
        "prompt_tokens": run["prompt_tokens"],
        "client_cpu_s": round(cpu, 2),
    }, rows


def replay_chains(rows, prefill: str, tokenizer) -> list[list[tuple[str, int]]]:
    """The toolkit's own requests, per trajectory: the text each call sent and the tokens it generated
    (re-tokenised; the last call takes the remainder so each chain sums to the billed tokens)."""
    chains = []
    for t in rows:
        calls, text = [], t.prompt
        for i, seg in enumerate(t.segments):
            if seg["kind"] == "model":
                sent = text + (prefill if i == 0 else "")
                generated = seg["text"][len(prefill) :] if i == 0 else seg["text"]
                calls.append([sent, max(1, len(tokenizer(generated, add_special_tokens=False)["input_ids"]))])
            text += seg["text"]
        calls[-1][1] = max(1, t.completion_tokens - sum(n for _, n in calls[:-1]))
        chains.append([tuple(c) for c in calls])
    return chains


async def raw_round(url: str, model: str, chains: list[list[tuple[str, int]]], concurrency: int, salt: str) -> dict:
    """Drive the engine directly: ``concurrency`` chains in flight, the calls of a chain one after another,
    each generating exactly its token count (``ignore_eos``). ``salt`` starts every text, so nothing
    is served from the prefix cache the toolkit's round filled (requests of this round still share
    prefixes among themselves, as the toolkit's do; the instructions shared by all are cached first)."""
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def chain(calls: list[tuple[str, int]]) -> int:
            done = 0
            async with limit:
                for prompt, n in calls:
                    r = await client.post(
                        f"{url}/completions",
                        json={
                            "model": model,
                            "prompt": salt + prompt,
                            "max_tokens": n,
                            "min_tokens": n,
                            "ignore_eos": True,
                            "temperature": 0.7,
                            "add_special_tokens": False,
                        },
                    )
                    r.raise_for_status()
                    done += r.json()["usage"]["completion_tokens"]
            return done

        # untimed: put the salted shared instructions in the cache, as the toolkit's warm-up did for it
        await chain([(chains[0][0][0], 1)])
        started = time.perf_counter()
        tokens = sum(await asyncio.gather(*[chain(c) for c in chains]))
        wall = time.perf_counter() - started
    return {
        "wall_s": round(wall, 2),
        "completion_tokens": tokens,
        "tok_s": round(tokens / wall, 1),
        "requests": sum(len(c) for c in chains),
    }


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(BenchConfig, None, sys.argv[1:] if argv is None else argv)
    with ExitStack() as stack:
        url = cfg.teacher_url or stack.enter_context(embedded_teacher(VLLMServerConfig()))
        scfg = synth_config(cfg, url, "")
        model, tokenizer = scfg.teacher.model, load_tokenizer(scfg)
        # warm-up, not timed: the index load and its scorer's JIT, the HTTP clients, the engine
        toolkit_round(BenchConfig(**cfg.__dict__ | {"limit": 4}), url, offset=0)
        asyncio.run(raw_round(url, model, [[("warm up", 16)]] * 4, 4, salt=""))
        rounds = []
        for i in range(cfg.repeats):
            # fresh questions each round: the toolkit never reads what an earlier round left in the cache
            toolkit, rows = toolkit_round(cfg, url, offset=4 + i * cfg.limit)
            replay = asyncio.run(
                raw_round(url, model, replay_chains(rows, cfg.prefill, tokenizer), cfg.concurrency, salt=f"{i}r\n")
            )
            oneshot = asyncio.run(
                raw_round(
                    url,
                    model,
                    [[(t.prompt + cfg.prefill, t.completion_tokens)] for t in rows],
                    cfg.concurrency,
                    salt=f"{i}o\n",
                )
            )
            rounds.append(
                {
                    "toolkit": toolkit,
                    "raw_replay": replay,
                    "raw_oneshot": oneshot,
                    "ratio": round(toolkit["tok_s"] / replay["tok_s"], 3),
                    "ratio_oneshot": round(toolkit["tok_s"] / oneshot["tok_s"], 3),
                }
            )
            print(
                f"round {i + 1}: toolkit {toolkit['tok_s']} tok/s ({toolkit['completion_tokens']} tokens, "
                f"{toolkit['teacher_calls']} calls, {toolkit['searches']} searches, client cpu "
                f"{toolkit['client_cpu_s']}s) | raw replay {replay['tok_s']} tok/s ({replay['completion_tokens']} "
                f"tokens) | raw one-shot {oneshot['tok_s']} tok/s | ratio {rounds[-1]['ratio']} "
                f"(one-shot {rounds[-1]['ratio_oneshot']})",
                flush=True,
            )
    result = {"config": cfg.__dict__, "rounds": rounds}
    for side in ("toolkit", "raw_replay", "raw_oneshot"):
        result[f"{side}_tok_s"] = round(mean(r[side]["tok_s"] for r in rounds), 1)
    result["ratio"] = round(result["toolkit_tok_s"] / result["raw_replay_tok_s"], 3)
    result["ratio_oneshot"] = round(result["toolkit_tok_s"] / result["raw_oneshot_tok_s"], 3)
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(json.dumps(result, indent=2))
    print(
        f"toolkit / raw engine throughput = {result['ratio']} (target >= 0.9); vs one request per "
        f"trajectory (no observations to read) = {result['ratio_oneshot']}; {cfg.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
