"""HTTP client of the ``/retrieve`` API: a ``Searcher`` with timeouts and retries."""
from __future__ import annotations

import asyncio
import time
from typing import Sequence

import httpx

from coa.search.types import Doc


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
                row.append(Doc(id=str(doc.get("id", "")), contents=doc["contents"],
                               score=float(item.get("score", 0.0))))
            out.append(row)
        return out

    def _body(self, queries: Sequence[str], k: int) -> dict:
        return {"queries": list(queries), "topk": k, "return_scores": True}

    def search(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        for attempt in range(self.retries + 1):
            try:
                r = self._client.post(f"{self.url}/retrieve", json=self._body(queries, k))
                if r.status_code < 500:
                    r.raise_for_status()
                    return self._parse(r.json())
                error: Exception = httpx.HTTPStatusError(f"{r.status_code}: {r.text[:200]}",
                                                         request=r.request, response=r)
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
                    r.raise_for_status()
                    return self._parse(r.json())
                error: Exception = RuntimeError(f"{r.status_code}: {r.text[:200]}")
            except (httpx.TransportError, httpx.TimeoutException) as e:
                error = e
            if attempt < self.retries:
                await asyncio.sleep(self.backoff * 2**attempt)
        raise ConnectionError(f"retrieval server {self.url} failed after {self.retries + 1} tries: {error}")

    def health(self) -> dict:
        r = self._client.get(f"{self.url}/health")
        r.raise_for_status()
        return r.json()
