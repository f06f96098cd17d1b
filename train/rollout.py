"""RL rollouts through the one agent loop (``coa.agent.drive``), as a TRL ``rollout_func``.

``rollout_func(prompts, trainer)`` gets the batch's prompts (each already repeated ``num_generations``
times by TRL's sampler), starts one episode per prompt with the prefill, and drives them all at once on
an engine over the policy being trained, stopping at each search-close tag: ``tools="real"`` runs the
searcher and appends its observation with ``env_mask`` 0; ``tools="simulated"`` appends only the
observation's opening tag (``env_mask`` 0) and the policy writes the observation itself. It returns
what GRPOTrainer needs (``prompt_ids``, ``completion_ids``, ``logprobs``, ``env_mask``: the loss mask
becomes ``completion_mask * env_mask``) plus per-rollout fields the rewards read (``trajectory``, ``n_actions``, ``finish_reason``), logs tool
metrics (``agent/*``) and appends each rollout's actions to ``<output_dir>/rollouts.jsonl``.

Episodes are token-first (``coa.agent``): each round continues from the exact ids so far (prompt +
prefill + generated + observation ids), never from re-tokenised text. Engines (``rl*.engine``):

* ``hf``    the policy's own ``generate`` (``coa.engines.hf``), batched per round; the reference.
* ``vllm``  ``vllm.LLM`` in-process (``coa.engines.vllm``), CPU and GPU, ~3x faster rollouts on CPU:
            started from the stage's start checkpoint at the first rollout, then given the policy's
            weights every ``sync_every`` optimizer steps (logged as ``agent/weight_syncs``); its
            sampling log-probs travel with the ids. An engine that cannot start stops the stage with
            an error naming ``engine=hf`` as the way out; nothing falls back silently.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


from coa.agent import Budget, Episode, drive, start_episode, written_observations
from coa.engines import make_engine
from coa.formats import FormatPreset
from coa.tools.toolbox import Toolbox
from coa.trajectory import failed_calls, retrieved_ids
from train.trl_glue import log_metric, unwrap_model_for_generation


class CountingSearch:
    """The searcher as the loop sees it, counting calls, queries, empty results and time (for logs)."""

    def __init__(self, searcher):
        self.searcher, self.name = searcher, searcher.name
        self.calls = self.queries = self.empty = 0
        self.seconds = 0.0

    def search(self, queries: list[str], k: int) -> list:
        started = time.perf_counter()
        results = self.searcher.search(queries, k)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        self.queries += len(queries)
        self.empty += sum(not docs for docs in results)
        return results


class PolicyEngine:
    """The vLLM engine holding the policy's weights: started at the first rollout from the checkpoint the
    stage began with, synced when ``sync_every`` optimizer steps have passed since the last sync."""

    def __init__(self, sync_every: int, kv_cache_gib: float):
        self.sync_every, self.kv_cache_gib, self.engine, self.synced_step = sync_every, kv_cache_gib, None, 0

    def __call__(self, trainer):
        if self.engine is None:
            self.engine = start_vllm(trainer, self.kv_cache_gib)
        step = trainer.state.global_step
        if step - self.synced_step >= self.sync_every:
            self.engine.sync_weights(policy_weights(trainer))
            self.synced_step = step
        return self.engine


def start_vllm(trainer, kv_cache_gib: float):
    args = trainer.args
    try:
        return make_engine(
            "vllm",
            model=trainer.model.name_or_path,
            tokenizer=trainer.processing_class,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            dtype="bfloat16" if args.bf16 else "float32",
            kv_cache_gib=kv_cache_gib,
        )
    except Exception as e:  # noqa: BLE001 - no silent fallback: say what failed and the way out
        raise RuntimeError(
            f"the vLLM rollout engine could not start ({type(e).__name__}: {e}); "
            "train with rl1.engine=hf / rl2.engine=hf instead"
        ) from e


def policy_weights(trainer):
    """The policy's weights under checkpoint names, as a stream the engine loads one tensor at a time. With a
    LoRA adapter, each adapted layer's weight is computed as base + delta when the engine reaches it, so a sync
    holds one merged weight at a time (building them all first costs memory: docs/bench_rl_memory.md);
    the model itself is left untouched: merging in place and unmerging again would drift the frozen base
    weights by rounding at every sync."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not hasattr(model, "peft_config"):
        return iter(model.state_dict().items())
    from peft.tuners.lora import LoraLayer

    def plain(name: str) -> str:
        return name.removeprefix("base_model.model.").replace(".base_layer", "")

    adapted = {
        plain(name) + ".weight": module
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer) and module.active_adapters
    }

    def weights():
        for key, tensor in model.state_dict().items():
            if "lora_" in key:
                continue
            name, layer = plain(key), adapted.get(plain(key))
            if layer is None:
                yield name, tensor.detach()
            else:
                delta = sum(layer.get_delta_weight(a) for a in layer.active_adapters if a in layer.lora_A)
                yield name, tensor.detach() + delta

    return weights()


def make_rollout(
    fmt: FormatPreset,
    budget: Budget,
    prefill: str,
    tools: str,
    searcher=None,
    engine: str = "hf",
    sync_every: int = 1,
    kv_cache_gib: float = 0.5,
    toolbox: Toolbox | None = None,
):
    """A TRL ``rollout_func`` running ``coa.agent.drive`` (``searcher`` is needed for tools="real"; ``toolbox``:
    the enabled tools beyond search, ``SearchEnvConfig.loop_tools``, simulated with tools="simulated")."""
    if tools == "real" and searcher is None:
        raise ValueError("tools='real' needs a searcher (search.index= or search.retriever_url=)")
    if engine not in ("hf", "vllm"):
        raise ValueError(f"the rollout engine must be 'hf' or 'vllm', got {engine!r}")

    runs = []  # the first rollout of a training run starts rollouts.jsonl afresh (or after the resumed step)
    vllm = PolicyEngine(sync_every, kv_cache_gib) if engine == "vllm" else None

    def rollout(prompts: list[str], trainer) -> dict:
        tok = trainer.processing_class
        episodes = [start_episode(p, tok, prefill=prefill, tools=tools) for p in prompts]
        search = CountingSearch(searcher) if searcher is not None else None
        if vllm is not None:
            drive(episodes, vllm(trainer), search, fmt, budget, tools=toolbox)
            log_metric(trainer, "agent/weight_syncs", float(vllm.engine.syncs))
        else:
            with unwrap_model_for_generation(
                trainer.model_wrapped,
                trainer.accelerator,
                generation_kwargs=trainer.generation_kwargs,
                gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
            ) as model:
                hf = make_engine("hf", model=model, tokenizer=tok, generation_config=trainer.generation_config)
                drive(episodes, hf, search, fmt, budget, tools=toolbox)
        records = [ep.rollout() for ep in episodes]  # once: the log, the record and TRL read the same masks
        masks = [r["env_mask"] for r in records]
        _log(trainer, episodes, masks, search, fmt)
        _record(trainer, episodes, masks, first=not runs)
        runs.append(len(episodes))
        return {
            "prompt_ids": [r["prompt_ids"] for r in records],
            "completion_ids": [r["completion_ids"] for r in records],
            # vLLM's sampling log-probs; HF generate reports none (TRL computes the old policy's itself)
            "logprobs": [r["logprobs"] for r in records] if vllm is not None else None,
            "env_mask": [r["env_mask"] for r in records],
            "trajectory": [ep.completion for ep in episodes],
            "n_actions": [ep.n_actions for ep in episodes],
            "finish_reason": [ep.finish_reason for ep in episodes],
            # calls that came back with an error (refused or failed): the failed-call penalty reads them
            "failed_calls": [failed_calls(ep.segments) for ep in episodes],
            "retrieved_ids": [retrieved_ids(ep.segments) for ep in episodes],  # evidence_reward reads them
        }

    rollout.policy_engine = vllm  # the vLLM engine holder (None with hf), for checks after training
    return rollout


def _record(trainer, episodes: list[Episode], masks: list[list[int]], first: bool) -> None:
    """One line per rollout in ``<output_dir>/rollouts.jsonl``: its actions (queries), end and token counts.
    The first rollout of a run starts the file afresh; of a resumed run, keeps the lines of the steps finished
    before the checkpoint (``step`` counts the optimizer steps done when the rollout ran), so the stage's
    ``real_search_queries`` counts every step once."""
    rank = trainer.accelerator.process_index
    suffix = f".{rank}" if trainer.accelerator.num_processes > 1 else ""
    path = Path(trainer.args.output_dir) / f"rollouts{suffix}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = trainer.state.global_step
    if first:
        kept = (
            [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] < done]
            if done and path.exists()
            else []
        )
        path.write_text("".join(line + "\n" for line in kept))
    with open(path, "a") as f:
        for ep, mask in zip(episodes, masks):
            f.write(
                json.dumps(
                    {
                        "step": trainer.state.global_step,
                        "n_actions": ep.n_actions,
                        "queries": [s["query"] for s in ep.segments if s["kind"] == "observation" or s.get("query")],
                        # searches the real environment ran (each call it answered; a simulated opening or the budget
                        # message is none)
                        "real_search_queries": ep.n_actions if ep.tools == "real" else 0,
                        "budget_notices": ep.budget_notices,
                        "finish_reason": ep.finish_reason,
                        "model_tokens": sum(mask),
                        "observation_tokens": mask.count(0),
                    }
                )
                + "\n"
            )


def _log(
    trainer, episodes: list[Episode], masks: list[list[int]], search: CountingSearch | None, fmt: FormatPreset
) -> None:
    # the same channel TRL gives reward functions (``log_metric``): averaged per logging step
    n = len(episodes)
    masked = sum(m == 0 for mask in masks for m in mask)
    tokens = sum(map(len, masks))
    values = {
        "agent/actions": sum(ep.n_actions for ep in episodes) / n,  # answered (simulated: observation opened)
        "agent/written_searches": sum(fmt.parse(ep.completion).n_actions for ep in episodes) / n,  # calls in the text
        # simulated: the observations the policy wrote and closed (its world model at work); real: 0
        "agent/written_observations": sum(written_observations(ep, fmt) for ep in episodes) / n,
        "agent/acting_rollouts": sum(ep.n_actions > 0 for ep in episodes) / n,
        "agent/budget_notices": sum(ep.budget_notices for ep in episodes) / n,
        "agent/observation_tokens": masked / n,
        "agent/env_masked_fraction": masked / tokens if tokens else 0.0,
        "agent/answered": sum(ep.finish_reason == "answer" for ep in episodes) / n,
    }
    if search is not None:
        values.update(
            {
                "agent/search_calls": search.calls,
                "agent/empty_results": search.empty,
                "agent/search_seconds": search.seconds,
            }
        )
    for name, value in values.items():
        log_metric(trainer, name, float(value))
