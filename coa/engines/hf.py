"""``hf``: transformers ``generate`` in-process, one left-padded batch per round (CPU or GPU).

The reference engine for RL rollouts (the policy being trained generates) and in-process evaluation
(``make_engine("hf", model="runs/train/sft2")`` loads a checkpoint; no server). Each request continues
from its exact ids; the generated ids come back as generated, up to the first EOS, so the loop cuts
them at the token level (``coa.agent.cut_at_tag``).
"""

from __future__ import annotations

import copy

from coa.agent import Generation
from coa.engines import Batched, Request, register


@register("hf")
class HFEngine(Batched):
    """``model``: a loaded ``PreTrainedModel`` or a checkpoint folder; ``generation_config``: sampling
    settings (e.g. TRL's); otherwise ``temperature`` (0 = greedy) and ``top_p``."""

    def __init__(
        self,
        model,
        tokenizer=None,
        generation_config=None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        name: str = "",
        dtype: str = "float32",
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        if isinstance(model, str):
            name = name or model
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).eval()
        self.model, self.tokenizer, self.name = model, tokenizer, name or getattr(model, "name_or_path", "hf")
        if generation_config is None:
            sample = temperature > 0
            generation_config = GenerationConfig(
                do_sample=sample,
                temperature=temperature if sample else None,
                top_p=top_p if sample else None,
                top_k=None,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        self.generation_config = generation_config
        eos = generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos if eos is not None else tokenizer.eos_token_id])

    def generate_batch(self, requests: list[Request]) -> list[Generation]:
        import torch

        rows = [r.ids for r in requests]
        width = max(map(len, rows))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        config = copy.deepcopy(self.generation_config)
        config.max_new_tokens = max(r.max_tokens for r in requests)
        stops = sorted({s for r in requests for s in r.stop})
        config.stop_strings = stops or None
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids.to(self.model.device),
                attention_mask=attention.to(self.model.device),
                generation_config=config,
                tokenizer=self.tokenizer,
            )
        return [self._finish(ids, r) for ids, r in zip(out[:, width:].tolist(), requests)]

    def _finish(self, ids: list[int], request: Request) -> Generation:
        """Generated ids up to the first EOS (pad == EOS for SmolLM2: a row halted by a stop string is
        padded with "EOS" it never wrote, so a stop string in the text ends it first)."""
        end = next((i for i, t in enumerate(ids) if t in self.eos_ids), len(ids))
        body = ids[:end][: request.max_tokens]
        text = self.tokenizer.decode(body, skip_special_tokens=False)
        if any(s in text for s in request.stop):
            return Generation(text, "stop", token_ids=body, n_tokens=len(body))
        if end < len(ids) and end < request.max_tokens:
            return Generation(text, "stop", token_ids=body, eos=True, n_tokens=end + 1)
        return Generation(text, "length", token_ids=body, n_tokens=len(body))
