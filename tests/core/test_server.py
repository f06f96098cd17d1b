"""The retrieval server on loopback, started once for this module."""

import asyncio

import httpx
import pytest

from coa.procs import Server, free_port, retrieval_server_cmd
from coa.search import RetrieverClient, load_searcher

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server_url(index_dir, tmp_path_factory):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Server(
        retrieval_server_cmd(index_dir, port), f"{url}/health", log=tmp_path_factory.mktemp("logs") / "retrieval.log"
    ).start(timeout=120)
    yield url
    server.stop()


def test_round_trip_matches_in_process(server_url, index_dir):
    client = RetrieverClient(server_url)
    remote = client.search(["Maria Golovin opera", "Citibank founded"], 3)
    local = load_searcher(index_dir).search(["Maria Golovin opera", "Citibank founded"], 3)
    assert [[d.id for d in r] for r in remote] == [[d.id for d in r] for r in local]
    assert remote[0][0].contents == local[0][0].contents
    assert client.health()["n_docs"] == 19099


def test_search_r1_wire_format(server_url):
    r = httpx.post(f"{server_url}/retrieve", json={"queries": ["Maria Golovin"], "topk": 2, "return_scores": True})
    item = r.json()["result"][0][0]
    assert set(item) == {"document", "score"} and set(item["document"]) == {"id", "contents"}
    assert item["document"]["id"].startswith("hp")
    r = httpx.post(f"{server_url}/retrieve", json={"queries": ["Maria Golovin"], "topk": 2})
    assert set(r.json()["result"][0][0]) == {"id", "contents"}


@pytest.mark.parametrize(
    "body",
    [
        {"topk": 3},
        {"queries": "not a list"},
        {"queries": ["q"], "topk": 0},
        {"queries": ["q"], "topk": "many"},
        {"queries": [1, 2]},
    ],
)
def test_bad_requests_get_4xx(server_url, body):
    r = httpx.post(f"{server_url}/retrieve", json=body)
    assert 400 <= r.status_code < 500
    assert r.json()["detail"]  # a message saying what is wrong
    r = httpx.post(f"{server_url}/retrieve", content=b"{not json", headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500


def test_200_concurrent_requests_are_batched(server_url):
    before = httpx.get(f"{server_url}/health").json()

    async def fire():
        async with httpx.AsyncClient(timeout=60) as client:

            async def one(i):
                return await client.post(
                    f"{server_url}/retrieve", json={"queries": [f"film director born {1900 + i}"], "topk": 3}
                )

            return await asyncio.gather(*(one(i) for i in range(200)))

    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    assert all(len(r.json()["result"][0]) == 3 for r in responses)
    after = httpx.get(f"{server_url}/health").json()
    assert after["requests"] - before["requests"] == 200
    assert after["batches"] - before["batches"] < 200  # requests were searched together, not one by one


def test_client_retries_then_fails_clearly():
    client = RetrieverClient(f"http://127.0.0.1:{free_port()}", timeout=1, retries=1, backoff=0.01)
    with pytest.raises(ConnectionError, match="failed after 2 tries"):
        client.search(["q"], 3)
