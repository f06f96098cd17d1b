"""Retrieval server speaking Search-R1's de facto API (so verl/Search-R1 rollouts can use it).

``POST /retrieve {"queries": [...], "topk": k, "return_scores": bool}``
  → ``{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}`` (scores asked for)
  → ``{"result": [[{"id", "contents"}, ...], ...]}``                         (scores not asked for)
``GET /health`` → ``{"status": "ok", "n_docs": N, "retriever": name}``

Concurrent requests are not serialised one by one: a ``SearchBatcher`` searches everything that
queued while the previous batch ran as one batch in a worker thread. What one request may ask is
bounded (``Limits``): a larger body gets a short 413, a longer batch or query a short 422 that never
echoes the input. There is no authentication: the server binds loopback unless told otherwise.
"""

# (no `from __future__ import annotations`: FastAPI must resolve the request model built inside create_app)
import ipaddress
import sys
from dataclasses import dataclass

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from coa.procs import require_free_port
from coa.search.batching import MAX_BATCH, SearchBatcher
from coa.search.index import Index
from coa.search.types import Searcher

MAX_TOPK = 100


@dataclass(frozen=True)
class Limits:
    """What one ``/retrieve`` request may ask (a 1,000 × 50 KB batch stalled every other client for ~8 s)."""

    max_body_bytes: int = 1 << 20
    max_batch: int = MAX_BATCH
    max_query_chars: int = 2000
    max_topk: int = MAX_TOPK


def request_model(limits: Limits) -> type[BaseModel]:
    class RetrieveRequest(BaseModel):
        queries: list[str] = Field(..., max_length=limits.max_batch, description="query strings, one batch")
        topk: int = Field(3, ge=1, le=limits.max_topk)
        return_scores: bool = False

        @field_validator("queries")
        @classmethod
        def _short_queries(cls, queries: list[str]) -> list[str]:
            for i, query in enumerate(queries):
                if len(query) > limits.max_query_chars:
                    raise ValueError(f"query {i} has {len(query)} characters; at most {limits.max_query_chars}")
            return queries

    return RetrieveRequest


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413 (by Content-Length, or while it streams in)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> str:
        return f"request body over {self.max_bytes} bytes"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            return await JSONResponse({"detail": self._too_large()}, status_code=413)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # chunked upload without Content-Length
                raise HTTPException(413, self._too_large())  # FastAPI re-raises HTTPExceptions from the body read
            return message

        await self.app(scope, limited_receive, send)


async def short_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's default 422 echoes the input (51 MB for a 51 MB query): say where and what, nothing more."""
    detail = [{"loc": list(e["loc"]), "msg": e["msg"][:200]} for e in exc.errors()[:5]]
    return JSONResponse({"detail": detail}, status_code=422)


def create_app(searcher: Searcher, n_docs: int, limits: Limits = Limits()) -> FastAPI:
    batcher = SearchBatcher(searcher, max_batch=limits.max_batch)
    RetrieveRequest = request_model(limits)

    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="coa retrieval server", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_exception_handler(RequestValidationError, short_validation_error)

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "n_docs": n_docs,
            "retriever": searcher.name,
            "batches": batcher.batches,
            "requests": batcher.requests,
        }

    @app.post("/retrieve")
    async def retrieve(req: RetrieveRequest) -> dict:
        results = await batcher.search(req.queries, req.topk)
        if req.return_scores:
            return {
                "result": [
                    [{"document": {"id": d.id, "contents": d.contents}, "score": d.score} for d in docs]
                    for docs in results
                ]
            }
        return {"result": [[{"id": d.id, "contents": d.contents} for d in docs] for docs in results]}

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: assume it reaches beyond this machine
        return False


def exposure_warning(host: str, port: int) -> str | None:
    if is_loopback(host):
        return None
    return (
        f"WARNING: binding {host}:{port} exposes /retrieve beyond this machine with NO authentication; "
        f"anyone who can reach it can query the index. Bind 127.0.0.1 and put an authenticating proxy in front."
    )


def serve(
    index_dir: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    retriever: str = "bm25",
    backend: str | None = None,
    limits: Limits = Limits(),
) -> None:
    import uvicorn

    require_free_port(host, port, "--port N")  # before loading the index; uvicorn would only log it and exit 3
    index = Index(index_dir, backend)
    searcher = index.searcher(retriever)
    searcher.search(["warm up"], 1)  # load the mmap'd index before the first request
    warning = exposure_warning(host, port)
    if warning:
        print("\n" + "!" * 100 + f"\n{warning}\n" + "!" * 100 + "\n", file=sys.stderr)
    app = create_app(searcher, len(index), limits)
    # keep-alive longer than an agent's think time between two searches: no reconnect per query
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_keep_alive=60)
