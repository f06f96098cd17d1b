"""``vllm``: vLLM in-process (``vllm.LLM``), CPU and GPU: RL rollouts and evaluation without a server.

Requests continue from their exact ids (``TokensPrompt``) and come back as ids with their sampling
log-probs. For RL the policy's weights reach the engine with ``sync_weights`` (each optimizer step, or
every ``sync_every`` steps): TRL 1.16's colocate sync fails on vLLM's CPU backend (prepacked linear
weights have no ``weight_loader``), while an in-place reload through the model loader works on CPU
and GPU alike; a tied LM head is refreshed after it and the prefix cache is reset, since cached keys
and values belong to the old weights. The engine runs float32 unless told otherwise: vLLM would
downcast a float32 checkpoint to bfloat16 on x86, and the log-prob gap to the policy would be ~0.2.

Episodes driven together share the engine by continuous batching: a request joins the running batch at
the engine's next step, and an episode whose generation ends goes on (its tool call, its next request)
while the others still decode, so no turn waits for the batch's longest generation.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from contextlib import contextmanager
from typing import Iterable

from coa.agent import Generation
from coa.engines import Batched, Request, register

# tokens per KV-cache block on CPU: the CPU attention kernel takes multiples of 32 (docs/bench_train.md)
CPU_BLOCK_SIZE = 32


@register("vllm")
class VLLMEngine(Batched):
    def __init__(
        self,
        model: str,
        tokenizer=None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        dtype: str = "float32",
        name: str = "",
        max_model_len: int = 4096,
        seed: int = 0,
        gpu_memory_utilization: float = 0.3,
        kv_cache_gib: float = 1.0,
        block_size: int = 0,
    ):
        # in-process: weights are handed over as tensors, not pickled to a worker process
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        import torch
        from vllm import LLM

        # on CPU the KV cache is a fixed size (vLLM's VLLM_CPU_KVCACHE_SPACE, whole GiB, wins where set);
        # on GPU it is gpu_memory_utilization's share. The prefix cache keeps whole blocks only, so a smaller
        # block recomputes less of each turn's shared prefix: block_size 0 = on CPU the kernel's smallest,
        # 32 tokens (vLLM's own CPU default is 128), on a GPU vLLM's
        cpu = {"kv_cache_memory_bytes": int(kv_cache_gib * 2**30), "block_size": CPU_BLOCK_SIZE}
        kv = {} if torch.cuda.is_available() else cpu
        if block_size:
            kv["block_size"] = block_size
        with _outside_vllms_module_scan("llvmlite.binding.ffi"):
            self.llm = LLM(
                model=model,
                dtype=dtype,
                enforce_eager=True,
                max_model_len=max_model_len,
                seed=seed,
                gpu_memory_utilization=gpu_memory_utilization,
                enable_chunked_prefill=False,
                enable_prefix_caching=True,
                **kv,
            )
        self.tokenizer = tokenizer or self.llm.get_tokenizer()
        self.name = name or model
        self.sampling = {"temperature": temperature, "top_p": top_p}
        self.syncs = 0
        self._request_ids = itertools.count()

    def _params(self, request: Request):
        from vllm import SamplingParams

        return SamplingParams(
            max_tokens=request.max_tokens,
            stop=request.stop or None,
            include_stop_str_in_output=True,
            logprobs=0,
            seed=request.seed,
            **self.sampling,
        )

    def generate_batch(self, requests: list[Request]) -> list[Generation]:
        from vllm import TokensPrompt

        params = [self._params(r) for r in requests]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=r.ids) for r in requests], params, use_tqdm=False)
        return [self._generation(o.outputs[0]) for o in outs]

    async def _run(self) -> None:
        """The worker behind ``generate``: one engine step at a time, each request added as it arrives and
        answered as it finishes; between steps the event loop runs the episodes whose generation ended. It runs
        on the event loop's thread: vLLM's in-process engine stays on the thread that made it."""
        from vllm import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        running: dict[str, asyncio.Future] = {}
        try:
            while True:
                items = [] if running else [await self._requests.get()]
                while not self._requests.empty():
                    items.append(self._requests.get_nowait())
                for request, future in items:
                    params = self._params(request)
                    params.output_kind = RequestOutputKind.FINAL_ONLY
                    request_id = f"episode-{next(self._request_ids)}"
                    try:
                        engine.add_request(request_id, TokensPrompt(prompt_token_ids=request.ids), params)
                    except Exception as e:  # noqa: BLE001 - a request the engine refuses fails alone
                        future.set_exception(e)
                        continue
                    running[request_id] = future
                if not running:
                    continue
                try:
                    outputs = engine.step()
                except Exception as e:  # noqa: BLE001 - every waiting episode gets the error
                    engine.abort_request(list(running))
                    for future in running.values():
                        if not future.done():
                            future.set_exception(e)
                    running.clear()
                    continue
                for out in outputs:
                    if out.finished and out.request_id in running:
                        future = running.pop(out.request_id)
                        if not future.done():
                            future.set_result(self._generation(out.outputs[0]))
                await asyncio.sleep(0)
        finally:  # the drive ended (or failed): nothing of it may stay in the engine for the next one
            if running:
                engine.abort_request(list(running))

    def _generation(self, out) -> Generation:
        ids = list(out.token_ids)
        logprobs = [lp[t].logprob for lp, t in zip(out.logprobs or [], ids)] if out.logprobs else None
        eos = (
            out.finish_reason == "stop"
            and out.stop_reason is None
            and bool(ids)
            and ids[-1] == self.tokenizer.eos_token_id
        )
        eos_logprob = logprobs[-1] if eos and logprobs else 0.0
        if eos:
            ids, logprobs = ids[:-1], logprobs[:-1] if logprobs else None
        return Generation(
            self.tokenizer.decode(ids, skip_special_tokens=False),
            "stop" if out.finish_reason == "stop" else "length",
            token_ids=ids,
            logprobs=logprobs,
            eos=eos,
            eos_logprob=eos_logprob,
            n_tokens=len(out.token_ids),
        )

    def sync_weights(self, named_tensors: Iterable[tuple[str, object]], tied_head: bool = True) -> None:
        """Load the policy's weights in place (checkpoint names, e.g. from ``model.state_dict()``). The
        engine is in-process, so ``named_tensors`` is consumed as the loader goes: a generator that builds
        each tensor on demand (LoRA's merged weights) holds one at a time."""
        weights = ((name, tensor.detach()) for name, tensor in named_tensors)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        if tied_head:  # the head shares the embedding matrix: redo its post-load processing (CPU prepacking)
            self.llm.apply_model(lambda m: m.lm_head.quant_method.process_weights_after_loading(m.lm_head))
        self.llm.reset_prefix_cache()
        self.syncs += 1

    def sequence_logprobs(self, ids: list[int], start: int) -> list[float]:
        """Log-probs the engine gives ``ids[start:]`` after ``ids[:start]`` (a scoring pass, for checks)."""
        from vllm import SamplingParams, TokensPrompt

        out = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids)],
            SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0),
            use_tqdm=False,
        )[0]
        return [out.prompt_logprobs[i][t].logprob for i, t in enumerate(ids) if i >= start]


@contextmanager
def _outside_vllms_module_scan(*names: str):
    """vLLM 0.32 rebinds its kernels by scanning every loaded module's attributes, and the scan fails on
    llvmlite's ``ffi.lib`` wrapper (loaded by numba, which the BM25 scorer uses): keep such modules out
    of ``sys.modules`` while the engine starts, then put them back."""
    hidden = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    try:
        yield
    finally:
        sys.modules.update(hidden)
