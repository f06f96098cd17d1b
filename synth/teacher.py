"""The teacher: any OpenAI-compatible server driven by raw-prompt completions.

Every call sends the rendered text so far (prompt + segments), so a continuation after a search
result shares its prefix with the previous call and the engine's prefix cache applies. Generation
pauses at the format's search-close tag (``include_stop_str_in_output`` keeps the tag in the text).

Faults: timeouts, connection errors, 429 and 5xx are retried by the ``openai`` client with
exponential backoff and jitter (``retries`` times). If they persist the teacher is considered gone
and ``TeacherUnavailable`` stops the run (finished rows are kept; a re-run resumes). A 4xx answer
(e.g. a trajectory longer than the context) fails only its own trajectory (``TeacherRequestError``).

The API key comes from the environment variable named by ``api_key_env`` (``EMPTY`` when unset, which
is what local vLLM expects); it is never logged or written to outputs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import openai

from coa.agent import Generation


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


class TeacherUnavailable(RuntimeError):
    """The teacher did not answer after all retries: stop the run, keep what is done."""


class TeacherRequestError(RuntimeError):
    """The teacher rejected one request (4xx): that trajectory ends with finish_reason "error"."""


@dataclass
class Usage:
    """Token accounting of one trajectory, summed over its calls (as the server billed them)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0


class Teacher:
    def __init__(self, cfg: TeacherConfig, base_url: str, http_client=None):
        self.cfg = cfg
        self.base_url = base_url
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=os.environ.get(cfg.api_key_env) or "EMPTY",
                                         timeout=cfg.timeout_s, max_retries=cfg.retries, http_client=http_client)

    async def complete(self, text: str, max_tokens: int, stop: list[str], sampling: dict,
                       usage: Usage | None = None) -> Generation:
        """One raw-prompt completion. ``sampling``: temperature, top_p, seed. The text is sent as is
        (``add_special_tokens`` off: the rendered prompt already holds the template's special tokens)."""
        extra = {"include_stop_str_in_output": True, "add_special_tokens": False}
        params = {k: sampling[k] for k in ("temperature", "top_p", "seed") if k in sampling}
        try:
            r = await self.client.completions.create(model=self.cfg.model, prompt=text, max_tokens=max_tokens,
                                                     stop=stop or None, extra_body=extra, **params)
        except (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                openai.InternalServerError) as e:
            raise TeacherUnavailable(f"teacher {self.base_url} unavailable after {self.cfg.retries} retries: "
                                     f"{type(e).__name__}: {e}") from None
        except openai.APIStatusError as e:
            raise TeacherRequestError(f"teacher rejected a request ({e.status_code}): {e.message}") from None
        choice = r.choices[0]
        n_tokens = r.usage.completion_tokens if r.usage else 0
        if usage is not None:
            usage.calls += 1
            usage.completion_tokens += n_tokens
            usage.prompt_tokens += r.usage.prompt_tokens if r.usage else 0
        return Generation(text=choice.text, finish_reason=choice.finish_reason or "stop", n_tokens=n_tokens)

    def generator(self, job, episode, usage: Usage, sampling: dict):
        """The agent loop's generate for one trajectory; the k-th call uses seed + k."""
        params = {"temperature": sampling["temperature"], "top_p": sampling["top_p"]}

        async def generate(text: str, max_tokens: int, stop: list[str]) -> Generation:
            return await self.complete(text, max_tokens, stop, {**params, "seed": sampling["seed"] + usage.calls},
                                       usage)
        return generate

    @property
    def model(self) -> str:
        return self.cfg.model

    async def close(self) -> None:
        await self.client.close()
