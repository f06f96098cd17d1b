"""Retrieval server speaking Search-R1's de facto API (so verl/Search-R1 rollouts can use it).

``POST /retrieve {"queries": [...], "topk": k, "return_scores": bool}``
  → ``{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}`` (scores asked for)
  → ``{"result": [[{"id", "contents"}, ...], ...]}``                         (scores not asked for)
``GET /health`` → ``{"status": "ok", "n_docs": N, "retriever": name}``

Concurrent requests are not serialised one by one: a ``SearchBatcher`` searches everything that
queued while the previous batch ran as one batch in a worker thread.
"""
from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, Field, field_validator

from coa.search.batching import MAX_BATCH, SearchBatcher
from coa.search.types import Searcher

MAX_TOPK = 100


class RetrieveRequest(BaseModel):
    queries: list[str] = Field(..., description="query strings, searched as one batch")
    topk: int = Field(3, ge=1, le=MAX_TOPK)
    return_scores: bool = False

    @field_validator("queries")
    @classmethod
    def _non_empty(cls, queries: list[str]) -> list[str]:
        if len(queries) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} queries per request, got {len(queries)}")
        return queries


def create_app(searcher: Searcher, n_docs: int) -> FastAPI:
    batcher = SearchBatcher(searcher)

    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="coa retrieval server", lifespan=lifespan)
    app.state.batcher = batcher

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "n_docs": n_docs, "retriever": searcher.name,
                "batches": batcher.batches, "requests": batcher.requests}

    @app.post("/retrieve")
    async def retrieve(req: RetrieveRequest) -> dict:
        results = await batcher.search(req.queries, req.topk)
        if req.return_scores:
            return {"result": [[{"document": {"id": d.id, "contents": d.contents}, "score": d.score}
                                for d in docs] for docs in results]}
        return {"result": [[{"id": d.id, "contents": d.contents} for d in docs] for docs in results]}

    return app


def serve(index_dir: str, host: str = "127.0.0.1", port: int = 8000, retriever: str = "bm25") -> None:
    import uvicorn

    from coa.search.index import load_searcher

    searcher = load_searcher(index_dir, retriever)
    searcher.search(["warm up"], 1)  # load the mmap'd index before the first request
    app = create_app(searcher, len(searcher.index))
    uvicorn.run(app, host=host, port=port, log_level="warning")
