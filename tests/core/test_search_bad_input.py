"""Issue 22's search items, each reproduced: build onto a foreign folder (2), the server's body, batch and
query-length limits (3), ports and binding beyond loopback (4), bad corpora (6), query --k (9)."""

import gzip
import json
from collections import Counter

import httpx
import pytest

from coa.search import build_index, load_corpus, load_searcher, read_corpus
from coa.search.__main__ import main
from coa.search.server import Limits, create_app, exposure_warning


def doc(i, text="apple text"):
    return json.dumps({"id": f"d{i}", "contents": f'"Doc {i}"\n{text}'})


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(doc(i, w) for i, w in enumerate(["apple", "banana", "cherry"])) + "\n")
    return path


# ---- 2: build --out on a folder that is not an index ----------------------------------------------
def test_build_refuses_a_foreign_folder_and_keeps_its_files(tmp_path, corpus, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "README.md").write_text("my notes")
    assert main(["build", "--corpus", str(corpus), "--out", str(foreign)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"python -m coa.search: {foreign} exists and is not a coa.search index (no index.json): "
        f"a build would replace it; choose another --out, or pass --force to replace it"
    )
    assert (foreign / "README.md").read_text() == "my notes"
    assert main(["build", "--corpus", str(corpus), "--out", str(foreign), "--force"]) == 0
    assert (foreign / "index.json").is_file()


def test_build_replaces_an_index_and_fills_an_empty_folder(tmp_path, corpus):
    (tmp_path / "empty").mkdir()
    build_index(corpus, tmp_path / "empty", show_progress=False)
    build_index(corpus, tmp_path / "empty", show_progress=False)  # an index is replaced without --force
    assert load_searcher(tmp_path / "empty").search(["banana"], 1)[0][0].id == "d1"


# ---- 3: what one request may ask --------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(index_dir):
    from fastapi.testclient import TestClient

    from coa.search import Index

    index = Index(index_dir)
    limits = Limits(max_body_bytes=20_000, max_batch=8, max_query_chars=100)
    with TestClient(create_app(index.searcher("bm25"), len(index), limits)) as c:
        yield c


def test_a_body_over_the_limit_gets_a_short_413(client):
    r = client.post("/retrieve", json={"queries": ["x" * 50_000], "topk": 3})
    assert r.status_code == 413 and r.json() == {"detail": "request body over 20000 bytes"}


def test_a_streamed_body_without_length_is_cut_at_the_limit(client):
    chunks = (b'{"queries": ["' + b"x" * 5_000 for _ in range(10))  # chunked: no Content-Length header
    r = client.post("/retrieve", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json() == {"detail": "request body over 20000 bytes"}


def test_too_many_or_too_long_queries_get_a_short_422_without_the_input(client):
    r = client.post("/retrieve", json={"queries": ["q"] * 9, "topk": 3})
    assert r.status_code == 422 and "at most 8 items" in r.text and len(r.content) < 400
    r = client.post("/retrieve", json={"queries": ["short", "y" * 5_000], "topk": 3})
    assert r.status_code == 422 and "query 1 has 5000 characters; at most 100" in r.text
    assert "yyyy" not in r.text and len(r.content) < 400
    assert client.post("/retrieve", json={"queries": ["Maria Golovin"], "topk": 3}).status_code == 200


# ---- 4: ports and binding ------------------------------------------------------------------------
@pytest.mark.parametrize("port", ["70000", "-5", "0"])
def test_serve_rejects_a_port_outside_1_65535(port, capsys):
    assert_exit_2(["serve", "--port", port])
    assert capsys.readouterr().err.strip() == f"SearchServerConfig: port must be 1-65535, got {port}"


def test_binding_beyond_loopback_warns_loudly():
    assert exposure_warning("127.0.0.1", 8000) is None and exposure_warning("localhost", 8000) is None
    assert exposure_warning("::1", 8000) is None
    warning = exposure_warning("0.0.0.0", 8000)
    assert warning.startswith(
        "WARNING: binding 0.0.0.0:8000 exposes /retrieve beyond this machine with NO authentication"
    )


@pytest.mark.slow
def test_serve_prints_the_warning_before_listening(index_dir, tmp_path):
    from coa.procs import Server, free_port, retrieval_server_cmd

    port, log = free_port(), tmp_path / "serve.log"
    server = Server(
        retrieval_server_cmd(index_dir, port, host="0.0.0.0"), f"http://127.0.0.1:{port}/health", log=log
    ).start(timeout=120)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["n_docs"] == 19099
    finally:
        server.stop()
    assert "WARNING: binding 0.0.0.0:" in log.read_text()


# ---- 6: corpora ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "lines, message",
    [
        ([doc(0), doc(0, "again")], "c.jsonl:2: duplicate id 'd0' (ids must be unique)"),
        ([doc(0), '{"id": null, "contents": "x"}'], "c.jsonl:2: field 'id' must be a non-empty string, got None"),
        ([doc(0), '{"id": "", "contents": "x"}'], "c.jsonl:2: field 'id' must be a non-empty string, got ''"),
        (  # issue 48: an integer id was taken as its string (ids are strings everywhere)
            [doc(0), '{"id": 7, "contents": "x"}'],
            "c.jsonl:2: field 'id' must be a non-empty string, got 7 (write it as the string \"7\")",
        ),
        ([doc(0), '["a", "list"]'], "c.jsonl:2: not a JSON object (a list)"),
        ([doc(0), '"just a string"'], "c.jsonl:2: not a JSON object (a str)"),
        ([doc(0), '{"contents": "no id"}'], "c.jsonl:2: field 'id' must be a non-empty string, got None"),
        ([doc(0), '{"id": "d1", "contents": 5}'], "c.jsonl:2: needs field 'contents' or fields 'title' and 'text'"),
        ([doc(0), '{"id": "d1", "contents": "  "}'], "c.jsonl:2: field 'contents' is empty"),
    ],
)
def test_bad_corpus_lines_name_file_and_line(tmp_path, lines, message):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as e:
        load_corpus(path)
    assert str(e.value).startswith(str(tmp_path / message))


def test_non_utf8_and_truncated_gzip_name_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(doc(0).encode() + b"\n" + b'{"id": "d1", "contents": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2: not UTF-8 \(byte 29\)"):
        load_corpus(path)
    whole = gzip.compress(("\n".join(doc(i, "word " * 200) for i in range(200)) + "\n").encode())
    gz = tmp_path / "c.jsonl.gz"
    gz.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"c.jsonl.gz:\d+: truncated or corrupt gzip stream"):
        load_corpus(gz)


def test_a_parquet_corpus_that_is_no_parquet_names_the_file(tmp_path):
    """Issue 48 (d): pyarrow's "Parquet magic bytes not found in footer" named no file."""
    path = tmp_path / "c.parquet"
    path.write_text("not parquet")
    with pytest.raises(ValueError, match=rf"^{path}: not a readable parquet file \(Parquet magic bytes not found"):
        load_corpus(path)


def test_skip_bad_skips_and_counts_them(tmp_path, capsys):
    path = tmp_path / "c.jsonl"
    path.write_bytes(
        "\n".join([doc(0), doc(0), '{"id": null, "contents": "x"}', "[1]", doc(1, "banana"), "{oops"]).encode()
        + b"\n\xff\n"
    )
    skipped = Counter()
    assert len(load_corpus(path, skip_bad=True)) == 2
    assert list(read_corpus(path, True, skipped)) and skipped == {
        "duplicate id": 1,
        "field 'id' must be a non-empty string": 1,
        "not a JSON object": 1,
        "not valid JSON": 1,
        "not UTF-8": 1,
    }
    out = tmp_path / "idx"
    assert main(["build", "--corpus", str(path), "--out", str(out)]) == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last_line == f"python -m coa.search: {path}:2: duplicate id 'd0' (ids must be unique)"
    assert main(["build", "--corpus", str(path), "--out", str(out), "--skip-bad"]) == 0
    assert json.loads((out / "index.json").read_text())["skipped_lines"]["duplicate id"] == 1


# ---- 9: query --k ----------------------------------------------------------------------------------
@pytest.mark.parametrize("k", ["0", "-1", "100000"])
def test_query_k_outside_1_100_exits_2(k, capsys):
    assert_exit_2(["query", "--k", k, "apple"])
    assert capsys.readouterr().err.strip() == f"QueryConfig: k must be 1-100, got {k}"


def test_query_returns_matches_only_never_zero_scores(tmp_path, corpus, capsys):
    build_index(corpus, tmp_path / "idx", show_progress=False)
    assert main(["query", "--index", str(tmp_path / "idx"), "--k", "100", "banana"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(row["id"], row["score"] > 0) for row in lines] == [("d1", True)]


def assert_exit_2(argv):
    assert main(argv) == 2
