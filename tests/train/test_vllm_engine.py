"""The vLLM rollout engine (in-process, CPU here) against the policy it serves: after an optimizer step
and a weight sync, the engine scores a fixed completion as the policy's own forward pass does, and a
rollout's ids continue exactly from prompt + prefill + generated + observation ids."""

from __future__ import annotations

import pytest
import torch

from coa.agent import Budget, drive, start_episode
from coa.formats import SEARCH_R1
from coa.tokenize import encode, tokenize_segments

pytestmark = [pytest.mark.model, pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def engine(model_dir):
    from coa.engines import make_engine

    engine = make_engine("vllm", model=str(model_dir), temperature=0.0)
    yield engine


def policy_logprobs(model, ids: list[int], start: int) -> list[float]:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    return logp[start - 1 :].tolist()


def test_engine_matches_the_policy_after_a_step_and_a_sync(engine, model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompt = encode(
        tokenizer, "<|im_start|>user\nWho wrote the opera Maria Golovin?<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = prompt + encode(tokenizer, "<think>\nI will search.\n</think>\n<search> Maria Golovin </search>")
    before = engine.sequence_logprobs(ids, len(prompt))
    # one optimizer step that raises the completion's likelihood
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.05)
    logits = policy(torch.tensor([ids])).logits[0, :-1]
    loss = -torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[len(prompt) - 1 :].mean()
    loss.backward()
    optimizer.step()
    mine = policy_logprobs(policy, ids, len(prompt))
    stale = sum(abs(a - b) for a, b in zip(before, mine)) / len(mine)
    engine.sync_weights(policy.state_dict().items())
    after = engine.sequence_logprobs(ids, len(prompt))
    gap = sum(abs(a - b) for a, b in zip(after, mine)) / len(mine)
    assert stale > 0.01  # the step moved the policy away from what the engine served ...
    assert gap <= 1e-3, (
        f"engine vs policy mean abs log-prob gap {gap:.2e} after the sync"
    )  # ... and the sync brought it back
    engine.sync_weights(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict().items())
    assert engine.sequence_logprobs(ids, len(prompt)) == pytest.approx(before, abs=1e-4)  # the model's own again


def test_rollout_ids_continue_exactly(engine, searcher, tokenizer, questions):
    from coa.prompts import PromptConfig, render_prompt

    cfg = PromptConfig(format="search_r1", mode="coa", demonstrations=True, prefill="<think>\n")
    episodes = [
        start_episode(render_prompt(tokenizer, q["question"], cfg), tokenizer, prefill=cfg.prefill)
        for q in questions[:4]
    ]
    drive(episodes, engine, searcher, SEARCH_R1, Budget(max_actions=1, max_tokens=96, topk=1))
    searched = [ep for ep in episodes if ep.n_actions]
    assert searched, [ep.completion for ep in episodes]
    for ep in episodes:
        assert ep.ids == tokenize_segments(tokenizer, ep.prompt, ep.segments).input_ids
        r = ep.rollout()
        expected_mask = [int(s["kind"] == "model") for s in ep.segments[1:] for _ in s["token_ids"]] + [1] * ep.eos
        assert r["env_mask"] == expected_mask  # env_mask exact: 0 on every observation token, 1 on the model's
        for seg in ep.segments[1:]:
            if seg["kind"] == "observation":
                assert seg["token_ids"] == encode(tokenizer, seg["text"])
        assert any(lp != 0.0 for lp, m in zip(r["logprobs"], r["env_mask"]) if m)  # sampling log-probs travel


def test_an_episode_goes_on_while_another_still_decodes(engine, tokenizer):
    """Continuous batching: a short generation's follow-ups run while a long one that started with it still
    decodes (a batch that waited for its longest generation would answer them after it), and each answer is
    the one a batch of its own gives."""
    import asyncio

    from coa.engines import Request

    prompt = encode(tokenizer, "<|im_start|>user\nCount from 1 to 100.<|im_end|>\n<|im_start|>assistant\n1, 2, 3,")
    finished, answers = [], {}

    async def episode(name: str, lengths: list[int]) -> None:
        ids = prompt
        for i, n in enumerate(lengths):
            gen = await engine.generate(Request(ids, n, [], None))
            finished.append(f"{name}{i}")
            answers[f"{name}{i}"] = (ids, n, gen.token_ids)  # prompt, max tokens, generated ids
            ids = ids + gen.token_ids

    async def both() -> None:
        await asyncio.gather(episode("long", [64]), episode("short", [2, 2, 2]))

    asyncio.run(both())
    assert len(answers["long0"][2]) == 64  # it really decoded 64 steps
    assert finished.index("short2") < finished.index("long0"), finished
    for name, (ids, n, token_ids) in answers.items():
        assert engine.generate_batch([Request(ids, n, [], None)])[0].token_ids == token_ids, name
