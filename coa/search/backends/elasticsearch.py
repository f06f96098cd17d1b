"""BM25 in an Elasticsearch (8.x REST API) or OpenSearch server, through the official ``elasticsearch`` client.

The index folder stays the unit: ``index.json`` records the URL and the engine's index name, the
documents stay in the local ``DocumentStore``; the engine holds only the text to score and each passage's
row. Analysis is the engine's ``english`` analyzer (lowercase, English stopwords, Porter stemmer).
Tested against noida-db (PyPI), a single binary speaking the ES 8.15 API: no real Elasticsearch or
OpenSearch installs from the package registries here.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
from elasticsearch import Elasticsearch, helpers
from tqdm import tqdm

VERSION = 1
KIND = "lexical"
MAPPINGS = {"properties": {"contents": {"type": "text", "analyzer": "english"}, "row": {"type": "long"}}}


def client(url: str) -> Elasticsearch:
    return Elasticsearch(url, request_timeout=60, retry_on_timeout=True, max_retries=3)


def build(store, folder: Path, show_progress: bool = True, url: str = "", index_name: str = "",
          chunk_size: int = 2000) -> dict:
    """Bulk-index the store into a new engine index (named after the build unless ``index_name`` is given)."""
    if not url:
        raise ValueError("backend elasticsearch needs url=http://HOST:PORT")
    es = client(url)
    name = index_name or f"coa-{time.strftime('%Y%m%d-%H%M%S')}-{folder.parent.name.lower().strip('.')}"[:200]
    es.indices.create(index=name, settings={"number_of_shards": 1, "number_of_replicas": 0}, mappings=MAPPINGS)

    def actions():
        row = 0
        for batch in store.batches():
            for text in batch.column("contents").to_pylist():
                yield {"_index": name, "_id": str(row), "_source": {"contents": text, "row": row}}
                row += 1

    with tqdm(total=len(store), desc="elasticsearch", unit=" docs", unit_scale=True, disable=not show_progress) as bar:
        for ok, item in helpers.streaming_bulk(es, actions(), chunk_size=chunk_size, raise_on_error=True):
            bar.update(1)
    es.indices.refresh(index=name)
    return {"url": url, "index": name}


class _Search:
    def __init__(self, settings: dict):
        self.es, self.index = client(settings["url"]), settings["index"]
        if not self.es.indices.exists(index=self.index):
            raise FileNotFoundError(f"elasticsearch index {self.index!r} is missing at {settings['url']}; rebuild it")

    def __call__(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        searches = []
        for text in queries:  # one round trip for the whole batch
            searches += [{"index": self.index},
                         {"query": {"match": {"contents": text}}, "size": k, "_source": False, "track_total_hits": False}]
        out = []
        for response in self.es.msearch(searches=searches)["responses"]:
            if "error" in response:
                raise RuntimeError(f"elasticsearch index {self.index!r}: {response['error']}")
            hits = response["hits"]["hits"]
            out.append((np.asarray([int(h["_id"]) for h in hits], np.int64),
                        np.asarray([h["_score"] for h in hits], np.float32)))
        return out


def open(folder: Path, settings: dict) -> _Search:  # noqa: A001 - the backend contract's name
    return _Search(settings)
