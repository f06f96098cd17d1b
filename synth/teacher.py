"""Where the teacher is served and how it is asked: ``teacher.*`` of ``python -m synth.run``.

``kind=llm``: a model behind an OpenAI-compatible server (or several: ``base_url`` takes a list), driven
by the ``completions`` engine (``api=completions``: raw prompts, token ids with vLLM) or the ``chat`` engine
(``api=chat``: chat messages, native tool calls or tags, reasoning fields; ``coa.engines.chat``);
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
    base_url: list | str = field(default="", metadata={
        "help": "OpenAI-compatible base URL (…/v1), or several ([u1, u2] or u1,u2: requests go to the least-loaded, "
                "a failing one is taken out for backoff_s); empty = start the embedded vLLM CPU teacher"})
    api: str = field(default="completions", metadata={
        "help": "completions (raw-prompt /v1/completions) | chat (/v1/chat/completions, converted into the format)"})
    tools: str = field(default="native", metadata={
        "help": "api=chat: native (the search tool declared in `tools`, called via tool_calls) | tags (the model "
                "writes the format's tags; requests stop at the search-close tag)"})
    tool_name: str = field(default="search", metadata={"help": "api=chat, tools=native: the search function's name"})
    tool_arg: str = field(default="query", metadata={"help": "api=chat, tools=native: its one string parameter"})
    tool_choice: str = field(default="auto", metadata={
        "help": "api=chat, tools=native: auto | required (every turn must search) | first (the first turn must "
                "search: for teachers that answer from memory)"})
    strict_tools: bool = field(default=True, metadata={
        "help": "api=chat, tools=native: declare the tool with strict: true (the server holds the call to the "
                "argument schema); false for APIs that refuse the flag"})
    send_reasoning: bool = field(default=True, metadata={
        "help": "api=chat: send each assistant turn's reasoning back in later requests (DeepSeek's thinking mode "
                "with tool calls requires it)"})
    stream: bool = field(default=False, metadata={"help": "api=chat: stream replies (for servers that only stream)"})
    answer_pattern: str = field(default="", metadata={
        "help": "api=chat: regex with one group for the final answer in the reply (empty = the format's answer "
                "markup, then \\boxed{…}, then a closing 'Final answer: …' line)"})
    backoff_s: float = field(default=30.0, metadata={"help": "seconds a failing endpoint is left out"})
    model: str = field(default="SmolLM2-135M-Instruct", metadata={"help": "model name at that server"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "environment variable holding the key"})
    timeout_s: float = field(default=300.0, metadata={"help": "per-request timeout"})
    retries: int = field(default=4, metadata={"help": "retries of timeouts/connection errors/429/5xx, with backoff"})
    token_prompts: bool | None = field(default=None, metadata={
        "help": "send prompts as token ids and read ids back (null = when the server is vLLM; the served "
                "model must share `tokenizer`)"})
    price_prompt: float = field(default=0.0, metadata={"help": "price per 1M prompt tokens (0 = no cost reported)"})
    price_completion: float = field(default=0.0, metadata={"help": "price per 1M completion tokens"})
    max_cost_usd: float = field(default=0.0, metadata={
        "help": "stop the run cleanly once the output's cost (price_* × tokens, earlier runs' rows included) "
                "reaches this; 0 = unlimited"})
    max_total_tokens: int = field(default=0, metadata={
        "help": "stop the run cleanly once the output's prompt + completion tokens (earlier runs' rows "
                "included) reach this; 0 = unlimited"})

    def __post_init__(self) -> None:
        if self.kind not in ("llm", "reference"):
            raise ValueError(f"teacher.kind must be 'llm' or 'reference', got {self.kind!r}")
        if self.retries < 0:
            raise ValueError(f"teacher.retries must be >= 0, got {self.retries}")
        if self.api not in ("completions", "chat"):
            raise ValueError(f"teacher.api must be 'completions' or 'chat', got {self.api!r}")
        if self.tools not in ("native", "tags"):
            raise ValueError(f"teacher.tools must be 'native' or 'tags', got {self.tools!r}")
        if self.tool_choice not in ("auto", "required", "first"):
            raise ValueError(f"teacher.tool_choice must be auto, required or first, got {self.tool_choice!r}")
        if self.max_cost_usd < 0 or self.max_total_tokens < 0:
            raise ValueError("teacher.max_cost_usd and teacher.max_total_tokens must be >= 0 (0 = unlimited)")
        if self.max_cost_usd and not (self.price_prompt or self.price_completion):
            raise ValueError("teacher.max_cost_usd needs teacher.price_prompt / price_completion (per 1M tokens)")
        if self.timeout_s <= 0:
            raise ValueError(f"teacher.timeout_s must be > 0, got {self.timeout_s}")

    @property
    def urls(self) -> list[str]:
        from coa.engines.pool import as_urls

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
