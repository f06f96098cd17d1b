"""Prompt templates, defined once: instruction text, few-shot demonstrations, assistant prefill.

``AUTOCOA_COA`` is the AutoCoA repo's exact CoA instruction (one user turn, no system prompt; the
``prompt`` column of their parquet files: template + question + two newlines).
``SEARCH_R1_COA`` is Search-R1's instruction. The CoT templates are the same tasks with the tool
removed. Demonstrations are written for this toolkit on facts outside HotpotQA/Bamboogle questions;
they teach a small model the tag syntax (0/20 well-formed searches without, 16/20 with a demo and
a prefilled assistant start on SmolLM2-135M).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from coa.formats import FORMAT, FormatPreset, get_format
from coa.tools import tool_class
from coa.tools.schema import signature
from coa.tools.toolbox import example

AUTOCOA_COA = (
    "You are an intelligent reasoning assistant with access to a web search tool to help you obtain accurate "
    "information. When answering the user's questions, please adhere to the following guidelines:\n\n"
    "1. **Uncertainty Handling:**  \n"
    "   - Encourage the use of web search to solve the problems mentioned during reasoning. \n"
    "   - If you are uncertain or do not have sufficient knowledge about a specific detail, you **must** perform a web search. \n"
    "   - To perform a web search the format **must** be in the format mentioned in point 2 Web Search Format\n"
    "   - You can perform multiple web searches to ensure that the answer is correct.\n"
    '   - The web search should be initiated only within your internal reasoning (the "thinking" phase), and it should not appear in your final answer to the user.\n\n'
    "2. **Web Search Format:**  \n"
    "   - When calling the web search tool, use the following exact format:\n"
    "     ```\n"
    "     <begin_search> your query here </end_search>\n"
    "     ```\n"
    "   - After you perform a web search, you will receive results enclosed in:\n"
    "     ```\n"
    "     <search_result> ... </search_result>\n"
    "     ```\n"
    "   - You can then use this information to further refine your reasoning and answer.\n\n"
    "3. **Process:**  \n"
    "   - If you encounter any uncertainty or unknown knowledge, embed a web search query within your internal thoughts (surrounded by `<think></think>` tags) using the specified format.\n"
    "   - Incorporate the search results into your reasoning before finalizing your answer.\n"
    "   - You should provide your final answer in the format \\boxed{{YOUR_ANSWER}}. \n\n"
    "Now, please answer the user's question below: \n"
    "{question}\n\n"
)

AUTOCOA_COT = (
    "You are an intelligent reasoning assistant. Think step by step inside <think></think> tags, using only "
    "what you know, then give your final answer in the format \\boxed{{YOUR_ANSWER}}.\n\n"
    "Now, please answer the user's question below: \n"
    "{question}\n\n"
)

SEARCH_R1_COA = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get "
    "new information. After reasoning, if you find you lack some knowledge, you can call a search engine by "
    "<search> query </search> and it will return the top searched results between <information> and "
    "</information>. You can search as many times as your want. If you find no further external knowledge "
    "needed, you can directly provide the answer inside <answer> and </answer>, without detailed illustrations. "
    "For example, <answer> Beijing </answer>. Question: {question}\n"
)

SEARCH_R1_COT = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first. Then provide the "
    "answer inside <answer> and </answer>, without detailed illustrations. For example, <answer> Beijing "
    "</answer>. Question: {question}\n"
)

TEMPLATES = {
    ("autocoa", "coa"): AUTOCOA_COA,
    ("autocoa", "cot"): AUTOCOA_COT,
    ("search_r1", "coa"): SEARCH_R1_COA,
    ("search_r1", "cot"): SEARCH_R1_COT,
}

# One worked example per preset and mode, on a question outside the evaluation data.
_DEMO_QUESTION = "Which river flows through the capital city of the country that hosted Expo 2010?"
_DEMO_DOC = (
    'result 1: "Expo 2010"\nExpo 2010 was a World Expo held in Shanghai, China.\n'
    'result 2: "Beijing"\nBeijing is the capital of China. The Yongding River flows through it.'
)


def demonstration(fmt: FormatPreset, mode: str) -> str:
    """A worked example in the preset's own tags (observation text built by the preset)."""
    if mode == "cot":
        body = (
            f"{fmt.think_open}\nExpo 2010 was held in Shanghai, China. The capital of China is Beijing, "
            f"and the Yongding River flows through Beijing.\n{fmt.think_close}\n"
        )
    else:
        obs = fmt.wrap_observation(
            _DEMO_DOC
            if fmt.name == "autocoa"
            else "Doc 1(Title: Expo 2010) Expo 2010 was a World Expo held in Shanghai, China.\n"
            "Doc 2(Title: Beijing) Beijing is the capital of China. The Yongding River "
            "flows through it."
        )
        body = (
            f"{fmt.think_open}\nI need the host country of Expo 2010 and its capital.\n"
            f"{fmt.search_call('Expo 2010 host country capital river')}{obs}"
            f"Expo 2010 was in China, whose capital Beijing lies on the Yongding River.\n{fmt.think_close}\n"
        )
    answer = fmt.answer_text("Yongding River")
    return f"Example question: {_DEMO_QUESTION}\nExample answer:\n{body}{answer}\n\n"


@dataclass
class PromptConfig:
    format: str = field(default=FORMAT, metadata={"help": "follows the top-level `format` (not set here)"})
    mode: str = field(
        default="coa", metadata={"help": "coa (search allowed) or cot (no tool); synth sets it from mode"}
    )
    demonstrations: bool = field(
        default=False,
        metadata={
            "help": "prepend one worked example to the instruction (an untrained model may need it; a trained "
            "student does not; the paper: none)"
        },
    )
    prefill: str = field(
        default="<think>\n",
        metadata={"help": 'written by the toolkit at the start of the assistant turn: a "prefill" segment'},
    )
    system: str | None = field(
        default=None, metadata={"help": "optional system message; null keeps the tokenizer's default"}
    )
    tools: list = field(
        default_factory=lambda: ["search"],
        metadata={"help": "follows search.tools (not set here): tools beyond search are listed in the instruction"},
    )


def prompt_template(cfg: PromptConfig) -> str:
    try:
        return TEMPLATES[(cfg.format, cfg.mode)]
    except KeyError:
        raise ValueError(
            f"no prompt template for format={cfg.format!r} mode={cfg.mode!r}; known: {sorted(TEMPLATES)}"
        ) from None


def extra_tools(cfg: PromptConfig) -> list[str]:
    """The enabled tools the instruction lists (search has its own words in every template); none for cot."""
    return [t for t in cfg.tools if t != "search"] if cfg.mode == "coa" else []


def tool_section(cfg: PromptConfig) -> str:
    """The instruction's paragraph on the tools beyond search: each one's name, description and arguments, and
    the preset's generic call form with an example (``coa.tools``; the policy's calls parse as this form)."""
    fmt = get_format(cfg.format)
    lines = []
    for name in extra_tools(cfg):
        tool = tool_class(name)
        lines.append(f"- {name}: {tool.description} Arguments: {signature(tool.parameters)}.")
    first = tool_class(extra_tools(cfg)[0])
    call = fmt.tool_call(first.name, json.loads(example(first.parameters)))
    return (
        "Besides searching, you can call these tools:\n"
        + "\n".join(lines)
        + f"\nTo call one, write {call} (its name and one JSON object of arguments); its result comes back between "
        f"{fmt.response_open.strip()} and {fmt.response_close.strip()}.\n\n"
    )


def prompt_id(cfg: PromptConfig) -> str:
    tools = "+" + "+".join(extra_tools(cfg)) if extra_tools(cfg) else ""
    return f"{cfg.format}/{cfg.mode}{'+demo' if cfg.demonstrations else ''}{tools}"


def prompt_hash(cfg: PromptConfig) -> str:
    parts = [prompt_template(cfg), str(cfg.demonstrations), cfg.prefill, cfg.system or ""]
    key = "\x1f".join(parts + ([tool_section(cfg)] if extra_tools(cfg) else []))  # search only: the old hashes
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def user_message(question: str, cfg: PromptConfig) -> str:
    text = prompt_template(cfg).format(question=question)
    marker = "Now, please answer" if cfg.format == "autocoa" else "Question:"
    if extra_tools(cfg):  # before the question, like a demonstration
        head, sep, tail = text.rpartition(marker)
        text = f"{head}{tool_section(cfg)}{sep}{tail}" if sep else tool_section(cfg) + text
    if cfg.demonstrations:
        demo = demonstration(get_format(cfg.format), cfg.mode)
        head, sep, tail = text.rpartition(marker)
        text = f"{head}{demo}{sep}{tail}" if sep else demo + text
    return text


def render_prompt(tokenizer, question: str, cfg: PromptConfig) -> str:
    """The chat-templated prompt text up to the assistant turn (prefill not included)."""
    messages = ([{"role": "system", "content": cfg.system}] if cfg.system else []) + [
        {"role": "user", "content": user_message(question, cfg)}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
