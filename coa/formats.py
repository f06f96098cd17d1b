"""Format presets: the tags a trajectory is written in, declared once.

A preset says how a search call, an observation and an answer look in text. From it follow:
rendering (concatenation of segments), parsing model text back into steps (lossless: every
character belongs to exactly one step, so ``"".join(step.text) == text``), the stop strings for
generation, how retrieved documents become an observation, and answer extraction.

Presets
-------
``autocoa``   the AutoCoA repo's strings: ``<think>…</think>``, ``<begin_search> q </end_search>``,
              ``<search_result> … </search_result>``, final answer ``\\boxed{…}`` after ``</think>``;
              documents rendered as ``result i: "Title"\\ntext`` (their ``topk_format``).
``search_r1`` Search-R1's: ``<think>``, ``<search>``, ``<information>``, ``<answer>``; documents
              rendered as ``Doc i(Title: t) text``.

Tools besides search (``coa.tools``) use the preset's generic call form: a JSON object
``{"name": ..., "arguments": {...}}`` between ``call_open`` and ``call_close``, its result between
``response_open`` and ``response_close``. ``search_r1`` takes the Hermes/Qwen pair
(``<tool_call>…</tool_call>``, ``<tool_response>…</tool_response>``), ``autocoa`` tags in its own style
(``<begin_call> … </end_call>``, ``<call_result> … </call_result>``). Search keeps its own tags byte for
byte; a trajectory may mix both forms, and parsing stays lossless. A tool's result is data: every preset's
control tags in it are neutralised (``neutralise``), so printed markup never closes the result early.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Sequence

from coa.search.types import Doc


@dataclass(frozen=True)
class Step:
    """One parsed piece of model text. ``text`` is the exact source slice (lossless)."""

    kind: str  # "think" | "search" | "call" | "observation" | "answer" | "text"
    text: str
    content: str = ""  # the query for a search, the answer for an answer, inner text otherwise (a call's JSON)
    tool: str = ""  # the tool a "search" or "call" step names ("" when a call's JSON names none)


@dataclass(frozen=True)
class ParseResult:
    steps: tuple[Step, ...]
    answer: str | None
    queries: tuple[str, ...]  # the search calls' queries (search tags)
    errors: tuple[str, ...]  # empty when well-formed
    calls: tuple[tuple[str, str], ...] = ()  # every call in order, search included: (tool, arguments as JSON)

    @property
    def well_formed(self) -> bool:
        return not self.errors

    @property
    def n_actions(self) -> int:
        """Tool calls written (searches and generic calls)."""
        return len(self.calls)

    @property
    def search_queries(self) -> tuple[str, ...]:
        """Every search's query in order, search tag or tool call (a call whose arguments hold no query string is
        left out)."""
        found = []
        for tool, args in self.calls:
            if tool == "search":
                try:
                    query = json.loads(args).get("query")
                except (ValueError, AttributeError):
                    continue
                if isinstance(query, str):
                    found.append(query)
        return tuple(found)


@dataclass(frozen=True)
class FormatPreset:
    name: str
    think_open: str
    think_close: str
    search_open: str
    search_close: str
    result_open: str
    result_close: str
    answer_open: str  # "\\boxed{" for autocoa (closed by the matching brace)
    answer_close: str
    doc_template: str  # str.format fields: i, title, text, contents
    doc_separator: str
    obs_before: str  # text between the search-close tag and the result-open tag
    obs_after: str
    answer_after_think: bool  # autocoa: the answer lives after </think>
    inner_pad: str  # autocoa writes "<begin_search> q </end_search>": a space inside the tags
    failure_text: str = "Retrieval failed."
    budget_text: str = "Reach the limit of search times."
    extra_stops: tuple[str, ...] = field(default=())
    # the generic call form of every tool but search (JSON {"name": ..., "arguments": {...}} inside)
    call_open: str = ""
    call_close: str = ""
    response_open: str = ""
    response_close: str = ""
    call_pad: str = ""  # inside the call and response tags

    # ---- generation -------------------------------------------------------------------
    @property
    def stop_strings(self) -> list[str]:
        """Generation pauses here so the environment can insert the observation."""
        return [self.search_close, *self.extra_stops]

    def stop_strings_for(self, tools: Sequence[str]) -> list[str]:
        """The stop strings when ``tools`` are enabled: the search-only ones, plus the generic call's close
        tag once any other tool is enabled."""
        return self.stop_strings + ([self.call_close] if self.call_close and any(t != "search" for t in tools) else [])

    def call_closes(self, tools: Sequence[str]) -> list[str]:
        """The close tags that end a call when ``tools`` are enabled (where the environment takes over)."""
        return [self.search_close] + (
            [self.call_close] if self.call_close and any(t != "search" for t in tools) else []
        )

    # ---- observations ----------------------------------------------------------------
    def observation(self, docs: Sequence[Doc]) -> str:
        """The exact text inserted after a search call (wrapping tags included)."""
        if not docs:
            body = self.failure_text
        else:
            body = self.doc_separator.join(
                self.doc_template.format(i=i, title=d.title, text=d.text, contents=d.contents)
                for i, d in enumerate(docs, start=1)
            )
        return self.wrap_observation(body)

    def documents(self, observation: str) -> list[tuple[str, str]]:
        """``(title, text)`` of each document in an observation: the inverse of ``observation(docs)``
        (``documents(observation(docs)) == [(d.title, d.text) for d in docs]``). Takes the observation with
        or without the text around its tags (a model writing its own observations may drop it); the
        failure and budget messages hold no document. A document runs until the separator followed by
        the next document's numbered start, so its text may hold the separator itself."""
        start, end = observation.find(self.result_open), observation.rfind(self.result_close)
        if start < 0 or end < start:
            return []
        body = observation[start + len(self.result_open) : end]
        pad = self.inner_pad
        if pad and body.startswith(pad) and body.endswith(pad) and len(body) >= 2 * len(pad):
            body = body[len(pad) : len(body) - len(pad)]
        if body in (self.failure_text, self.budget_text):
            return []
        head = re.escape(self.doc_template.split("{i}", 1)[0])
        fields = {"i": r"\d+", "title": "(?P<title>.*?)", "text": "(?P<text>.*?)", "contents": "(?P<contents>.*?)"}
        pattern = "".join(
            fields[p[1:-1]] if p.startswith("{") else re.escape(p)
            for p in re.split(r"(\{\w+\})", self.doc_template)
            if p
        )
        pattern += f"(?={re.escape(self.doc_separator)}{head}\\d+|\\Z)"
        docs = []
        for m in re.finditer(pattern, body, re.S):
            if "contents" in m.groupdict():  # FlashRAG's '"Title"\ntext' form: Doc reads it
                doc = Doc(id="", contents=m["contents"])
                docs.append((doc.title, doc.text))
            else:
                docs.append((m["title"], m["text"]))
        return docs

    def wrap_observation(self, body: str) -> str:
        pad = self.inner_pad
        return f"{self.obs_before}{self.result_open}{pad}{body}{pad}{self.result_close}{self.obs_after}"

    @property
    def observation_opening(self) -> str:
        """What the simulated environment writes after a search call: the observation up to its contents."""
        return f"{self.obs_before}{self.result_open}{self.inner_pad}"

    def budget_observation(self) -> str:
        return self.wrap_observation(self.budget_text)

    def search_call(self, query: str) -> str:
        return f"{self.search_open}{self.inner_pad}{query}{self.inner_pad}{self.search_close}"

    # ---- calls of any tool -------------------------------------------------------------
    def tool_call(self, name: str, args: dict) -> str:
        """A call as the policy writes it: search in its own tags, any other tool in the generic form."""
        if name == "search" and set(args) == {"query"}:
            return self.search_call(args["query"])
        return f"{self.call_open}{self.call_pad}{call_json(name, args)}{self.call_pad}{self.call_close}"

    def call_opening(self, name: str) -> str:
        """The start of a call of tool ``name`` up to its arguments: what a forced branch is prefilled with
        (search: the open tag; any other tool: the generic call up to its ``"arguments": ``, exactly as
        ``tool_call`` writes it)."""
        if name == "search":
            return self.search_open + self.inner_pad
        head = call_json(name, {})
        return self.call_open + self.call_pad + head[: head.rindex("{")]

    def forced_tool(self, written: str) -> str | None:
        """The tool whose call ``written`` ends in the opening of (``call_opening``; search also without its pad),
        or None: a forced branch's prefill, left for the policy to complete."""
        if written.endswith((self.search_open, self.search_open + self.inner_pad)):
            return "search"
        if self.call_open:
            at = written.rfind(self.call_open)
            m = _FORCED_CALL.fullmatch(written[at + len(self.call_open) :].lstrip()) if at >= 0 else None
            if m:
                return json.loads(m.group(1))
        return None

    def tool_result(self, body: str) -> str:
        """The observation after a generic call: ``body`` (neutralised: it is data) in the response tags."""
        pad = self.call_pad
        return (
            f"{self.obs_before}{self.response_open}{pad}{neutralise(body)[0]}{pad}{self.response_close}{self.obs_after}"
        )

    @property
    def response_opening(self) -> str:
        """What the simulated environment writes after a generic call: the observation up to its contents."""
        return f"{self.obs_before}{self.response_open}{self.call_pad}"

    def answer_text(self, answer: str) -> str:
        return f"{self.answer_open}{answer}{self.answer_close}"

    # ---- parsing -----------------------------------------------------------------------
    def parse(self, text: str) -> ParseResult:
        """Split model text into steps and say what is wrong; never raises."""
        steps: list[Step] = []
        errors: list[str] = []
        queries: list[str] = []
        answer: str | None = None
        pos, plain_start = 0, 0
        think_depth = 0
        think_closed = False
        calls: list[tuple[str, str]] = []
        opens = {
            self.think_open: "think",
            self.think_close: "think_close",
            self.search_open: "search",
            self.result_open: "observation",
            self.answer_open: "answer",
            self.search_close: "stray",
            self.result_close: "stray",
        }
        closes = {"search": self.search_close, "observation": self.result_close}
        if self.call_open:
            opens.update(
                {
                    self.call_open: "call",
                    self.response_open: "response",
                    self.call_close: "stray",
                    self.response_close: "stray",
                }
            )
            closes.update({"call": self.call_close, "response": self.response_close})
        if self.answer_close != "}":
            opens[self.answer_close] = "stray"
        pattern = re.compile("|".join(re.escape(t) for t in sorted(opens, key=len, reverse=True)))

        def flush(upto: int) -> None:
            if upto > plain_start:
                steps.append(Step("text", text[plain_start:upto], text[plain_start:upto]))

        while (m := pattern.search(text, pos)) is not None:
            tag, kind = m.group(0), opens[m.group(0)]
            start = m.start()
            if kind == "think":
                flush(start)
                steps.append(Step("think", tag))
                think_depth += 1
                if think_depth > 1:
                    errors.append(f"nested {self.think_open} at char {start}")
                pos = plain_start = m.end()
            elif kind == "think_close":
                flush(start)
                steps.append(Step("think", tag))
                if think_depth == 0:
                    errors.append(f"{self.think_close} without {self.think_open} at char {start}")
                think_depth = max(0, think_depth - 1)
                think_closed = True
                pos = plain_start = m.end()
            elif kind in closes:
                close = closes[kind]
                end = text.find(close, m.end())
                reopened = text.rfind(tag, m.end(), end) if end >= 0 else -1
                if end < 0 or reopened >= 0:
                    # a call runs from the last opening before its close, as the agent loop reads it
                    errors.append(f"unclosed {tag} at char {start}")
                    pos = reopened if reopened >= 0 else m.end()
                    continue
                flush(start)
                inner = text[m.end() : end]
                stop = end + len(close)
                tool = "search" if kind == "search" else ""
                if kind == "call":
                    tool, args = read_call(inner)
                    if tool:
                        calls.append((tool, args))
                    else:
                        errors.append(
                            f'{tag} without one JSON object {{"name": ..., "arguments": {{...}}}} at char {start}'
                        )
                steps.append(Step("observation" if kind == "response" else kind, text[start:stop], inner.strip(), tool))
                if kind in ("search", "call"):
                    what = "search" if kind == "search" else "tool call"
                    if answer is not None:
                        errors.append(f"{what} after the answer at char {start}")
                    if self.answer_after_think and think_closed:
                        errors.append(f"{what} after {self.think_close} at char {start}")
                if kind == "search":
                    if not inner.strip():
                        errors.append(f"empty search query at char {start}")
                    queries.append(inner.strip())
                    calls.append(("search", json.dumps({"query": inner.strip()}, ensure_ascii=False)))
                pos = plain_start = stop
            elif kind == "answer":
                stop = self._answer_end(text, m.end())
                if stop < 0:
                    errors.append(f"unclosed {tag} at char {start}")
                    pos = m.end()
                    continue
                flush(start)
                inner = text[m.end() : stop - len(self.answer_close)]
                steps.append(Step("answer", text[start:stop], inner.strip()))
                answer = inner.strip()  # the last answer wins, as in both repos' extractors
                pos = plain_start = stop
            else:
                errors.append(f"stray {tag} at char {start}")
                pos = m.end()
        flush(len(text))
        if think_depth:
            errors.append(f"unclosed {self.think_open}")
        if answer is None:
            errors.append("no answer")
        elif self.answer_after_think and not think_closed:
            errors.append(f"answer without {self.think_close}")
        return ParseResult(tuple(steps), answer, tuple(queries), tuple(errors), tuple(calls))

    def _answer_end(self, text: str, begin: int) -> int:
        """Index just past the answer's close; braces nest for ``\\boxed{``."""
        if self.answer_close != "}":
            end = text.find(self.answer_close, begin)
            return -1 if end < 0 else end + len(self.answer_close)
        depth = 1
        for i in range(begin, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return i + 1
        return -1

    def extract_answer(self, text: str) -> str | None:
        """The final answer in model text (``\\text{…}`` unwrapped), or None."""
        answer = self.parse(text).answer
        if answer is None:
            return None
        return _unwrap_text(answer)

    def render(self, prompt: str, segments: Sequence[dict]) -> str:
        """Rendering is concatenation: the prompt then every segment's exact text."""
        return prompt + completion_text(segments)

    def split_segments(self, completion: str) -> list[dict]:
        """Recover model/observation segments from rendered completion text.

        Used only for text that arrives whole (e.g. a foreign trajectory); the toolkit itself
        records segments as they are produced. The observation segment starts at the text right
        after the search-close tag (``obs_before``) so the model segment ends with that tag.
        """
        segments: list[dict] = []
        pos = 0
        for step in self.parse(completion).steps:
            if step.kind != "observation":
                continue
            start = completion.find(step.text, pos)
            obs_start = start
            if self.obs_before and completion[:start].endswith(self.obs_before):
                obs_start = start - len(self.obs_before)
            stop = start + len(step.text)
            if self.obs_after and completion.startswith(self.obs_after, stop):
                stop += len(self.obs_after)
            if obs_start > pos:
                segments.append({"kind": "model", "text": completion[pos:obs_start]})
            segments.append({"kind": "observation", "text": completion[obs_start:stop]})
            pos = stop
        if pos < len(completion):
            segments.append({"kind": "model", "text": completion[pos:]})
        return segments


_FORCED_CALL = re.compile(r'\{"name": ("(?:[^"\\]|\\.)*"), "arguments": ')


def call_json(name: str, args: dict) -> str:
    """The JSON of a generic call, ``{"name": ..., "arguments": {...}}``; a control tag inside an argument
    (code that prints ``</tool_call>``) is written with ``\\u003c`` for its ``<``: the same JSON value, and no
    tag that would end the call early."""
    text = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
    for tag in control_tags():
        if tag.startswith("<") and tag in text:
            text = text.replace(tag, "\\u003c" + tag[1:])
    return text


def read_call(inner: str) -> tuple[str, str]:
    """(tool name, arguments as JSON text) of a generic call's inner text; ("", "") when it is not one JSON
    object with a string ``name``. Arguments given as a JSON string (OpenAI's wire form) are kept as that text."""
    try:
        call = json.loads(inner)
    except json.JSONDecodeError:
        return "", ""
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
        return "", ""
    args = call.get("arguments", {})
    return call["name"], args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)


def result_text(observation: str, fmt: FormatPreset) -> str:
    """An observation segment's plain text, without the preset's result (or generic response) tags: what a
    chat API's tool message carries."""
    text = observation.strip()
    for opening, closing in ((fmt.result_open, fmt.result_close), (fmt.response_open, fmt.response_close)):
        if opening and text.startswith(opening) and text.endswith(closing):
            return text[len(opening) : len(text) - len(closing)].strip()
    return text


def completion_text(segments: Sequence[dict]) -> str:
    """Everything after the prompt: the segments' texts in order."""
    return "".join(s["text"] for s in segments)


TEXT_MARKUP = re.compile(r"\\text\{([^{}]*)\}")


def _unwrap_text(answer: str) -> str:
    return TEXT_MARKUP.sub(r"\1", answer).strip()


AUTOCOA = FormatPreset(
    name="autocoa",
    think_open="<think>",
    think_close="</think>",
    search_open="<begin_search>",
    search_close="</end_search>",
    result_open="<search_result>",
    result_close="</search_result>",
    answer_open="\\boxed{",
    answer_close="}",
    doc_template="result {i}: {contents}",
    doc_separator="\n",
    obs_before="\n\n",
    obs_after="\n\n",
    answer_after_think=True,
    inner_pad=" ",
    call_open="<begin_call>",
    call_close="</end_call>",
    response_open="<call_result>",
    response_close="</call_result>",
    call_pad=" ",
)

SEARCH_R1 = FormatPreset(
    name="search_r1",
    think_open="<think>",
    think_close="</think>",
    search_open="<search>",
    search_close="</search>",
    result_open="<information>",
    result_close="</information>",
    answer_open="<answer>",
    answer_close="</answer>",
    doc_template="Doc {i}(Title: {title}) {text}",
    doc_separator="\n",
    obs_before="\n\n",
    obs_after="\n\n",
    answer_after_think=False,
    inner_pad="",
    call_open="<tool_call>",
    call_close="</tool_call>",
    response_open="<tool_response>",
    response_close="</tool_response>",
    call_pad="\n",
)

PRESETS: dict[str, FormatPreset] = {p.name: p for p in (AUTOCOA, SEARCH_R1)}


# Teacher text is data, not markup. A teacher's free text (its reasoning, prose, a quoted search result)
# may hold a preset's control tags; copied verbatim into a trajectory they would open observations or
# searches nobody ran, or answers nobody gave. ``neutralise`` swaps their markup characters for look-alikes
# (U+2039/U+203A for the angle brackets, U+29F5 for ``\boxed``'s backslash): the text stays readable,
# and ``parse`` reads it as plain text under every preset.
LOOKALIKES = str.maketrans({"<": "\u2039", ">": "\u203a", "\\": "\u29f5"})


def control_tags(presets: Sequence[FormatPreset] | None = None) -> list[str]:
    """Every control tag of ``presets`` (default: all), longest first (autocoa's lone ``}`` is no tag)."""
    tags = {
        tag
        for p in (presets or PRESETS.values())
        for tag in (
            p.think_open,
            p.think_close,
            p.search_open,
            p.search_close,
            p.result_open,
            p.result_close,
            p.answer_open,
            p.answer_close,
            p.call_open,
            p.call_close,
            p.response_open,
            p.response_close,
        )
        if len(tag) > 1
    }
    return sorted(tags, key=lambda t: (-len(t), t))


def neutralise(text: str, presets: Sequence[FormatPreset] | None = None) -> tuple[str, int]:
    r"""``text`` with every control tag of ``presets`` (default: every preset) made plain text, and how
    many there were.

    >>> neutralise("the result said <information>Doc 1 and \\boxed{x}")
    ('the result said ‹information›Doc 1 and ⧵boxed{x}', 2)
    """
    pattern = re.compile("|".join(re.escape(t) for t in control_tags(presets)))
    count = 0

    def swap(m: re.Match) -> str:
        nonlocal count
        count += 1
        return m.group(0).translate(LOOKALIKES)

    return pattern.sub(swap, text), count


FORMAT = (
    "search_r1"  # the embedded default of every `format` field (params.yaml's top-level format); the paper: autocoa
)


def get_format(name: str) -> FormatPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown format preset {name!r}; known: {sorted(PRESETS)}") from None
