"""RL rollouts through the one agent loop (``coa.agent.run_batch``), as a TRL ``rollout_func``.

``rollout_func(prompts, trainer)`` gets the batch's prompts (each already repeated ``num_generations``
times by TRL's sampler), starts one episode per prompt with the prefill, and drives them with the
policy's own generation: until the search-close tag (``tools="real"``: the searcher runs and its
observation is appended as tokens with ``env_mask`` 0) or, for ``tools="simulated"``, straight to the
end (the policy writes its own observations). It returns what GRPOTrainer needs (``prompt_ids``,
``completion_ids``, ``logprobs``, ``env_mask``: the loss mask becomes ``completion_mask * env_mask``)
plus per-rollout fields the rewards read (``trajectory``, ``n_actions``, ``finish_reason``), logs tool
metrics (``agent/*``) and appends each rollout's actions to ``<output_dir>/rollouts.jsonl``.

Generation backends (``BatchGenerate`` of ``coa.agent``), token-level: each round continues from the
exact ids so far (prompt + prefill + generated + observation ids), never from re-tokenised text.

* ``HFGenerate``   the policy's ``generate`` with ``stop_strings`` (CPU and GPU).
* ``VLLMGenerate`` TRL's vLLM engine when ``use_vllm=True`` (colocate or server; GPU only; TRL syncs
  the weights before each rollout).
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
from trl.models import unwrap_model_for_generation

from coa.agent import Budget, Episode, Generation, run_batch, start_episode
from coa.formats import FormatPreset
from coa.tokenize import encode


def _live(episodes: list[Episode], texts: list[str]) -> list[Episode]:
    """The episodes ``run_batch`` is generating for: the unfinished ones, in order (checked by text)."""
    live = [ep for ep in episodes if not ep.done]
    if [ep.text for ep in live] != list(texts):
        raise RuntimeError("generate was called with texts that are not the live episodes' texts")
    return live


class _PolicyGenerate:
    """``BatchGenerate`` over the policy being trained, continuing each live episode from its exact ids."""

    def __init__(self, trainer, episodes: list[Episode], prompt_ids: list[list[int]]):
        self.trainer, self.episodes = trainer, episodes
        self.prompt_ids = {id(ep): ids for ep, ids in zip(episodes, prompt_ids)}
        self.tok = trainer.processing_class

    def __call__(self, texts: list[str], max_tokens: list[int], stop: list[str]) -> list[Generation]:
        rows = [self.prompt_ids[id(ep)] + ep.completion_ids for ep in _live(self.episodes, texts)]
        return self.generate(rows, max_tokens, stop)

    def generate(self, rows: list[list[int]], max_tokens: list[int], stop: list[str]) -> list[Generation]:
        raise NotImplementedError


class HFGenerate(_PolicyGenerate):
    """The policy's own ``generate`` (transformers), one left-padded batch per round."""

    def generate(self, rows, max_tokens, stop):
        width = max(map(len, rows))
        pad = self.tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        t = self.trainer
        config = copy.deepcopy(t.generation_config)  # TRL's sampling settings (temperature, top_p, eos ids)
        config.max_new_tokens, config.stop_strings = max(max_tokens), stop or None
        with unwrap_model_for_generation(t.model_wrapped, t.accelerator, generation_kwargs=t.generation_kwargs,
                                         gradient_checkpointing_kwargs=t.args.gradient_checkpointing_kwargs
                                         ) as model, torch.no_grad():
            out = model.generate(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device),
                                 generation_config=config, tokenizer=self.tok)
        return [self._finish(ids, limit, stop) for ids, limit in zip(out[:, width:].tolist(), max_tokens)]

    def _finish(self, ids: list[int], limit: int, stop: list[str]) -> Generation:
        eos = set(self.trainer.eos_token_ids)
        end = next((i for i, t in enumerate(ids) if t in eos), len(ids))
        body = ids[:end][:limit]
        text = self.tok.decode(body, skip_special_tokens=False)
        # pad == eos for SmolLM2: a row stopped by a stop string is padded with "EOS" it never wrote
        if any(s in text for s in stop):  # generation halts at the first stop string: it ends the text
            return Generation(text, "stop", len(body), token_ids=body)
        if end < len(ids) and end < limit:
            return Generation(text, "stop", end + 1, token_ids=body + [ids[end]])
        return Generation(text, "length", len(body), token_ids=body)


class VLLMGenerate(_PolicyGenerate):
    """TRL's vLLM engine (``use_vllm=True``, colocate or server); keeps vLLM's sampling logprobs."""

    def generate(self, rows, max_tokens, stop):
        args, engine = self.trainer.args, self.trainer.vllm_generation
        sampling = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k,
                    "repetition_penalty": args.repetition_penalty}
        stops = {"stop": stop, "include_stop_str_in_output": True} if stop else {}
        if args.vllm_mode == "server":
            out = engine.vllm_client.generate(prompts=rows, max_tokens=max(max_tokens), logprobs=0,
                                              generation_kwargs=stops, **sampling)
            pairs = [(ids, [lp[0] for lp in lps]) for ids, lps in zip(out["completion_ids"], out["logprobs"])]
        else:
            from vllm import SamplingParams, TokensPrompt

            params = [SamplingParams(max_tokens=m, logprobs=0, **sampling, **stops) for m in max_tokens]
            outs = engine.llm.generate([TokensPrompt(prompt_token_ids=r) for r in rows], params, use_tqdm=False)
            pairs = [(list(o.outputs[0].token_ids),
                      [lp[t].logprob for lp, t in zip(o.outputs[0].logprobs, o.outputs[0].token_ids)])
                     for o in outs]
        gens = []
        for (ids, logprobs), limit in zip(pairs, max_tokens):
            ids, logprobs = ids[:limit], logprobs[:limit]
            eos = bool(ids) and ids[-1] in self.trainer.eos_token_ids
            text = self.tok.decode(ids[:-1] if eos else ids, skip_special_tokens=False)
            done = eos or any(s in text for s in stop)
            gens.append(Generation(text, "stop" if done else "length", len(ids), token_ids=ids, logprobs=logprobs))
        return gens


class CountingSearch:
    """The searcher as the loop sees it, counting calls, queries, empty results and time (for logs)."""

    def __init__(self, searcher):
        self.searcher = searcher
        self.calls = self.queries = self.empty = 0
        self.seconds = 0.0

    def __call__(self, queries: list[str], k: int) -> list:
        started = time.perf_counter()
        results = self.searcher.search(queries, k)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        self.queries += len(queries)
        self.empty += sum(not docs for docs in results)
        return results


def make_rollout(fmt: FormatPreset, budget: Budget, prefill: str, tools: str, searcher=None):
    """A TRL ``rollout_func`` running ``coa.agent.run_batch`` (``searcher`` is needed for tools="real")."""
    if tools == "real" and searcher is None:
        raise ValueError("tools='real' needs a searcher (index= or retriever_url=)")

    runs = []  # the first rollout of a training run starts rollouts.jsonl afresh

    def rollout(prompts: list[str], trainer) -> dict:
        tok = trainer.processing_class
        episodes = [start_episode(p, prefill=prefill, tools=tools) for p in prompts]
        prompt_ids = [encode(tok, p) + encode(tok, prefill) for p in prompts]
        backend = VLLMGenerate if getattr(trainer, "use_vllm", False) else HFGenerate
        search = CountingSearch(searcher) if searcher is not None else None
        run_batch(episodes, backend(trainer, episodes, prompt_ids), search, fmt, budget, tokenizer=tok)
        _log(trainer, episodes, search)
        _record(trainer, episodes, append=bool(runs))
        runs.append(len(episodes))
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": [ep.completion_ids for ep in episodes],
            "logprobs": [ep.logprobs for ep in episodes] if backend is VLLMGenerate else None,
            "env_mask": [ep.env_mask for ep in episodes],
            "trajectory": [ep.completion for ep in episodes],
            "n_actions": [ep.n_actions for ep in episodes],
            "finish_reason": [ep.finish_reason for ep in episodes],
        }

    return rollout


def _record(trainer, episodes: list[Episode], append: bool) -> None:
    """One line per rollout in ``<output_dir>/rollouts.jsonl``: its actions (queries), end and token counts."""
    rank = trainer.accelerator.process_index
    suffix = f".{rank}" if trainer.accelerator.num_processes > 1 else ""
    path = Path(trainer.args.output_dir) / f"rollouts{suffix}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w") as f:
        for ep in episodes:
            f.write(json.dumps({
                "step": trainer.state.global_step, "n_actions": ep.n_actions,
                "queries": [s["query"] for s in ep.segments if s["kind"] == "observation"],
                "budget_notices": ep.budget_notices, "finish_reason": ep.finish_reason,
                "model_tokens": sum(ep.env_mask), "observation_tokens": ep.env_mask.count(0)}) + "\n")


def _log(trainer, episodes: list[Episode], search: CountingSearch | None) -> None:
    # the same channel TRL gives reward functions (``log_metric``): averaged per logging step
    n = len(episodes)
    masked = sum(m == 0 for ep in episodes for m in ep.env_mask)
    tokens = sum(len(ep.env_mask) for ep in episodes)
    values = {
        "agent/actions": sum(ep.n_actions for ep in episodes) / n,
        "agent/acting_rollouts": sum(ep.n_actions > 0 for ep in episodes) / n,
        "agent/budget_notices": sum(ep.budget_notices for ep in episodes) / n,
        "agent/observation_tokens": masked / n,
        "agent/env_masked_fraction": masked / tokens if tokens else 0.0,
        "agent/answered": sum(ep.finish_reason == "answer" for ep in episodes) / n,
    }
    if search is not None:
        values.update({"agent/search_calls": search.calls, "agent/empty_results": search.empty,
                       "agent/search_seconds": search.seconds})
    for name, value in values.items():
        trainer._log_metric(name, float(value))
