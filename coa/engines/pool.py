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
  any work); other 4xx answers fail only their own trajectory (``RequestRejected``), unless every one of
  the first requests is rejected: a configuration error, fatal.

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

from coa.engines import EngineFatal, EngineUnavailable, RequestRejected

ALL_REJECTED_LIMIT = 8  # this many rejections and no success: the configuration is wrong, not the requests
TRANSIENT = (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError, openai.InternalServerError)


def as_urls(base_url: str | list | tuple) -> list[str]:
    """``teacher.base_url`` as a list: one URL, a comma-separated string or a list of URLs."""
    items = base_url.split(",") if isinstance(base_url, str) else list(base_url)
    return [str(u).strip() for u in items if str(u).strip()]


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
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies: list = field(default_factory=list, repr=False)

    def stats(self) -> dict:
        return {"requests": self.requests, "errors": self.errors, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                **{f"latency_p{q}_s": round(percentile(self.latencies, q / 100), 3) for q in (50, 90, 99)}}


def retry_after(e: Exception) -> float:
    response = getattr(e, "response", None)
    try:
        return float(response.headers.get("retry-after", 0)) if response is not None else 0.0
    except ValueError:  # an HTTP date: not worth parsing, the back-off applies
        return 0.0


class Endpoints:
    def __init__(self, base_url: str | list, model: str, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 300.0, retries: int = 4, backoff_s: float = 30.0, http_client=None):
        urls = as_urls(base_url)
        if not urls:
            raise ValueError("teacher.base_url: no URL given")
        self.model, self.api_key_env, self.retries, self.backoff_s = model, api_key_env, retries, backoff_s
        key = os.environ.get(api_key_env) or "EMPTY"
        self.endpoints = [Endpoint(u, openai.AsyncOpenAI(base_url=u, api_key=key, timeout=timeout_s,
                                                         max_retries=retries, http_client=http_client))
                          for u in urls]
        self.answered = self.rejected = 0

    @property
    def url(self) -> str:
        return ", ".join(e.url for e in self.endpoints)

    def fatal_or_none(self, e: openai.APIStatusError, url: str) -> EngineFatal | None:
        if e.status_code in (401, 403):
            return EngineFatal(f"{url} refused the credentials ({e.status_code}): check the key in "
                               f"${self.api_key_env} and its permissions")
        if e.status_code == 404:
            return EngineFatal(f"{url}: model {self.model!r} not found (404): {e.message}")
        return None

    async def check(self) -> str | None:
        """Before any work: every endpoint accepts the key and serves the model (``EngineFatal`` otherwise).
        Returns the model's ``owned_by`` ("vllm" for vLLM), None when no endpoint lists its models (their
        first request tells). An endpoint that does not answer is put in back-off; none answering is
        ``EngineUnavailable``."""
        owners, unreachable = [], []
        for ep in self.endpoints:
            try:
                page = await ep.client.models.list()
            except openai.NotFoundError:
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
            served = {m.id: getattr(m, "owned_by", "") for m in page.data}
            if served and self.model not in served:
                raise EngineFatal(f"model {self.model!r} is not served at {ep.url} (404: unknown model); "
                                  f"it serves: {', '.join(sorted(served))}")
            owners.append(served.get(self.model))
        if len(unreachable) == len(self.endpoints):
            raise EngineUnavailable("; ".join(unreachable))
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
        (whose ``usage``, if any, is counted)."""
        tried: set[int] = set()
        failures = []
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
            except openai.APIStatusError as e:
                ep.errors += 1
                raise self._rejected(e, ep.url) from None
            finally:
                ep.in_flight -= 1
            ep.latencies.append(time.perf_counter() - started)
            usage = getattr(result, "usage", None)
            if usage is not None:
                ep.prompt_tokens += getattr(usage, "prompt_tokens", 0) or 0
                ep.completion_tokens += getattr(usage, "completion_tokens", 0) or 0
            self.answered += 1
            return result
        raise EngineUnavailable("; ".join(failures) if len(failures) == 1 else
                                f"every endpoint failed: {'; '.join(failures)}")

    def _rejected(self, e: openai.APIStatusError, url: str) -> Exception:
        fatal = self.fatal_or_none(e, url)
        if fatal:
            return fatal
        self.rejected += 1
        if not self.answered and self.rejected >= ALL_REJECTED_LIMIT:
            return EngineFatal(f"{url} rejected each of the first {self.rejected} requests ({e.status_code}: {e.message})")
        return RequestRejected(f"engine rejected a request ({e.status_code}): {e.message}")

    def stats(self) -> dict:
        """Per-endpoint totals for the run summary, keyed by URL."""
        return {e.url: e.stats() for e in self.endpoints}

    async def close(self) -> None:
        for e in self.endpoints:
            await e.client.close()
