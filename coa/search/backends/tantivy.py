"""BM25 on disk with tantivy (Rust, Lucene-like segments, memory-mapped at query time) through PyPI ``tantivy``.

Chosen over pyserini (Lucene) because it needs no JVM and installs as one wheel. Tokenisation follows
bm25s as far as tantivy allows: lowercase, bm25s's English stopwords, the same Snowball English stemmer;
tantivy's ``simple`` tokenizer splits on non-alphanumerics and keeps one-letter tokens, which bm25s drops.
Scoring is tantivy's BM25 (k1 1.2, b 0.75; bm25s uses k1 1.5). The build streams: the writer flushes
segments of at most ``heap_mb`` MB, so memory stays flat whatever the corpus size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import tantivy
from bm25s.stopwords import STOPWORDS_EN
from tqdm import tqdm

from coa.search.backends import unreadable

VERSION = 1
KIND = "lexical"
TOKENIZER = "coa_en"  # registered on every open: tantivy stores only its name


def analyzer() -> tantivy.TextAnalyzer:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.custom_stopword(list(STOPWORDS_EN)))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("contents", stored=False, tokenizer_name=TOKENIZER, index_option="freq")
    builder.add_unsigned_field("row", stored=True, indexed=False)  # the DocumentStore row of the passage
    return builder.build()


def build(store, folder: Path, show_progress: bool = True, heap_mb: int = 256, threads: int = 1) -> dict:
    index = tantivy.Index(schema(), path=str(folder))
    index.register_tokenizer(TOKENIZER, analyzer())
    writer = index.writer(heap_size=heap_mb * 1_000_000, num_threads=threads)
    row = 0
    with tqdm(total=len(store), desc="tantivy", unit=" docs", unit_scale=True, disable=not show_progress) as bar:
        for batch in store.batches():
            for text in batch.column("contents").to_pylist():
                writer.add_document(tantivy.Document(contents=text, row=[row]))
                row += 1
            bar.update(batch.num_rows)
    writer.commit()
    writer.wait_merging_threads()
    return {"tokenizer": "simple+remove_long(40)+lowercase+bm25s_en_stopwords+snowball_english", "heap_mb": heap_mb}


class _Search:
    def __init__(self, folder: Path):
        try:
            self.index = tantivy.Index.open(str(folder))
        except Exception as e:  # a missing or damaged segment: name the folder and how to rebuild
            raise unreadable(folder, ("meta.json",), e, "tantivy") from e
        self.analyzer = analyzer()
        self.index.register_tokenizer(TOKENIZER, self.analyzer)
        self.schema = self.index.schema
        self.searcher = self.index.searcher()

    def _query(self, text: str) -> tantivy.Query | None:
        terms = self.analyzer.analyze(text)  # the same analysis as the indexed text, no query syntax to escape
        if not terms:
            return None
        return tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self.schema, "contents", t)) for t in terms]
        )

    def _one(self, text: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        query = self._query(text)
        if query is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        hits = self.searcher.search(query, k).hits
        rows = [self.searcher.doc(address)["row"][0] for _, address in hits]
        return np.asarray(rows, np.int64), np.asarray([score for score, _ in hits], np.float32)

    def __call__(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self._one(q, k) for q in queries]


def open(folder: Path, settings: dict) -> _Search:  # noqa: A001 - the backend contract's name
    return _Search(folder)
