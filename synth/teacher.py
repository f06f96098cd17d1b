"""Where the teacher is served and how it is asked: ``teacher.*`` of ``python -m synth.run``.

``kind=llm``: a model behind an OpenAI-compatible server (or several: ``base_url`` takes a list), driven
by the ``completions`` engine (``api=completions``: raw prompts, token ids with vLLM) or the ``chat`` engine
(``api=chat``: chat messages, native tool calls or tags, reasoning fields; ``coa.engines.chat``);
``kind=reference``: the templated teacher of ``synth.reference``. The API key comes from the
environment variable named by ``api_key_env``; it is never logged or written to outputs.

Every other key is for an LLM teacher: set while ``kind`` is ``reference`` it is refused, never ignored
(``python -m synth.run`` makes ``kind`` follow ``teacher.base_url``, ``teacher.api`` or ``teacher.model``
given on the command line: ``synth.config.kind_follows``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from coa.engines.pool import as_urls

CHAT_SERVE_HINT = (
    "start a chat server with a tool parser, e.g. `python -m synth.serve chat_template=tools "
    "tool_call_parser=hermes port=8100 &`, and pass teacher.base_url=http://127.0.0.1:8100/v1"
)


@dataclass
class TeacherConfig:
    """Where the teacher is served and how requests are sent."""

    kind: str = field(
        default="llm",
        metadata={
            "help": "llm (a model behind an OpenAI-compatible server) | reference "
            "(templated trajectories from the questions' evidence "
            "annotations with real search: synth.reference)"
        },
    )
    base_url: list | str = field(
        default="",
        metadata={
            "help": "OpenAI-compatible base URL (…/v1), or several ([u1, u2] or u1,u2: requests go to the least-loaded, "
            "a failing one is taken out for backoff_s); empty = start the embedded vLLM CPU teacher"
        },
    )
    api: str = field(
        default="completions",
        metadata={
            "help": "completions (raw-prompt /v1/completions) | chat (/v1/chat/completions, converted into the format)"
        },
    )
    tools: str = field(
        default="native",
        metadata={
            "help": "api=chat: native (the search tool declared in `tools`, called via tool_calls) | tags (the model "
            "writes the format's tags; requests stop at the search-close tag)"
        },
    )
    tool_name: str = field(default="search", metadata={"help": "api=chat, tools=native: the search function's name"})
    tool_arg: str = field(default="query", metadata={"help": "api=chat, tools=native: its one string parameter"})
    tool_choice: str = field(
        default="auto",
        metadata={
            "help": "api=chat, tools=native: auto | required (every turn must search) | first (the first turn must "
            "search: for teachers that answer from memory)"
        },
    )
    strict_tools: bool = field(
        default=True,
        metadata={
            "help": "api=chat, tools=native: declare the tool with strict: true (the server holds the call to the "
            "argument schema); false for APIs that refuse the flag"
        },
    )
    send_reasoning: bool = field(
        default=True,
        metadata={
            "help": "api=chat: send each assistant turn's reasoning back in later requests (DeepSeek's thinking mode "
            "with tool calls requires it)"
        },
    )
    stream: bool = field(default=False, metadata={"help": "api=chat: stream replies (for servers that only stream)"})
    answer_pattern: str = field(
        default="",
        metadata={
            "help": "api=chat: regex with one group for the final answer in the reply (empty = the format's answer "
            "markup, then \\boxed{…}, then a closing 'Final answer: …' line)"
        },
    )
    backoff_s: float = field(default=30.0, metadata={"help": "seconds a failing endpoint is left out (>= 0)"})
    model: str = field(default="SmolLM2-135M-Instruct", metadata={"help": "model name at that server"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "environment variable holding the key"})
    timeout_s: float = field(default=300.0, metadata={"help": "per-request timeout"})
    retries: int = field(default=4, metadata={"help": "retries of timeouts/connection errors/429/5xx, with backoff"})
    token_prompts: bool | None = field(
        default=None,
        metadata={
            "help": "send prompts as token ids and read ids back (null = when the server is vLLM; the served "
            "model must share `tokenizer`)"
        },
    )
    price_prompt: float = field(default=0.0, metadata={"help": "USD per 1M prompt tokens, >= 0 (0 = no cost reported)"})
    price_completion: float = field(default=0.0, metadata={"help": "USD per 1M completion tokens, >= 0"})
    max_cost_usd: float = field(
        default=0.0,
        metadata={
            "help": "stop the run cleanly once the output's cost (price_* × tokens, earlier runs' rows included) "
            "reaches this; 0 = unlimited"
        },
    )
    max_total_tokens: int = field(
        default=0,
        metadata={
            "help": "stop the run cleanly once the output's prompt + completion tokens (earlier runs' rows "
            "included) reach this; 0 = unlimited. No trajectory starts after that, but those in flight "
            "(up to concurrency - 1 more) finish: the overshoot is reported as run.tokens_over_budget "
            "(run.cost_over_budget_usd for max_cost_usd) in summary.json"
        },
    )

    def __post_init__(self) -> None:
        if self.kind not in ("llm", "reference"):
            raise ValueError(f"teacher.kind must be 'llm' or 'reference', got {self.kind!r}")
        if self.kind == "reference":
            self._nothing_for_an_llm()
        if self.retries < 0:
            raise ValueError(f"teacher.retries must be >= 0, got {self.retries}")
        if self.api not in ("completions", "chat"):
            raise ValueError(f"teacher.api must be 'completions' or 'chat', got {self.api!r}")
        if self.tools not in ("native", "tags"):
            raise ValueError(f"teacher.tools must be 'native' or 'tags', got {self.tools!r}")
        if self.tool_choice not in ("auto", "required", "first"):
            raise ValueError(f"teacher.tool_choice must be auto, required or first, got {self.tool_choice!r}")
        for name, unit in (
            ("price_prompt", "USD per 1M prompt tokens"),
            ("price_completion", "USD per 1M completion tokens"),
            ("max_cost_usd", "USD, 0 = unlimited"),
            ("max_total_tokens", "tokens, 0 = unlimited"),
            ("backoff_s", "seconds a failing endpoint is left out"),
        ):
            if getattr(self, name) < 0:  # a negative price or budget would keep every budget from ever being reached
                raise ValueError(
                    f"teacher.{name} must be >= 0 ({unit}), got {getattr(self, name)}: "
                    f"set teacher.{name}=0 or a positive value"
                )
        if self.max_cost_usd and not (self.price_prompt or self.price_completion):
            raise ValueError("teacher.max_cost_usd needs teacher.price_prompt / price_completion (per 1M tokens)")
        if self.timeout_s <= 0:
            raise ValueError(f"teacher.timeout_s must be > 0, got {self.timeout_s}")
        if self.answer_pattern:
            try:
                groups = re.compile(self.answer_pattern).groups
            except re.error as e:
                raise ValueError(f"teacher.answer_pattern={self.answer_pattern!r} is not a regex ({e})") from None
            if groups != 1:
                raise ValueError(
                    f"teacher.answer_pattern={self.answer_pattern!r} must have exactly one group (the "
                    f"answer), it has {groups}: e.g. 'ANSWER: (.+)'"
                )
        bad = [u for u in self.urls if not u.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(
                f"teacher.base_url: {bad[0]!r} is not an http(s) URL: give the server's base URL, "
                "e.g. http://gpu-box:8000/v1"
            )
        if self.kind == "llm" and self.api == "chat" and self.tools == "native" and not self.urls:
            raise ValueError(
                "teacher.api=chat with native tool calls needs teacher.base_url: the embedded vLLM "
                f"teacher runs without a tool parser, so every tool call would fail; {CHAT_SERVE_HINT}"
            )

    def _nothing_for_an_llm(self) -> None:
        """``kind=reference`` uses none of the LLM keys: one set anyway would be silently ignored, so refuse it."""
        shown = {
            f.name: ",".join(map(str, v)) if isinstance(v := getattr(self, f.name), list) else v for f in fields(self)
        }
        given = [
            f"teacher.{f.name}={shown[f.name]}"
            for f in fields(self)
            if f.name != "kind" and getattr(self, f.name) != f.default and (getattr(self, f.name) or f.default)
        ]
        if given:
            raise ValueError(
                f"teacher.kind is 'reference' (the templated teacher), which does not use "
                f"{', '.join(given)}: set teacher.kind=llm (with teacher.base_url=URL for a server) "
                "to run an LLM teacher, or drop those keys"
            )

    @property
    def engine(self) -> str:
        """What writes the rows: ``reference``, or the API engine (``completions`` / ``chat``)."""
        return "reference" if self.kind == "reference" else self.api

    def describe(self, embedded: str) -> str:
        """One line: which teacher runs and where (``embedded``: what serves it when ``base_url`` is empty)."""
        if self.kind == "reference":
            return "reference: templated from the questions' evidence annotations, with real search (synth.reference)"
        where = f"model {self.model!r} at {', '.join(self.urls)}" if self.urls else embedded
        how = f"tools={self.tools}, tool_choice={self.tool_choice}, " if self.api == "chat" else ""
        budget = "".join(
            [
                f", max_total_tokens={self.max_total_tokens}" if self.max_total_tokens else "",
                f", max_cost_usd={self.max_cost_usd}" if self.max_cost_usd else "",
            ]
        )
        key = f"key from ${self.api_key_env}" if self.urls else "no key"
        return f"{self.api}: {where} ({how}{key}{budget})"

    @property
    def urls(self) -> list[str]:
        return as_urls(self.base_url)

    def over_budget(self, prompt_tokens: int, completion_tokens: int) -> str:
        """Why the run must stop at these totals ("" = it may go on)."""
        total = prompt_tokens + completion_tokens
        if self.max_total_tokens and total >= self.max_total_tokens:
            return f"budget reached: {total} tokens >= teacher.max_total_tokens={self.max_total_tokens}"
        cost = self.cost(prompt_tokens, completion_tokens)
        if self.max_cost_usd and cost >= self.max_cost_usd:
            return f"budget reached: cost {cost:.4f} USD >= teacher.max_cost_usd={self.max_cost_usd}"
        return ""

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_prompt + completion_tokens * self.price_completion) / 1e6
