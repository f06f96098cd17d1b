"""BM25 in an Elasticsearch (8.x REST API) or OpenSearch server, through the official ``elasticsearch`` client.

The index folder stays the unit: ``index.json`` records the URL and the engine's index name, the
documents stay in the local ``DocumentStore``; the engine holds only the text to score and each passage's
row. Analysis is the engine's ``english`` analyzer (lowercase, English stopwords, Porter stemmer).
Tested against noida-db (PyPI), a single binary speaking the ES 8.15 API: no real Elasticsearch or
OpenSearch installs from the package registries here.

An engine that does not answer, or answers with an error, is a ``ConnectionError`` naming its URL (one line,
exit 2 at build or open; during a run the retriever is gone, as with the retrieval server's client).
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np
from elastic_transport import ApiError, ConnectionTimeout, TransportError
from elasticsearch import Elasticsearch, helpers
from elasticsearch.helpers import BulkIndexError
from tqdm import tqdm

VERSION = 1
KIND = "lexical"
MAPPINGS = {"properties": {"contents": {"type": "text", "analyzer": "english"}, "row": {"type": "long"}}}
PROBE_TIMEOUT_S = 10  # the first request (create, exists) is not retried: a server that is not there is named at once


def client(url: str) -> Elasticsearch:
    return Elasticsearch(url, request_timeout=60, retry_on_timeout=True, max_retries=3)


def os_reason(error: BaseException) -> str:
    """The OS's words somewhere in the client's chain of causes ("Connection refused"), else the type's name."""
    seen = error
    while seen is not None:
        found = re.search(r"\[Errno -?\d+\] ([^)\]'\"]+)", str(seen))
        if found:
            return found.group(1).strip()
        seen = seen.__cause__ or seen.__context__
    return type(error).__name__


@contextmanager
def engine_errors(url: str, doing: str):
    """The client's errors (``elastic_transport``: no standard type, a nested repr as message) as one
    ``ConnectionError`` line naming the URL and what was being done."""
    try:
        yield
    except ApiError as e:
        raise ConnectionError(f"elasticsearch at {url} answered {e.meta.status} while {doing}: {e.message}") from e
    except ConnectionTimeout as e:
        raise ConnectionError(f"elasticsearch at {url} did not answer in time while {doing}") from e
    except TransportError as e:
        raise ConnectionError(
            f"elasticsearch at {url} does not answer ({os_reason(e)}) while {doing}: start it, or check the URL"
        ) from e
    except BulkIndexError as e:
        raise ConnectionError(
            f"elasticsearch at {url} refused {len(e.errors)} documents while {doing}: {str(e.errors[0])[:300]}"
        ) from e


def build(
    store, folder: Path, show_progress: bool = True, url: str = "", index_name: str = "", chunk_size: int = 2000
) -> dict:
    """Bulk-index the store into a new engine index (named after the build unless ``index_name`` is given)."""
    if not url:
        raise ValueError("backend elasticsearch needs url=http://HOST:PORT")
    es = client(url)
    name = index_name or f"coa-{time.strftime('%Y%m%d-%H%M%S')}-{folder.parent.name.lower().strip('.')}"[:200]
    with engine_errors(url, f"creating index {name!r}"):  # the first request: a server that is not there fails fast
        es.options(request_timeout=PROBE_TIMEOUT_S, max_retries=0).indices.create(
            index=name, settings={"number_of_shards": 1, "number_of_replicas": 0}, mappings=MAPPINGS
        )

    def actions():
        row = 0
        for batch in store.batches():
            for text in batch.column("contents").to_pylist():
                yield {"_index": name, "_id": str(row), "_source": {"contents": text, "row": row}}
                row += 1

    with (
        engine_errors(url, f"indexing into {name!r}"),
        tqdm(total=len(store), desc="elasticsearch", unit=" docs", unit_scale=True, disable=not show_progress) as bar,
    ):
        for _ in helpers.streaming_bulk(es, actions(), chunk_size=chunk_size, raise_on_error=True):
            bar.update(1)
        es.indices.refresh(index=name)
    return {"url": url, "index": name}


class _Search:
    def __init__(self, settings: dict):
        self.url, self.es, self.index = settings["url"], client(settings["url"]), settings["index"]
        with engine_errors(self.url, f"opening index {self.index!r} (index.json's settings.url)"):
            exists = self.es.options(request_timeout=PROBE_TIMEOUT_S, max_retries=0).indices.exists(index=self.index)
        if not exists:
            raise FileNotFoundError(f"elasticsearch index {self.index!r} is missing at {self.url}; rebuild it")

    def __call__(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        searches = []
        for text in queries:  # one round trip for the whole batch
            searches += [
                {"index": self.index},
                {"query": {"match": {"contents": text}}, "size": k, "_source": False, "track_total_hits": False},
            ]
        out = []
        with engine_errors(self.url, f"searching index {self.index!r}"):
            responses = self.es.msearch(searches=searches)["responses"]
        for response in responses:
            if "error" in response:
                raise ConnectionError(f"elasticsearch at {self.url}, index {self.index!r}: {response['error']}")
            hits = response["hits"]["hits"]
            out.append(
                (
                    np.asarray([int(h["_id"]) for h in hits], np.int64),
                    np.asarray([h["_score"] for h in hits], np.float32),
                )
            )
        return out


def open(folder: Path, settings: dict) -> _Search:  # noqa: A001 - the backend contract's name
    return _Search(settings)
