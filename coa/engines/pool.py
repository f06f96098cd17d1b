"""The OpenAI-compatible endpoints of one teacher: error mapping, load spreading, fail-over, stats.

Both API engines (``completions``, ``chat``) send every request through ``Endpoints.call``; one URL or
several serving the same model are handled alike:

* each request goes to the endpoint with the fewest requests in flight (ties: the first listed);
* on one endpoint the ``openai`` client retries timeouts, connection errors, 429 and 5xx ``retries``
  times with exponential backoff (it honours a 429's ``Retry-After`` of up to 60 s); if they persist,
  that endpoint is taken out for ``backoff_s`` (or the ``Retry-After``, if longer) and the request is
  tried on another one. An endpoint in back-off is still tried when no other is left for the request;
* when every endpoint failed for a request, ``EngineUnavailable`` stops the run (finished rows are kept;
  a re-run resumes);
* 401/403 (key, permission) and 404 (unknown model) are ``EngineFatal`` (``check()`` finds them before
  any work); another 4xx is tried on the other endpoints too (one that refuses what another serves is
  then left out for ``backoff_s``); refused by every one, it fails only its own trajectory
  (``RequestRejected``), unless every one of the first requests is rejected: a configuration error, fatal;
* a reply that is not a usable completion (HTML with status 200, invalid JSON, no ``choices``, a null
  message, negative usage; ``first_choice``, ``usage_counts``) counts as that endpoint failing: it is left
  out for ``backoff_s`` and the request tried on another. Unusable from every endpoint, the request fails
  its trajectory (``BadResponse``, finish reason ``bad_response``), or, while the teacher has not yet
  answered any request usably, stops the run (``EngineUnavailable``): a teacher whose first answer is
  garbage is misconfigured, and nothing more is sent to it.

Per-endpoint stats (requests, tokens, errors, latency percentiles) go into the synthesis summary. The API
key comes from the environment variable named by ``api_key_env`` (``EMPTY`` when unset, which local vLLM
expects); it is never logged or written to outputs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import openai

from coa.engines import BadResponse, EngineFatal, EngineUnavailable, RequestRejected

ALL_REJECTED_LIMIT = 8  # this many rejections and no success: the configuration is wrong, not the requests
CHECK_TIMEOUT_S = 30.0  # /models answers at once when the server is up: a hanging one is found in minutes, not hours
TRANSIENT = (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError, openai.InternalServerError)
UNREADABLE = (ValueError, TypeError, AttributeError)  # what the openai client raises on a body that is not its JSON


def as_urls(base_url: str | list | tuple) -> list[str]:
    """``teacher.base_url`` as a list: one URL, a comma-separated string or a list of URLs."""
    items = base_url.split(",") if isinstance(base_url, str) else list(base_url)
    return [str(u).strip() for u in items if str(u).strip()]


def snippet(text: Any, n: int = 80) -> str:
    """The start of an unexpected reply, on one line."""
    flat = " ".join(str(text).split())
    return repr(flat[:n] + ("…" if len(flat) > n else ""))


async def read_reply(create: Awaitable[Any]) -> Any:
    """Await an openai ``create`` call; a body the client cannot read as its JSON is ``BadResponse``
    (HTTP errors, timeouts and refused connections pass through for ``Endpoints.call``)."""
    try:
        reply = await create
    except (openai.APIStatusError, openai.APIConnectionError):
        raise
    except openai.APIError as e:  # e.g. an error event inside a stream
        raise BadResponse(f"the reply is an API error without a status: {e}") from None
    except UNREADABLE as e:
        raise BadResponse(f"the reply is not valid JSON ({type(e).__name__}: {e})") from None
    if isinstance(reply, (str, bytes)):  # the client hands back a body that is not JSON as text
        raise BadResponse(f"the reply is not JSON but text: {snippet(reply)}")
    return reply


def first_choice(reply: Any) -> Any:
    """The first choice of a completion, or ``BadResponse`` saying what is missing."""
    choices = getattr(reply, "choices", None)
    if not isinstance(choices, list) or not choices:
        extra = sorted(getattr(reply, "model_extra", None) or {})
        raise BadResponse("the reply has no choices" + (f" (its keys: {', '.join(extra)})" if extra else ""))
    if choices[0] is None:
        raise BadResponse("the reply's first choice is null")
    return choices[0]


def usage_counts(reply: Any) -> tuple[int, int]:
    """(prompt, completion) tokens a reply reports (0, 0 without ``usage``); counts that are not whole
    numbers >= 0 are ``BadResponse`` (a negative count would also keep every budget from being reached)."""
    usage = getattr(reply, "usage", None)
    if usage is None:
        return 0, 0
    counts = getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise BadResponse(
            f"the reply's usage is not two counts >= 0 (prompt_tokens={counts[0]!r}, completion_tokens={counts[1]!r})"
        )
    return counts


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Endpoint:
    url: str
    client: Any = field(repr=False)
    in_flight: int = 0
    down_until: float = 0.0  # time.monotonic() until which it is in back-off
    requests: int = 0
    errors: int = 0  # failed attempts of every kind (the three below, timeouts and connection errors)
    rejected: int = 0  # 4xx answers other than key / model errors
    bad_responses: int = 0  # replies that were no usable completion
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies: list = field(default_factory=list, repr=False)

    def stats(self) -> dict:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "rejected": self.rejected,
            "bad_responses": self.bad_responses,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            **{f"latency_p{q}_s": round(percentile(self.latencies, q / 100), 3) for q in (50, 90, 99)},
        }


def retry_after(e: Exception) -> float:
    response = getattr(e, "response", None)
    try:
        return float(response.headers.get("retry-after", 0)) if response is not None else 0.0
    except ValueError:  # an HTTP date: not worth parsing, the back-off applies
        return 0.0


class Endpoints:
    def __init__(
        self,
        base_url: str | list,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 300.0,
        retries: int = 4,
        backoff_s: float = 30.0,
        http_client=None,
    ):
        urls = as_urls(base_url)
        if not urls:
            raise ValueError("teacher.base_url: no URL given")
        self.model, self.api_key_env, self.retries, self.backoff_s = model, api_key_env, retries, backoff_s
        key = os.environ.get(api_key_env) or "EMPTY"
        self.endpoints = [
            Endpoint(
                u,
                openai.AsyncOpenAI(
                    base_url=u, api_key=key, timeout=timeout_s, max_retries=retries, http_client=http_client
                ),
            )
            for u in urls
        ]
        self.answered = self.rejected = 0

    @property
    def url(self) -> str:
        return ", ".join(e.url for e in self.endpoints)

    def fatal_or_none(self, e: openai.APIStatusError, url: str) -> EngineFatal | None:
        if e.status_code in (401, 403):
            return EngineFatal(
                f"{url} refused the credentials ({e.status_code}): check the key in "
                f"${self.api_key_env} and its permissions"
            )
        if e.status_code == 404:
            return EngineFatal(f"{url}: model {self.model!r} not found (404): {e.message}")
        return None

    async def check(self) -> str | None:
        """Before any work: every endpoint accepts the key and serves the model (``EngineFatal`` otherwise).
        Returns the model's ``owned_by`` ("vllm" for vLLM), None when no endpoint lists its models (their
        first request tells). An endpoint that does not answer is put in back-off; none answering is
        ``EngineUnavailable`` (each asked with a timeout of at most ``CHECK_TIMEOUT_S``)."""
        owners, unreachable = [], []
        for ep in self.endpoints:
            try:
                timeout = ep.client.timeout
                client = ep.client.with_options(
                    timeout=min(timeout, CHECK_TIMEOUT_S) if isinstance(timeout, (int, float)) else CHECK_TIMEOUT_S
                )
                page = await client.models.list()
                models = getattr(page, "data", None)
                if not isinstance(models, list) or not all(isinstance(getattr(m, "id", None), str) for m in models):
                    raise BadResponse(f"{ep.url}/models answered something that is not a model list")
            except openai.NotFoundError:
                continue
            except (BadResponse, *UNREADABLE) as e:  # HTML, invalid JSON, another API: not a usable server
                unreachable.append(
                    str(e)
                    if isinstance(e, BadResponse)
                    else f"{ep.url}/models answered something that is not JSON ({type(e).__name__})"
                )
                ep.down_until = time.monotonic() + self.backoff_s
                continue
            except openai.APIStatusError as e:
                fatal = self.fatal_or_none(e, ep.url)
                if fatal:
                    raise fatal from None
                unreachable.append(f"{ep.url}/models answered {e.status_code}")
                ep.down_until = time.monotonic() + self.backoff_s
                continue
            except (openai.APIConnectionError, openai.APITimeoutError) as e:
                unreachable.append(f"engine {ep.url} unavailable after {self.retries} retries: {type(e).__name__}: {e}")
                ep.down_until = time.monotonic() + self.backoff_s
                continue
            served = {m.id: getattr(m, "owned_by", "") for m in models}
            if served and self.model not in served:
                raise EngineFatal(
                    f"model {self.model!r} is not served at {ep.url} (404: unknown model); "
                    f"it serves: {', '.join(sorted(served))}"
                )
            owners.append(served.get(self.model))
        if len(unreachable) == len(self.endpoints):
            raise EngineUnavailable(f"teacher unavailable at start: {'; '.join(unreachable)}")
        return owners[0] if owners else None

    def _pick(self, tried: set[int]) -> Endpoint | None:
        """The least-loaded endpoint not yet tried for this request, preferring those not in back-off."""
        now = time.monotonic()
        left = [e for i, e in enumerate(self.endpoints) if i not in tried]
        up = [e for e in left if e.down_until <= now]
        if up:
            return min(up, key=lambda e: e.in_flight)
        return min(left, key=lambda e: e.down_until, default=None)

    async def call(self, send: Callable[[Any], Awaitable[Any]]) -> Any:
        """``send(client)`` on the best endpoint, failing over as described above; returns its result
        (whose ``usage``, if any, is counted). ``send`` raises ``BadResponse`` for a reply it cannot use."""
        tried: set[int] = set()
        failures: list[str] = []
        refused: list[tuple[Endpoint, openai.APIStatusError]] = []  # 4xx answers to this request
        unusable: list[str] = []
        while (ep := self._pick(tried)) is not None:
            tried.add(self.endpoints.index(ep))
            ep.in_flight += 1
            ep.requests += 1
            started = time.perf_counter()
            try:
                result = await send(ep.client)
            except TRANSIENT as e:
                ep.errors += 1
                ep.down_until = time.monotonic() + max(self.backoff_s, retry_after(e))
                failures.append(f"engine {ep.url} unavailable after {self.retries} retries: {type(e).__name__}: {e}")
                continue
            except BadResponse as e:
                ep.errors += 1
                ep.bad_responses += 1
                ep.down_until = time.monotonic() + self.backoff_s
                unusable.append(f"{ep.url}: {e}")
                continue
            except openai.APIStatusError as e:
                ep.errors += 1
                fatal = self.fatal_or_none(e, ep.url)
                if fatal:
                    raise fatal from None
                ep.rejected += 1
                refused.append((ep, e))
                continue
            finally:
                ep.in_flight -= 1
            for other, _ in refused:  # it refused what this one served: leave it out for a while
                other.down_until = time.monotonic() + self.backoff_s
            ep.latencies.append(time.perf_counter() - started)
            usage = getattr(result, "usage", None)
            if usage is not None:
                ep.prompt_tokens += getattr(usage, "prompt_tokens", 0) or 0
                ep.completion_tokens += getattr(usage, "completion_tokens", 0) or 0
            self.answered += 1
            return result
        if refused:  # every endpoint that answered refused it: this request cannot be served
            ep, e = refused[-1]
            raise self._rejected(e, ep.url)
        if unusable:
            if not self.answered:
                raise EngineUnavailable(
                    f"the teacher's first reply was unusable, so nothing more is sent to it: {'; '.join(unusable)}"
                )
            raise BadResponse("; ".join(unusable))
        raise EngineUnavailable(
            "; ".join(failures) if len(failures) == 1 else f"every endpoint failed: {'; '.join(failures)}"
        )

    def _rejected(self, e: openai.APIStatusError, url: str) -> Exception:
        fatal = self.fatal_or_none(e, url)
        if fatal:
            return fatal
        self.rejected += 1
        if not self.answered and self.rejected >= ALL_REJECTED_LIMIT:
            return EngineFatal(
                f"{url} rejected each of the first {self.rejected} requests ({e.status_code}: {e.message})"
            )
        return RequestRejected(f"engine rejected a request ({e.status_code}): {e.message}")

    def stats(self) -> dict:
        """Per-endpoint totals for the run summary, keyed by URL."""
        return {e.url: e.stats() for e in self.endpoints}

    async def close(self) -> None:
        for e in self.endpoints:
            await e.client.close()
