"""Where the teacher is served and how it is asked: ``teacher.*`` of ``python -m synth.run``.

``kind=llm``: a model behind an OpenAI-compatible server, driven by the ``completions`` engine
(``coa.engines.completions``: token-id prompts with vLLM, text elsewhere; retries, fatal errors);
``kind=reference``: the templated teacher of ``synth.reference``. The API key comes from the
environment variable named by ``api_key_env``; it is never logged or written to outputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TeacherConfig:
    """Where the teacher is served and how requests are sent."""

    kind: str = field(default="llm", metadata={"help": "llm (a model behind an OpenAI-compatible server) | reference "
                                                       "(templated trajectories from the questions' evidence "
                                                       "annotations with real search: synth.reference)"})
    base_url: str = field(default="", metadata={"help": "OpenAI-compatible base URL (…/v1); empty = start the embedded vLLM CPU teacher"})
    model: str = field(default="SmolLM2-135M-Instruct", metadata={"help": "model name at that server"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "environment variable holding the key"})
    timeout_s: float = field(default=300.0, metadata={"help": "per-request timeout"})
    retries: int = field(default=4, metadata={"help": "retries of timeouts/connection errors/429/5xx, with backoff"})
    token_prompts: bool | None = field(default=None, metadata={
        "help": "send prompts as token ids and read ids back (null = when the server is vLLM; the served "
                "model must share `tokenizer`)"})
    price_prompt: float = field(default=0.0, metadata={"help": "price per 1M prompt tokens (0 = no cost reported)"})
    price_completion: float = field(default=0.0, metadata={"help": "price per 1M completion tokens"})

    def __post_init__(self) -> None:
        if self.kind not in ("llm", "reference"):
            raise ValueError(f"teacher.kind must be 'llm' or 'reference', got {self.kind!r}")
        if self.retries < 0:
            raise ValueError(f"teacher.retries must be >= 0, got {self.retries}")
        if self.timeout_s <= 0:
            raise ValueError(f"teacher.timeout_s must be > 0, got {self.timeout_s}")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_prompt + completion_tokens * self.price_completion) / 1e6
