"""``chat``: a teacher behind an OpenAI-compatible ``/v1/chat/completions`` API (DeepSeek, vLLM with a
reasoning parser, hosted models), converted turn by turn into the student's format preset.

Two ways to act (``tools``):
  ``native``  the enabled tools (``Request.tools``, from ``search.tools``) are declared in ``tools``: search as
              function ``tool_name`` with one string parameter ``tool_arg``, every other tool with its own
              JSON schema (``coa.tools.Tool.schema``); the model calls them via ``tool_calls``; the result goes
              back as a ``role: tool`` message carrying the call's ``tool_call_id`` and the result's plain text
              (``result_text``: no student-format markup, so a teacher quoting it quotes no tag);
  ``tags``    the model writes the format's tags in its content (search in its own tags, other tools in the
              preset's generic call form); requests stop at the call-close tags; the result goes back as a
              user message holding the observation text.

Each answer becomes text in the format preset, so stored trajectories have one shape whoever wrote them:
the reasoning (``reasoning_content`` or ``reasoning``, message or stream delta) and any prose → the
model's reasoning (inside the preset's think tags), a tool call → the preset's search call (so the agent
loop finds the query and runs the real search itself: observations are exactly what the search environment
produced), a call of another enabled tool → the preset's generic call (the loop's toolbox checks its
arguments and runs it), the final content → the preset's answer (``extract_answer``).

Teacher text is data, not markup: a control tag of any preset inside the teacher's free text (reasoning,
prose, the answer, a query) is made plain text (``coa.formats.neutralise``) before it joins the trajectory,
and counted (``stats()["neutralised_tags"]``); in ``tags`` mode the content is format text by contract
and only the separate reasoning is neutralised. A trajectory whose text still does not parse under the
preset when the teacher answers ends with finish reason ``malformed``.

The message list is rebuilt from the episode's segments on every request: each turn ending in an
observation is replayed as an assistant turn plus its tool result. Turns this engine wrote are replayed
exactly as the API returned them (tool-call ids, reasoning: DeepSeek's thinking mode answers 400 unless an
assistant turn's ``reasoning_content`` comes back; ``send_reasoning``), kept per episode in
``Episode.engine_state``; turns of a prefix from an earlier trajectory (branching) are rebuilt from their
text. A continuation forced to search (a ``force`` branch: the step ends in the search-open tag) is asked
with ``tool_choice`` naming the tool (``tags``: the open tag is prefilled as the assistant's message);
one forbidden to search (``forbid``) is offered no tools. The last request's messages and reply are kept
as the row's ``transcript`` (JSON) for audit.

Unusable output ends only its trajectory, with a named finish reason: ``bad_tool_call`` (arguments that are
not a JSON object, or a search call without its string parameter), ``unknown_tool`` (a function that is not
enabled), ``empty_answer`` (no
content, no call), ``malformed`` (see above); a reply that is no chat completion at all (HTML, invalid
JSON, no ``choices``, a null message, negative usage) is ``BadResponse`` (``bad_response``, see the pool).
A turn without reasoning is allowed (OpenAI's API returns none) and counted (``stats()``). Faults, several
endpoints and the key: ``coa.engines.pool``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Sequence

from coa.agent import Episode, Generation, step_text
from coa.engines import BadResponse, Request, register
from coa.engines.completions import restore_search_close
from coa.engines.pool import UNREADABLE, Endpoints, first_choice, read_reply, usage_counts
from coa.formats import AUTOCOA, FormatPreset, neutralise, result_text
from coa.tools import tool_class

REASONING_KEYS = ("reasoning_content", "reasoning")  # DeepSeek and older vLLM | vLLM since early 2026
FINAL_LINE = re.compile(r"^[\s*_#>]*final answer[\s*_]*[:：][\s*_]*(.+?)[\s*_.]*$", re.I | re.M)
TOOLS, TOOL_CHOICES = ("native", "tags"), ("auto", "required", "first")


def extract_answer(content: str, fmt: FormatPreset, pattern: str = "") -> tuple[str, int] | None:
    """(answer, where its markup starts) in a chat reply: the format's answer markup, else the last
    ``\\boxed{…}``, else a closing ``Final answer: …`` line; ``pattern`` (a regex with one group) overrides."""
    if pattern:
        found = list(re.finditer(pattern, content, re.S))
        return (found[-1].group(1).strip(), found[-1].start()) if found else None
    for preset in (fmt, AUTOCOA):
        answers = [s for s in preset.parse(content).steps if s.kind == "answer"]
        if answers:
            return answers[-1].content, content.rfind(answers[-1].text)
    found = list(FINAL_LINE.finditer(content))
    return (found[-1].group(1).strip(), found[-1].start()) if found else None


def other_tools(names: Sequence[str]) -> list[str]:
    return [n for n in names if n != "search"]


def reasoning_of(obj: Any) -> tuple[str | None, str]:
    """(field name, text) of the reasoning in a message or stream delta, whichever name the server uses."""
    extra = getattr(obj, "model_extra", None) or {}
    for key in REASONING_KEYS:
        value = getattr(obj, key, None) or extra.get(key)
        if isinstance(value, str) and value:
            return key, value
    return None, ""


@dataclass
class Reply:
    """One chat answer, assembled from a message or from stream deltas."""

    content: str = ""
    reasoning: str = ""
    reasoning_key: str | None = None
    tool_calls: list = field(default_factory=list)  # {"id", "name", "arguments"} in order
    finish_reason: str = "stop"
    usage: Any = None

    def message(self, send_reasoning: bool, calls: list | None = None) -> dict:
        """The assistant message as it is replayed in later requests."""
        calls = self.tool_calls if calls is None else calls
        msg = {"role": "assistant", "content": self.content or (None if calls else "")}
        if calls:
            msg["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in calls
            ]
        if send_reasoning and self.reasoning:
            msg[self.reasoning_key or REASONING_KEYS[0]] = self.reasoning
        return msg


def inside_think(text: str, fmt: FormatPreset) -> bool:
    return text.rfind(fmt.think_open) > text.rfind(fmt.think_close)


@register("chat")
class ChatEngine:
    def __init__(
        self,
        base_url: str | list,
        model: str,
        tokenizer=None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 300.0,
        retries: int = 4,
        temperature: float = 0.7,
        top_p: float = 1.0,
        tools: str = "native",
        tool_name: str = "search",
        tool_arg: str = "query",
        tool_choice: str = "auto",
        send_reasoning: bool = True,
        stream: bool = False,
        answer_pattern: str = "",
        strict_tools: bool = True,
        backoff_s: float = 30.0,
        http_client=None,
    ):
        if tools not in TOOLS:
            raise ValueError(f"teacher.tools must be one of {TOOLS}, got {tools!r}")
        if tool_choice not in TOOL_CHOICES:
            raise ValueError(f"teacher.tool_choice must be one of {TOOL_CHOICES}, got {tool_choice!r}")
        self.name, self.tokenizer = model, tokenizer
        self.sampling = {"temperature": temperature, "top_p": top_p}
        self.native, self.tool_name, self.tool_arg, self.tool_choice = (
            tools == "native",
            tool_name,
            tool_arg,
            tool_choice,
        )
        self.send_reasoning, self.stream, self.answer_pattern = send_reasoning, stream, answer_pattern
        self.strict_tools = strict_tools
        self.pool = Endpoints(base_url, model, api_key_env, timeout_s, retries, backoff_s, http_client)
        self.base_url = self.pool.url
        self.vllm = False
        self.turns = self.turns_without_reasoning = self.neutralised = 0

    async def check(self) -> None:
        """Before any work: the key is accepted and the model is served (``EngineFatal`` otherwise)."""
        self.vllm = await self.pool.check() == "vllm"

    # ---- the request ------------------------------------------------------------------
    def tool_spec(self) -> dict:
        return {
            "type": "function",
            "function": {
                "name": self.tool_name,
                "description": "Search a collection of Wikipedia passages; returns the best matches.",
                "parameters": {
                    "type": "object",
                    "properties": {self.tool_arg: {"type": "string", "description": "the search query"}},
                    "required": [self.tool_arg],
                    "additionalProperties": False,
                },
                # strict: the server enforces the schema (vLLM 0.32 constrains a forced call to it only then; without
                # it the 135M model wrote {"query": {...}} in 7 of 8 forced calls)
                **({"strict": True} if self.strict_tools else {}),
            },
        }

    def tool_specs(self, names: Sequence[str]) -> list[dict]:
        """The declarations of the enabled tools: search as ``tool_spec``, every other its own schema (strict
        where the server can enforce it: OpenAI's strict mode needs every property required)."""
        specs = [self.tool_spec()] if "search" in names else []
        for name in other_tools(names):
            spec = tool_class(name).schema()
            parameters = spec["function"]["parameters"]
            if self.strict_tools and set(parameters.get("required", [])) == set(parameters.get("properties", {})):
                spec["function"]["strict"] = True
            specs.append(spec)
        return specs

    def instruction(self, fmt: FormatPreset, names: Sequence[str] = ("search",)) -> str:
        """The system message: how to search (and call the other enabled tools) and the form of the final
        answer (what ``extract_answer`` reads)."""
        answer = fmt.answer_text("YOUR ANSWER")
        others = other_tools(names)
        listed = ", ".join(f"`{n}`" for n in others)
        if self.native:
            how = (
                f"Use the `{self.tool_name}` tool to search a collection of Wikipedia passages whenever you need "
                "a fact; you can search several times, one query per call."
            )
            if others:
                how += f" You can also call {listed}, as their descriptions say, one call at a time."
        else:
            where = " inside your reasoning" if fmt.answer_after_think else ""
            how = (
                f"Think step by step inside {fmt.think_open} {fmt.think_close}. To search a collection of "
                f"Wikipedia passages write {fmt.search_call('your query')}{where}; the results come back inside "
                f"{fmt.result_open} {fmt.result_close}. You can search several times."
            )
            if others:
                how += (
                    f" To call another tool ({listed}) write {fmt.tool_call('NAME', {'ARGUMENT': 'VALUE'})}; its "
                    f"result comes back inside {fmt.response_open} {fmt.response_close}."
                )
        return (
            f"Answer the user's question. {how} When you are done, give the final answer as {answer} "
            "(a short phrase, no explanation)."
        )

    def messages(self, ep: Episode, fmt: FormatPreset, names: Sequence[str] = ("search",)) -> list[dict]:
        """The conversation so far, rebuilt from the episode's segments (``names``: the enabled tools)."""
        turns: dict = ep.engine_state.setdefault("turns", {})
        question = ep.question.get("question") or ep.prompt
        messages = [
            {"role": "system", "content": self.instruction(fmt, names)},
            {"role": "user", "content": question},
        ]
        text = ""  # the turn's text so far: replayed as an assistant turn when an observation answers it
        for s in ep.segments:
            if s["kind"] != "observation":
                text += s["text"]
                continue
            i = len([m for m in messages if m["role"] == "assistant"])
            result = result_text(s["text"], fmt) if self.native else s["text"].strip()  # tags: the format's own
            if self.native:
                msg = turns.get(i) or self._rebuilt_call(text, s, i, fmt)
                messages += [msg, {"role": "tool", "tool_call_id": msg["tool_calls"][0]["id"], "content": result}]
            else:
                messages += [
                    turns.get(i) or {"role": "assistant", "content": text},
                    {"role": "user", "content": result},
                ]
            text = ""
        return messages

    def _rebuilt_call(self, text: str, observation: dict, i: int, fmt: FormatPreset) -> dict:
        """A prefix turn written earlier (as format text): its reasoning and call (the observation segment's
        ``tool`` and ``args``; search's from its ``query``) as an API tool call."""
        reasoning = "".join(st.text for st in fmt.parse(text).steps if st.kind == "text").strip()
        name = observation.get("tool") or "search"
        if name == "search":
            call = {
                "id": f"call_{i}",
                "name": self.tool_name,
                "arguments": json.dumps({self.tool_arg: observation.get("query") or ""}),
            }
        else:
            call = {"id": f"call_{i}", "name": name, "arguments": observation.get("args") or "{}"}
        return Reply(reasoning=reasoning).message(self.send_reasoning, [call])

    async def generate(self, request: Request) -> Generation:
        ep, fmt = request.episode, request.fmt
        messages, open_text = self.messages(ep, fmt, request.tools), step_text(ep.segments)
        forced = ep.tools != "forbid" and bool(open_text) and open_text.endswith(fmt.search_open + fmt.inner_pad)
        body: dict = {"model": self.name, "messages": messages, "max_tokens": request.max_tokens, **self.sampling}
        if request.seed is not None:
            body["seed"] = request.seed
        extra: dict = {}
        specs = self.tool_specs(request.tools) if self.native and ep.tools != "forbid" else []  # forbid: none
        if specs:
            body["tools"] = specs
            first = not any(s["kind"] == "observation" for s in ep.segments)  # no search yet (prefix included)
            if forced:
                body["tool_choice"] = {"type": "function", "function": {"name": self.tool_name}}
            elif self.tool_choice == "required" or (self.tool_choice == "first" and first):
                body["tool_choice"] = "required"
        elif not self.native:
            body["stop"] = fmt.call_closes(request.tools)
            if open_text:  # continue the prefilled assistant turn (vLLM: continue_final_message; DeepSeek: prefix)
                body["messages"] = messages + [
                    {"role": "assistant", "content": open_text, **({} if self.vllm else {"prefix": True})}
                ]
                if self.vllm:
                    extra = {"continue_final_message": True, "add_generation_prompt": False}
        if extra:
            body["extra_body"] = extra
        reply = await self.pool.call(lambda client: self._send(client, body))
        gen = self._convert(reply, request, forced, len([m for m in messages if m["role"] == "assistant"]))
        ep.engine_state["transcript"] = json.dumps(
            {
                "tools": body.get("tools"),
                "messages": body["messages"],
                "reply": {**reply.message(True), "finish_reason": reply.finish_reason},
            },
            ensure_ascii=False,
        )
        return gen

    async def _send(self, client, body: dict) -> Reply:
        """One request; a reply that is no chat completion is ``BadResponse`` (the pool fails over)."""
        if not self.stream:
            r = await read_reply(client.chat.completions.create(**body))
            choice = first_choice(r)
            message = getattr(choice, "message", None)
            if message is None:
                raise BadResponse("the reply's message is null")
            content = message.content
            if content is not None and not isinstance(content, str):
                raise BadResponse(f"the reply's content is not text: {content!r:.80}")
            key, reasoning = reasoning_of(message)
            calls = [self._call(c) for c in message.tool_calls or []]
            usage_counts(r)
            return Reply(content or "", reasoning, key, calls, choice.finish_reason or "stop", r.usage)
        stream = await read_reply(
            client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
        )
        reply, parts, thoughts, calls, chunks = Reply(), [], [], {}, 0
        try:
            async for chunk in stream:  # deltas: content, reasoning and tool calls arrive in pieces
                chunks += 1
                reply.usage = chunk.usage or reply.usage
                for choice in chunk.choices or []:
                    delta = choice.delta
                    if delta is None:
                        raise BadResponse("a stream chunk's delta is null")
                    parts.append(delta.content or "")
                    key, text = reasoning_of(delta)
                    if text:
                        thoughts.append(text)
                        reply.reasoning_key = key
                    for c in delta.tool_calls or []:
                        call = calls.setdefault(c.index, {"id": None, "name": "", "arguments": ""})
                        call["id"] = c.id or call["id"]
                        if c.function is not None:
                            call["name"] += c.function.name or ""
                            call["arguments"] += c.function.arguments or ""
                    reply.finish_reason = choice.finish_reason or reply.finish_reason
        except UNREADABLE as e:  # a chunk that is not the API's JSON
            raise BadResponse(f"the stream is not chat completion chunks ({type(e).__name__}: {e})") from None
        if not chunks:  # e.g. an HTML page: no server-sent event in it
            raise BadResponse("the stream carried no chat completion chunk")
        usage_counts(reply)
        reply.content, reply.reasoning = "".join(parts), "".join(thoughts)
        reply.tool_calls = [calls[i] for i in sorted(calls)]
        return reply

    @staticmethod
    def _call(c: Any) -> dict:
        function = getattr(c, "function", None)
        if function is None or not isinstance(function.name, str):
            raise BadResponse("a tool call in the reply has no function name")
        return {"id": c.id, "name": function.name, "arguments": function.arguments or ""}

    # ---- the answer → the format preset --------------------------------------------------
    def _generic_call(self, call: dict, names: Sequence[str], fmt: FormatPreset) -> tuple[str | None, str]:
        """(the call in the preset's generic form, "") for a call of an enabled tool besides search, else
        (None, the finish reason). Its arguments are checked against the tool's schema by the loop's toolbox,
        which answers a wrong one with a message the teacher can act on."""
        if call["name"] not in other_tools(names):
            return None, "unknown_tool"
        try:
            args = json.loads(call["arguments"] or "{}")
        except json.JSONDecodeError:
            return None, "bad_tool_call"
        if not isinstance(args, dict):
            return None, "bad_tool_call"
        return fmt.tool_call(call["name"], self._plain_values(args)), ""

    def _plain_values(self, value: Any) -> Any:
        """Teacher arguments as data: the control tags in every string neutralised (code keeps its ``<``)."""
        if isinstance(value, str):
            return self._plain(value)
        if isinstance(value, dict):
            return {k: self._plain_values(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._plain_values(v) for v in value]
        return value

    def _query(self, call: dict) -> tuple[str | None, str]:
        """(query, "") for a usable search call, else (None, the finish reason)."""
        if call["name"] != self.tool_name:
            return None, "unknown_tool"
        try:
            args = json.loads(call["arguments"] or "{}")
        except json.JSONDecodeError:
            return None, "bad_tool_call"
        query = args.get(self.tool_arg) if isinstance(args, dict) else None
        if not isinstance(query, str) or not query.strip():
            return None, "bad_tool_call"
        return self._plain(" ".join(query.split())), ""

    def _plain(self, text: str) -> str:
        """Teacher free text as data: every preset's control tags neutralised (and counted)."""
        text, n = neutralise(text)
        self.neutralised += n
        return text

    def _convert(self, reply: Reply, request: Request, forced: bool, turn: int) -> Generation:
        ep, fmt = request.episode, request.fmt
        self.turns += 1
        self.turns_without_reasoning += not reply.reasoning
        usage = reply.usage or SimpleNamespace(prompt_tokens=0, completion_tokens=0)
        length = reply.finish_reason == "length"
        reasoning = self._plain(reply.reasoning.strip())
        lead = "" if inside_think(ep.completion, fmt) else fmt.think_open
        text, error, eos = "", "", False
        if not self.native:
            text = self._tags_text(reply, request, lead, turn, reasoning)
            eos = not text.endswith(tuple(fmt.call_closes(request.tools)))
            if not reply.content.strip() and not reply.reasoning.strip() and not length:
                error = "empty_answer"
        elif reply.tool_calls:
            thought = "\n".join(x for x in (reasoning, self._plain(reply.content.strip())) if x)
            call = dict(reply.tool_calls[0], id=reply.tool_calls[0]["id"] or f"call_{turn}")
            if forced or (call["name"] == self.tool_name and "search" in request.tools):
                query, error = self._query(call)
                action = None if query is None else fmt.search_call(query)
            else:
                action, error = self._generic_call(call, request.tools, fmt)
            if action is None:
                text = lead + thought if thought else ""
            elif forced:  # the prefill holds the open tag: the reasoning cannot go before it (kept in the transcript)
                text = action[len(fmt.search_open + fmt.inner_pad) :]
            elif fmt.answer_after_think:  # autocoa: calls live inside <think>
                text = lead + (thought + "\n" if thought else "") + action
            else:  # search_r1: reasoning closes before the call
                text = (lead + thought + fmt.think_close + "\n" if thought or not lead else "") + action
            # only the executed call is replayed: APIs require a tool result for every call id sent back
            ep.engine_state.setdefault("turns", {})[turn] = reply.message(self.send_reasoning, [call])
        else:
            eos = not length
            found = extract_answer(reply.content, fmt, self.answer_pattern)
            if found is None:
                if not reply.content.strip() and not length:
                    error = "empty_answer"
                thought = "\n".join(x for x in (reasoning, self._plain(reply.content.strip())) if x)
                text = lead + thought if thought else ""
            else:
                answer, at = found
                thought = "\n".join(x for x in (reasoning, self._plain(reply.content[:at].strip())) if x)
                gap = "\n\n" if fmt.answer_after_think else "\n"
                answer = fmt.answer_text(self._plain(answer))
                text = (lead + thought if thought else lead) + fmt.think_close + gap + answer
        if eos and not error and not length:
            parsed = fmt.parse(ep.completion + text)
            if parsed.answer is not None and not parsed.well_formed:  # answered, but the text does not parse
                error = "malformed"
        return Generation(
            text,
            "length" if length else "stop",
            eos=eos,
            n_tokens=usage.completion_tokens or 0,
            prompt_tokens=usage.prompt_tokens or 0,
            tool_calls=reply.tool_calls or None,
            error=error,
        )

    def _tags_text(self, reply: Reply, request: Request, lead: str, turn: int, reasoning: str) -> str:
        """``tags``: the content is format text already; separate reasoning (``reasoning``: neutralised)
        goes before it, in think tags (not after a prefilled open tag: it is then only in the transcript)."""
        ep, fmt = request.episode, request.fmt
        open_text = step_text(ep.segments)
        text = ""
        if reasoning and not open_text:
            text = lead + reasoning + ("\n" if fmt.answer_after_think else fmt.think_close + "\n")
        text += reply.content
        if reply.finish_reason == "stop":
            text = restore_search_close(text, request)
        closes = tuple(fmt.call_closes(request.tools))
        if not text.endswith(closes) and fmt.parse(ep.completion + text).answer is None:
            found = extract_answer(reply.content, fmt, self.answer_pattern)
            if found is not None:
                close = fmt.think_close if inside_think(ep.completion + text, fmt) else ""
                text += close + ("\n\n" if fmt.answer_after_think else "\n") + fmt.answer_text(found[0])
        if text.endswith(closes):  # replayed whole: the prefill, and the close tag the stop removed
            content = open_text + reply.content
            closing = next(c for c in closes if text.endswith(c))
            ep.engine_state.setdefault("turns", {})[turn] = dict(
                reply.message(self.send_reasoning),
                content=content if content.endswith(closing) else content + closing,
            )
        return text

    def stats(self) -> dict:
        return {
            "endpoints": self.pool.stats(),
            "chat_turns": self.turns,
            "chat_turns_without_reasoning": self.turns_without_reasoning,
            "neutralised_tags": self.neutralised,
        }

    async def close(self) -> None:
        await self.pool.close()
