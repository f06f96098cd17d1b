"""HTTP client of the ``/retrieve`` API: a ``Searcher`` with timeouts and retries.

Every way the server can fail is a ``ConnectionError`` naming its URL, the one error a run stops on cleanly
(finished rows kept, exit 3): no answer or 5xx after the retries, and at once (no retry) a 4xx or an answer
that is not the API's JSON (an HTML page, JSON without ``result``, a result per query missing).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Sequence

import httpx

from coa.search.types import Doc


def _snippet(text: str, n: int = 120) -> str:
    return re.sub(r"\s+", " ", text).strip()[:n]


class RetrieverClient:
    name = "http"

    def __init__(self, url: str, timeout: float = 30.0, retries: int = 3, backoff: float = 0.5):
        self.url = url.rstrip("/")
        if self.url.endswith("/retrieve"):
            self.url = self.url[: -len("/retrieve")]
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._client = httpx.Client(timeout=timeout)
        self._aclient: httpx.AsyncClient | None = None

    @staticmethod
    def _parse(payload: dict) -> list[list[Doc]]:
        out = []
        for docs in payload["result"]:
            row = []
            for item in docs:
                doc = item.get("document", item)
                row.append(
                    Doc(id=str(doc.get("id", "")), contents=doc["contents"], score=float(item.get("score", 0.0)))
                )
            out.append(row)
        return out

    def _answer(self, r: httpx.Response, n_queries: int) -> list[list[Doc]]:
        """The documents of a response below 500, or a one-line ``ConnectionError`` saying what came instead."""
        where = f"retrieval server {self.url}"
        if r.status_code >= 400:
            raise ConnectionError(f"{where} answered {r.status_code} to POST /retrieve: {_snippet(r.text)}")
        try:
            payload = r.json()
        except ValueError:
            kind = r.headers.get("content-type", "no content type")
            raise ConnectionError(
                f"{where} answered {r.status_code} with {kind}, not the /retrieve API's JSON "
                f"({_snippet(r.text, 80)!r}): is it a coa.search or Search-R1 retrieval server?"
            ) from None
        if not isinstance(payload, dict) or "result" not in payload:
            keys = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
            raise ConnectionError(
                f"{where} answered JSON without 'result' (got {keys}): is it a coa.search or "
                f"Search-R1 retrieval server?"
            )
        try:
            docs = self._parse(payload)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConnectionError(
                f"{where} answered a malformed 'result' ({type(e).__name__}: {e}); expected "
                f"[[{{'document': {{'id', 'contents'}}, 'score'}}, ...], ...]"
            ) from None
        if len(docs) != n_queries:
            raise ConnectionError(f"{where} answered {len(docs)} result lists for {n_queries} queries")
        return docs

    def _body(self, queries: Sequence[str], k: int) -> dict:
        return {"queries": list(queries), "topk": k, "return_scores": True}

    def search(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        for attempt in range(self.retries + 1):
            try:
                r = self._client.post(f"{self.url}/retrieve", json=self._body(queries, k))
                if r.status_code < 500:
                    return self._answer(r, len(queries))
                error: Exception = httpx.HTTPStatusError(
                    f"{r.status_code}: {r.text[:200]}", request=r.request, response=r
                )
            except (httpx.TransportError, httpx.TimeoutException) as e:
                error = e
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise ConnectionError(f"retrieval server {self.url} failed after {self.retries + 1} tries: {error}")

    async def asearch(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(timeout=self.timeout)
        for attempt in range(self.retries + 1):
            try:
                r = await self._aclient.post(f"{self.url}/retrieve", json=self._body(queries, k))
                if r.status_code < 500:
                    return self._answer(r, len(queries))
                error: Exception = RuntimeError(f"{r.status_code}: {r.text[:200]}")
            except (httpx.TransportError, httpx.TimeoutException) as e:
                error = e
            if attempt < self.retries:
                await asyncio.sleep(self.backoff * 2**attempt)
        raise ConnectionError(f"retrieval server {self.url} failed after {self.retries + 1} tries: {error}")

    def health(self) -> dict:
        try:
            r = self._client.get(f"{self.url}/health")
            r.raise_for_status()
            return r.json()
        except (httpx.HTTPError, ValueError) as e:
            raise ConnectionError(
                f"retrieval server {self.url}: GET /health failed ({type(e).__name__}: {e})"
            ) from None
