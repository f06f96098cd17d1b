"""``completions``: any OpenAI-compatible server driven by raw-prompt ``/v1/completions``.

With a vLLM server (recognised by ``/v1/models``' ``owned_by``) the prompt is sent as token ids
(``Request.ids``) and the generated ids come back (``return_token_ids``), so the served model continues
from exactly the ids SFT trains on and the episode keeps exactly the ids it generated. Other servers get
the episode's text and return text, which the loop encodes; vLLM-only request keys are never sent to
them (a hosted API answers 400 to unknown keys).

Faults: timeouts, connection errors, 429 and 5xx are retried by the ``openai`` client with exponential
backoff and jitter (``retries`` times); if they persist, ``EngineUnavailable`` stops the run (finished
rows are kept; a re-run resumes). 401/403 (key, permission) and 404 (unknown model) are
``EngineFatal``: ``check()`` finds them before any work, and a request that meets one stops the run
without writing its row. Other 4xx answers (e.g. a prompt longer than the context) fail only their own
trajectory (``RequestRejected``), unless every one of the first requests is rejected: that is a
configuration error, and fatal.

The API key comes from the environment variable named by ``api_key_env`` (``EMPTY`` when unset, which
is what local vLLM expects); it is never logged or written to outputs.
"""
from __future__ import annotations

import os

import openai

from coa.agent import Generation, search_query, step_text
from coa.engines import EngineFatal, EngineUnavailable, Request, RequestRejected, register

ALL_REJECTED_LIMIT = 8  # this many rejections and no success: the configuration is wrong, not the requests


@register("completions")
class CompletionsEngine:
    def __init__(self, base_url: str, model: str, tokenizer, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 300.0, retries: int = 4, temperature: float = 0.7, top_p: float = 1.0,
                 token_prompts: bool | None = None, http_client=None):
        """``token_prompts``: send ids and read ids back (None: when the server is vLLM)."""
        self.base_url, self.name, self.tokenizer = base_url, model, tokenizer
        self.api_key_env, self.retries = api_key_env, retries
        self.sampling = {"temperature": temperature, "top_p": top_p}
        self.token_prompts = token_prompts
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY",
                                         timeout=timeout_s, max_retries=retries, http_client=http_client)
        self.vllm = False
        self.answered = self.rejected = 0

    async def check(self) -> None:
        """Before any work: the key is accepted and the model is served (``EngineFatal`` otherwise).
        Servers without ``/models`` are let through (their first request tells)."""
        try:
            page = await self.client.models.list()
        except openai.NotFoundError:
            self.vllm = bool(self.token_prompts)
            return
        except openai.APIStatusError as e:
            raise self._fatal_or_none(e) or EngineUnavailable(f"{self.base_url}/models answered {e.status_code}") from None
        except (openai.APIConnectionError, openai.APITimeoutError) as e:
            raise EngineUnavailable(f"engine {self.base_url} unavailable after {self.retries} retries: "
                                    f"{type(e).__name__}: {e}") from None
        served = {m.id: getattr(m, "owned_by", "") for m in page.data}
        if served and self.name not in served:
            raise EngineFatal(f"model {self.name!r} is not served at {self.base_url} (404: unknown model); "
                              f"it serves: {', '.join(sorted(served))}")
        self.vllm = served.get(self.name) == "vllm"
        if self.token_prompts is None:
            self.token_prompts = self.vllm

    def _fatal_or_none(self, e: openai.APIStatusError) -> EngineFatal | None:
        if e.status_code in (401, 403):
            return EngineFatal(f"{self.base_url} refused the credentials ({e.status_code}): check the key in "
                               f"${self.api_key_env} and its permissions")
        if e.status_code == 404:
            return EngineFatal(f"{self.base_url}: model {self.name!r} not found (404): {e.message}")
        return None

    async def generate(self, request: Request) -> Generation:
        params = {**self.sampling, **({"seed": request.seed} if request.seed is not None else {})}
        extra = ({"include_stop_str_in_output": True, "add_special_tokens": False, "return_token_ids": True}
                 if self.vllm else {})
        prompt = request.ids if self.token_prompts else request.episode.text
        try:
            r = await self.client.completions.create(model=self.name, prompt=prompt, max_tokens=request.max_tokens,
                                                     stop=request.stop or None, extra_body=extra or None, **params)
        except (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                openai.InternalServerError) as e:
            raise EngineUnavailable(f"engine {self.base_url} unavailable after {self.retries} retries: "
                                    f"{type(e).__name__}: {e}") from None
        except openai.APIStatusError as e:
            fatal = self._fatal_or_none(e)
            if fatal:
                raise fatal from None
            self.rejected += 1
            if not self.answered and self.rejected >= ALL_REJECTED_LIMIT:
                raise EngineFatal(f"{self.base_url} rejected each of the first {self.rejected} requests "
                                  f"({e.status_code}: {e.message})") from None
            raise RequestRejected(f"engine rejected a request ({e.status_code}): {e.message}") from None
        self.answered += 1
        return self._generation(r, request)

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
            return Generation(text, "stop" if stopped else "length", token_ids=ids, eos=eos, n_tokens=n_tokens,
                              prompt_tokens=usage.prompt_tokens if usage else 0)
        text, fmt = choice.text, request.fmt
        # OpenAI-style servers drop the stop string: put the close tag back where a search call was open
        if stopped and fmt is not None and fmt.search_close in request.stop and not text.endswith(fmt.search_close) \
                and search_query(step_text(request.episode.segments) + text + fmt.search_close, fmt) is not None:
            text += fmt.search_close
        eos = stopped and not text.endswith(tuple(request.stop or ["\0"]))
        return Generation(text, "stop" if stopped else "length", eos=eos, n_tokens=n_tokens,
                          prompt_tokens=usage.prompt_tokens if usage else 0)

    async def close(self) -> None:
        await self.client.close()

