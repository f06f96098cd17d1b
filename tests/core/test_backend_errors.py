"""Issue 35 (15-17): every backend and endpoint error is one line naming what failed, with a documented exit
code, never a traceback. Each reproduced: an Elasticsearch URL that does not answer, a truncated FAISS index
(15); a corrupt ``index.json``, a truncated ``corpus.arrow`` or bm25s array, whose messages named no file or
misled (``pickled (object) data``) (16); a retriever URL answering HTML or JSON without ``result``, which
ended synthesis in an ExceptionGroup traceback (17)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest

from coa.errors import BadInput
from coa.procs import free_port
from coa.search import DEFAULT_CORPUS, RetrieverClient, build_index, load_corpus
from coa.search.__main__ import main
from coa.search.backends import read_json
from tests.fixtures.local_http import LocalServer

ROOT = Path(__file__).resolve().parents[2]
N_DOCS = 60


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("COA_DEBUG", raising=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "slice.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in load_corpus(DEFAULT_CORPUS).slice(0, N_DOCS).to_pylist()))
    return path


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    return build_index(corpus, tmp_path_factory.mktemp("bm25s") / "idx", show_progress=False)


@pytest.fixture
def index(built, tmp_path):
    """A copy of a small bm25s index, to damage."""
    return Path(shutil.copytree(built, tmp_path / "idx"))


def error_line(argv: list[str], capsys) -> str:
    """The run exits 2 with exactly one line on stderr: that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def query(index: Path, *more: str) -> list[str]:
    return ["query", "--index", str(index), *more, "Maria Golovin"]


def truncate(path: Path, size: int | None = None) -> None:
    os.truncate(path, path.stat().st_size // 2 if size is None else size)


def rebuild(index: Path, backend: str | None = "bm25s") -> str:
    return f"rebuild the index: python -m coa.search build{f' --backend {backend}' if backend else ''} --out {index}"


# ---- 16: damaged files of a bm25s index --------------------------------------------------------------
@pytest.mark.parametrize("name", ["data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy"])
def test_a_truncated_bm25s_array_is_named_with_its_size(index, name, capsys):
    path = index / "bm25s" / name
    whole = path.stat().st_size
    truncate(path)
    assert error_line(query(index), capsys) == (
        f"python -m coa.search: {path}: truncated ({whole // 2:,} of {whole:,} bytes); {rebuild(index)}"
    )


@pytest.mark.parametrize("name", ["vocab.index.json", "params.index.json"])
def test_a_truncated_bm25s_json_is_named(index, name, capsys):
    path = index / "bm25s" / name
    truncate(path)
    line = error_line(query(index), capsys)
    assert line.startswith(f"python -m coa.search: {path}: truncated or corrupt JSON (")
    assert line.endswith(rebuild(index))


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "empty (truncated to 0 bytes)"),
        (b"\x00garbage" * 100, "corrupt (not a NumPy .npy file: its first bytes are not the .npy signature)"),
    ],
)
def test_an_overwritten_bm25s_array_says_so_not_pickled_data(index, content, problem, capsys):
    path = index / "bm25s" / "data.csc.index.npy"
    path.write_bytes(content)  # numpy said "This file contains pickled (object) data ..." for the garbage
    assert error_line(query(index), capsys) == f"python -m coa.search: {path}: {problem}; {rebuild(index)}"


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("half", "truncated ({size:,} bytes; an Arrow file ends with its footer and ARROW1, this one stops short)"),
        ("empty", "empty (truncated to 0 bytes)"),
        ("garbage", "corrupt (not an Arrow IPC file: it does not start with ARROW1)"),
    ],
)
def test_a_damaged_corpus_arrow_is_named(index, damage, problem, capsys):
    path = index / "corpus.arrow"
    if damage == "garbage":
        path.write_bytes(b"not arrow at all" * 64)
    else:
        truncate(path, None if damage == "half" else 0)
    expected = problem.format(size=path.stat().st_size)
    assert error_line(query(index), capsys) == f"python -m coa.search: {path}: {expected}; {rebuild(index, None)}"


@pytest.mark.parametrize("content", ['{"backend": "bm25s", ', "", "[1, 2]"])
def test_a_corrupt_index_json_is_named(index, content, capsys):
    (index / "index.json").write_text(content)
    line = error_line(query(index), capsys)
    assert line.startswith(f"python -m coa.search: {index / 'index.json'}: ")
    assert any(word in line for word in ("truncated", "corrupt", "empty")) and line.endswith(rebuild(index, None))


def test_read_json_names_a_corrupt_file(tmp_path):
    """What index.py is asked to call for index.json (until then, the test above is expected to fail)."""
    path = tmp_path / "index.json"
    path.write_text('{"backend": "bm25s", ')
    with pytest.raises(BadInput) as e:
        read_json(path, tmp_path)
    assert str(e.value).startswith(f"{path}: truncated or corrupt JSON (")
    assert str(e.value).endswith(f"; rebuild the index: python -m coa.search build --out {tmp_path}")
    path.write_text("[1, 2]")
    with pytest.raises(BadInput, match=r"index.json: corrupt \(a JSON list, not an object\)"):
        read_json(path, tmp_path)


def test_a_truncated_dense_npy_is_named(index, capsys):
    path = index / "dense.npy"
    np.save(path, np.zeros((N_DOCS, 384), np.float32))
    truncate(path)
    line = error_line(query(index, "--retriever", "dense"), capsys)
    assert line == (
        f"python -m coa.search: {path}: truncated ({path.stat().st_size:,} of {N_DOCS * 384 * 4 + 128:,} "
        f"bytes); rebuild the index: python -m coa.search build --dense --out {index}"
    )


# ---- 15: FAISS ---------------------------------------------------------------------------------------
@pytest.fixture
def faiss_index(corpus, tmp_path):
    """A FAISS index over random unit vectors (no encoder needed to build it, nor to fail opening it)."""
    vectors = np.random.default_rng(0).standard_normal((N_DOCS, 384)).astype(np.float32)
    np.save(tmp_path / "emb.npy", vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    return build_index(
        corpus, tmp_path / "fidx", backend="faiss", show_progress=False, embeddings=str(tmp_path / "emb.npy"), m=8
    )


@pytest.mark.parametrize("size", [None, 10, 0])
def test_a_truncated_faiss_index_is_named(faiss_index, size, capsys):
    path = faiss_index / "faiss" / "ivfpq.faiss"
    truncate(path, size)  # faiss raised RuntimeError("Error in ... faiss::read_ivf_header ... read error")
    line = error_line(query(faiss_index, "--retriever", "dense"), capsys)
    problem = (
        "empty (truncated to 0 bytes)"
        if size == 0
        else f"truncated or corrupt ({path.stat().st_size:,} bytes; faiss stopped reading it in read_"
    )
    assert line.startswith(f"python -m coa.search: {path}: {problem}")
    assert line.endswith(rebuild(faiss_index, "faiss"))


def test_truncated_faiss_vectors_are_named(faiss_index, capsys):
    path = faiss_index / "faiss" / "vectors.f16.npy"
    truncate(path)
    line = error_line(query(faiss_index, "--retriever", "dense"), capsys)
    assert line.startswith(f"python -m coa.search: {path}: truncated (") and line.endswith(
        rebuild(faiss_index, "faiss")
    )


# ---- 15: Elasticsearch that does not answer -------------------------------------------------------------
def es_index(index: Path, url: str) -> Path:
    shutil.rmtree(index / "bm25s")
    meta = json.loads((index / "index.json").read_text())
    meta.update(backend="elasticsearch", format_version=1, settings={"url": url, "index": "coa-test"})
    (index / "index.json").write_text(json.dumps(meta))
    return index


def test_an_elasticsearch_url_refusing_connections_is_one_line(index, capsys):
    url = f"http://127.0.0.1:{free_port()}"  # elastic_transport.ConnectionError traceback before
    assert error_line(query(es_index(index, url)), capsys) == (
        f"python -m coa.search: elasticsearch at {url} does not answer (Connection refused) while opening index "
        f"'coa-test' (index.json's settings.url): start it, or check the URL"
    )


def test_an_elasticsearch_url_that_never_answers_is_one_line(index, capsys, monkeypatch):
    from coa.search.backends import elasticsearch  # heavy: the elasticsearch client

    monkeypatch.setattr(elasticsearch, "PROBE_TIMEOUT_S", 1)
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        assert error_line(query(es_index(index, url)), capsys) == (
            f"python -m coa.search: elasticsearch at {url} did not answer in time while opening index 'coa-test' "
            f"(index.json's settings.url)"
        )


def test_building_against_an_unreachable_elasticsearch_is_one_line(corpus, tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert (
        main(
            [
                "build",
                "--corpus",
                str(corpus),
                "--backend",
                "elasticsearch",
                "--url",
                url,
                "--out",
                str(tmp_path / "es"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]  # after the progress lines of reading the corpus
    assert "Traceback" not in err and line.startswith(
        f"python -m coa.search: elasticsearch at {url} does not answer (Connection refused) while creating index 'coa-"
    )
    assert not (tmp_path / "es").exists()


# ---- 17: a retriever URL that is not a retrieval server --------------------------------------------------
class Answering(LocalServer):
    """A server answering every request with one fixed response."""

    def __init__(self, status: int, body: bytes, content_type: str):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        super().__init__(Handler)


HTML = b"<html>\n<body>Welcome to nginx!</body>\n</html>"
WRONG_ANSWERS = [
    (
        200,
        HTML,
        "text/html",
        "answered 200 with text/html, not the /retrieve API's JSON ('<html> <body>Welcome to "
        "nginx!</body> </html>'): is it a coa.search or Search-R1 retrieval server?",
    ),
    (
        200,
        b'{"results": []}',
        "application/json",
        "answered JSON without 'result' (got ['results']): is it a coa.search or Search-R1 retrieval server?",
    ),
    (
        200,
        b'{"result": [[{"id": "x"}]]}',
        "application/json",
        "answered a malformed 'result' (KeyError: 'contents'); "
        "expected [[{'document': {'id', 'contents'}, 'score'}, ...], ...]",
    ),
    (200, b'{"result": []}', "application/json", "answered 0 result lists for 1 queries"),
    (404, b'{"detail": "Not Found"}', "application/json", 'answered 404 to POST /retrieve: {"detail": "Not Found"}'),
]


@pytest.mark.parametrize(
    "status, body, content_type, message", WRONG_ANSWERS, ids=["html", "no-result", "malformed", "too-few", "404"]
)
def test_a_wrong_answer_is_one_connection_error_at_once(status, body, content_type, message):
    with Answering(status, body, content_type) as server:
        client = RetrieverClient(server.url, retries=3, backoff=5)  # no retry: it would wait 5 s
        with pytest.raises(ConnectionError) as e:
            client.search(["q"], 3)
        assert str(e.value) == f"retrieval server {server.url} {message}"
        with pytest.raises(ConnectionError) as e:
            asyncio.run(client.asearch(["q"], 3))
        assert str(e.value) == f"retrieval server {server.url} {message}"


@pytest.mark.slow
def test_synthesis_against_an_html_retriever_stops_cleanly(built, tmp_path):
    """As an unreachable or failing (500) retriever does: exit 3, the reason on one line, no traceback."""
    with Answering(200, HTML, "text/html") as server:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "synth.run",
                "mode=coa",
                "limit=2",
                "teacher.kind=reference",
                "progress=false",
                f"search.retriever_url={server.url}",
                f"reference.corpus={built}",
                f"out={tmp_path / 'out'}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "COA_PARAMS": "none"},
        )
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1  # one line on stderr, and no 0-row folder left behind (issue 48)
    assert proc.stderr.startswith(
        f"synth: retriever unavailable: retrieval server {server.url} answered 200 with text/html, "
        f"not the /retrieve API's JSON"
    )
    assert proc.stdout == "" and not (tmp_path / "out").exists()
