"""``completions``: any OpenAI-compatible server driven by raw-prompt ``/v1/completions``.

With a vLLM server (recognised by ``/v1/models``' ``owned_by``) the prompt is sent as token ids
(``Request.ids``) and the generated ids come back (``return_token_ids``), so the served model continues
from exactly the ids SFT trains on and the episode keeps exactly the ids it generated. Other servers get
the episode's text and return text, which the loop encodes; vLLM-only request keys are never sent to
them (a hosted API answers 400 to unknown keys).

Faults, fail-over over several endpoints (``base_url`` may list several) and their stats:
``coa.engines.pool`` (transient errors retried, then ``EngineUnavailable``; key/model errors
``EngineFatal``, found by ``check()`` before any work; other 4xx ``RequestRejected``; a reply that is no
completion, e.g. HTML or JSON without ``choices``, ``BadResponse``). The API key comes from the
environment variable named by ``api_key_env``; it is never logged or written to outputs.
"""

from __future__ import annotations

from coa.agent import Generation, call_body, search_query, step_text
from coa.engines import BadResponse, Request, register
from coa.engines.pool import Endpoints, first_choice, read_reply, usage_counts


def restore_search_close(text: str, request: Request) -> str:
    """OpenAI-style servers drop the stop string: put the close tag back where a search call was open (or a
    generic tool call, when its close tag is a stop: tools besides search are enabled)."""
    fmt = request.fmt
    if (
        fmt is not None
        and fmt.search_close in request.stop
        and not text.endswith(fmt.search_close)
        and search_query(step_text(request.episode.segments) + text + fmt.search_close, fmt) is not None
    ):
        return text + fmt.search_close
    if (
        fmt is not None
        and fmt.call_close
        and fmt.call_close in request.stop
        and not text.endswith(fmt.call_close)
        and call_body(step_text(request.episode.segments) + text + fmt.call_close, fmt) is not None
    ):
        return text + fmt.call_close
    return text


@register("completions")
class CompletionsEngine:
    def __init__(
        self,
        base_url: str | list,
        model: str,
        tokenizer,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 300.0,
        retries: int = 4,
        temperature: float = 0.7,
        top_p: float = 1.0,
        token_prompts: bool | None = None,
        backoff_s: float = 30.0,
        http_client=None,
    ):
        """``token_prompts``: send ids and read ids back (None: when the server is vLLM)."""
        self.name, self.tokenizer = model, tokenizer
        self.sampling = {"temperature": temperature, "top_p": top_p}
        self.token_prompts = token_prompts
        self.pool = Endpoints(base_url, model, api_key_env, timeout_s, retries, backoff_s, http_client)
        self.base_url = self.pool.url
        self.vllm = False

    async def check(self) -> None:
        """Before any work: the key is accepted and the model is served (``EngineFatal`` otherwise).
        Servers without ``/models`` are let through (their first request tells)."""
        owner = await self.pool.check()
        self.vllm = owner == "vllm" if owner is not None else bool(self.token_prompts)
        if self.token_prompts is None:
            self.token_prompts = self.vllm

    async def generate(self, request: Request) -> Generation:
        params = {**self.sampling, **({"seed": request.seed} if request.seed is not None else {})}
        extra = (
            {"include_stop_str_in_output": True, "add_special_tokens": False, "return_token_ids": True}
            if self.vllm
            else {}
        )
        prompt = request.ids if self.token_prompts else request.episode.text

        async def send(client):
            r = await read_reply(
                client.completions.create(
                    model=self.name,
                    prompt=prompt,
                    max_tokens=request.max_tokens,
                    stop=request.stop or None,
                    extra_body=extra or None,
                    **params,
                )
            )
            if not isinstance(getattr(first_choice(r), "text", None), str):
                raise BadResponse("the reply's first choice has no text")
            usage_counts(r)
            return r

        return self._generation(await self.pool.call(send), request)

    def stats(self) -> dict:
        return {"endpoints": self.pool.stats()}

    def _generation(self, r, request: Request) -> Generation:
        choice = r.choices[0]
        usage = r.usage
        n_tokens = usage.completion_tokens if usage else 0
        ids = getattr(choice, "token_ids", None) or (choice.model_extra or {}).get("token_ids")
        stopped = choice.finish_reason == "stop"
        if ids is not None:  # vLLM: stop_reason is the stop string that ended it, None for EOS
            eos = stopped and (choice.model_extra or {}).get("stop_reason") is None
            ids = list(ids)
            if ids and ids[-1] == self.tokenizer.eos_token_id:
                ids = ids[:-1]
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
            return Generation(
                text,
                "stop" if stopped else "length",
                token_ids=ids,
                eos=eos,
                n_tokens=n_tokens,
                prompt_tokens=usage.prompt_tokens if usage else 0,
            )
        text = restore_search_close(choice.text, request) if stopped else choice.text
        eos = stopped and not text.endswith(tuple(request.stop or ["\0"]))
        return Generation(
            text,
            "stop" if stopped else "length",
            eos=eos,
            n_tokens=n_tokens,
            prompt_tokens=usage.prompt_tokens if usage else 0,
        )

    async def close(self) -> None:
        await self.pool.close()
