"""The engine seam: the registry, and the completions engine's fault handling against scripted HTTP
answers (httpx.MockTransport stands in for a server that fails on cue; the real vLLM server is
exercised in tests/synth and tests/evaluate)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from coa.agent import start_episode
from coa.engines import ENGINES, EngineFatal, EngineUnavailable, Request, RequestRejected, make_engine
from coa.formats import SEARCH_R1
from coa.procs import free_port
import synth.reference  # noqa: F401  registers the reference engine (a synth plug-in, above coa)


def completion_body(text: str, token_ids=None) -> dict:
    choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
    if token_ids is not None:
        choice |= {"token_ids": token_ids, "stop_reason": "</search>"}
    return {
        "id": "c",
        "object": "text_completion",
        "created": 0,
        "model": "m",
        "choices": [choice],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def scripted_engine(
    tokenizer, statuses: list[int], retries: int = 3, models=("m",), owned_by="vllm", text=" q </search>"
):
    """A completions engine whose HTTP answers are scripted: ``statuses`` per completion request."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            if models is None:
                return httpx.Response(404, json={"error": {"message": "no such route"}})
            if statuses and statuses[0] in (401, 403):
                return httpx.Response(statuses[0], json={"error": {"message": "bad key"}})
            return httpx.Response(
                200,
                json={
                    "object": "list",
                    "data": [{"id": m, "object": "model", "created": 0, "owned_by": owned_by} for m in models],
                },
            )
        seen.append(json.loads(request.content))
        status = statuses[min(len(seen) - 1, len(statuses) - 1)]
        if status != 200:
            return httpx.Response(status, json={"error": {"message": f"status {status}"}})
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if owned_by == "vllm" else None
        return httpx.Response(200, json=completion_body(text, ids))

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    engine = make_engine(
        "completions",
        base_url="http://teacher.test/v1",
        model="m",
        tokenizer=tokenizer,
        retries=retries,
        http_client=client,
    )
    return engine, seen


def request(tokenizer, seed=5):
    ep = start_episode("p ", tokenizer, prefill="<search>")
    return Request(ep.ids, 50, ["</search>"], ep, seed, SEARCH_R1)


def test_registry_names_every_engine():
    with pytest.raises(ValueError, match="unknown engine 'nope'; known: chat, completions, hf, reference, vllm"):
        make_engine("nope")
    make_engine("completions", base_url="http://x/v1", model="m", tokenizer=None)
    assert {"completions"} <= set(ENGINES)


def test_vllm_gets_ids_and_returns_ids(tokenizer):
    engine, seen = scripted_engine(tokenizer, [503, 500, 200])
    asyncio.run(engine.check())
    gen = asyncio.run(engine.generate(request(tokenizer)))
    assert (gen.text, gen.finish_reason, gen.n_tokens, gen.prompt_tokens) == (" q </search>", "stop", 3, 7)
    assert gen.token_ids == tokenizer(" q </search>", add_special_tokens=False)["input_ids"] and not gen.eos
    assert len(seen) == 3 and seen[-1]["seed"] == 5 and seen[-1]["return_token_ids"] is True
    assert seen[-1]["prompt"] == request(tokenizer).ids  # token ids, not text


def test_other_servers_get_text_and_no_vllm_keys(tokenizer):
    engine, seen = scripted_engine(tokenizer, [200], owned_by="openai", text=" q ")
    asyncio.run(engine.check())
    gen = asyncio.run(engine.generate(request(tokenizer)))
    assert seen[-1]["prompt"] == "p <search>"  # the episode's text
    assert not {"return_token_ids", "include_stop_str_in_output", "add_special_tokens"} & set(seen[-1])
    assert gen.token_ids is None and gen.text == " q </search>"  # the dropped stop string is put back


def test_persistent_5xx_is_unavailable_and_4xx_rejects_one_request(tokenizer):
    engine, seen = scripted_engine(tokenizer, [502], retries=2)
    with pytest.raises(EngineUnavailable, match="unavailable after 2 retries"):
        asyncio.run(engine.generate(request(tokenizer)))
    assert len(seen) == 3
    engine, seen = scripted_engine(tokenizer, [200, 400])
    asyncio.run(engine.generate(request(tokenizer)))
    with pytest.raises(RequestRejected, match=r"rejected a request \(400\)"):
        asyncio.run(engine.generate(request(tokenizer)))
    assert len(seen) == 2  # a 4xx is not retried


@pytest.mark.parametrize(
    "status, message", [(401, r"refused the credentials \(401\)"), (403, r"refused the credentials \(403\)")]
)
def test_bad_key_is_fatal_before_any_work(tokenizer, status, message):
    engine, seen = scripted_engine(tokenizer, [status])
    with pytest.raises(EngineFatal, match=message):
        asyncio.run(engine.check())
    assert not seen  # no completion was requested


def test_unknown_model_is_fatal(tokenizer):
    engine, _ = scripted_engine(tokenizer, [200], models=("other",))
    with pytest.raises(EngineFatal, match="model 'm' is not served .* it serves: other"):
        asyncio.run(engine.check())
    engine, _ = scripted_engine(tokenizer, [404], models=None)  # no /models route: the request tells
    asyncio.run(engine.check())
    with pytest.raises(EngineFatal, match=r"model 'm' not found \(404\)"):
        asyncio.run(engine.generate(request(tokenizer)))


def test_every_request_rejected_is_a_configuration_error(tokenizer):
    """A hosted API refusing every request (e.g. unknown keys) must stop the run, not write error rows."""
    engine, _ = scripted_engine(tokenizer, [400], owned_by="openai")
    for _ in range(7):
        with pytest.raises(RequestRejected):
            asyncio.run(engine.generate(request(tokenizer)))
    with pytest.raises(EngineFatal, match="rejected each of the first 8 requests"):
        asyncio.run(engine.generate(request(tokenizer)))


def test_unreachable_is_unavailable(tokenizer):
    engine = make_engine(
        "completions", base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", tokenizer=tokenizer, retries=1
    )
    with pytest.raises(EngineUnavailable, match="APIConnectionError"):
        asyncio.run(engine.generate(request(tokenizer)))
