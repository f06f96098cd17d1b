"""RL-1/RL-2 through TRL's GRPOTrainer and the agent loop, with the real BM25 index.

The policy is the tiny model taught one search trajectory (``searching_dir``): sampled at a low
temperature it writes a search call, so the real environment is exercised end to end.
"""

from __future__ import annotations

import json

import pytest
import torch

from coa.engines.vllm import CPU_BLOCK_SIZE
from coa.environment import SearchEnvConfig
from coa.score import exact_match
from coa.tokenize import encode
from tests.train.conftest import FMT, RL_PROMPT, SEARCH_QUERY, TINY_RL
from train.bf16_weights import Bf16Weights
from train.checkpoint import load_model, load_tokenizer
from train.config import RL1Config, RL2Config, TrainConfig
from train.data import rl_dataset
from train.rewards import make_rewards
from train.rl import build_rl_trainer, grpo_config, rollout_budget


class RecordingSearcher:
    """The real searcher, with every call and its result kept."""

    name = "recording"

    def __init__(self, searcher):
        self.searcher, self.calls = searcher, []

    def search(self, queries, k):
        docs = self.searcher.search(queries, k)
        self.calls.append((list(queries), k, docs))
        return docs


def parity(completions, **kwargs):
    """Differs inside every group, so advantages, hence gradients, are not zero."""
    return [float(i % 2) for i in range(len(completions))]


def _trainer(stage_cls, policy_dir, model_dir, out, searcher, temperature=0.3, cfg_settings=None, **stage_settings):
    tok = load_tokenizer(policy_dir, model_dir)
    stage = stage_cls(
        **{
            **TINY_RL,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "max_steps": 1,
            "learning_rate": 1e-3,
            "temperature": temperature,
            **stage_settings,
        }
    )
    cfg = TrainConfig(
        format="autocoa", prompt=RL_PROMPT, search=SearchEnvConfig(max_tokens=64, topk=1), **(cfg_settings or {})
    )
    dataset = rl_dataset(tok, None, 1, RL_PROMPT)
    rewards = make_rewards(
        stage.reward_metric, stage.format_penalty, "autocoa", evidence_reward=stage.evidence_reward
    ) + [parity]
    trainer = build_rl_trainer(
        cfg, stage, load_model(policy_dir, tok), tok, dataset, out, reward_funcs=rewards, searcher=searcher
    )
    rollouts = []
    rollout = trainer.rollout_func

    def spy(prompts, trainer):
        rollouts.append(rollout(prompts, trainer))
        return rollouts[-1]

    spy.policy_engine = rollout.policy_engine
    trainer.rollout_func = spy
    return trainer, tok, dataset, rollouts


def _check_rewards(logged: dict, rollout, golds):
    """The logged per-function rewards equal the specification recomputed from the trajectories."""
    em = [exact_match(FMT.extract_answer(t), g) for t, g in zip(rollout["trajectory"], golds)]
    well_formed = [FMT.parse(t).well_formed for t in rollout["trajectory"]]
    assert logged["rewards/correctness/mean"] == sum(em) / len(em)
    assert logged["rewards/format_term/mean"] == -sum(not w for w in well_formed) / len(well_formed)
    return em, well_formed


@pytest.mark.slow
def test_rl2_searches_inserts_masks_and_rewards(searching_dir, model_dir, searcher, questions, tmp_path):
    recorder = RecordingSearcher(searcher)
    trainer, tok, dataset, rollouts = _trainer(
        RL2Config, searching_dir, model_dir, tmp_path, recorder, evidence_reward=0.5
    )
    trainer.model.train()  # as inside trainer.train(): metrics are logged under "train"
    inputs = trainer._generate_and_score_completions([dict(dataset[0]) for _ in range(2)])
    out = rollouts[-1]

    # the environment was really called, with the policy's query, and its result inserted verbatim
    assert recorder.calls and recorder.calls[0][0] == [SEARCH_QUERY, SEARCH_QUERY] and recorder.calls[0][1] == 1
    for row, (trajectory, ids, mask) in enumerate(zip(out["trajectory"], out["completion_ids"], out["env_mask"])):
        observation = FMT.observation(recorder.calls[0][2][row])
        assert observation in trajectory and out["n_actions"][row] == 1
        assert trajectory.startswith(RL_PROMPT.prefill) and FMT.parse(trajectory).queries == (SEARCH_QUERY,)
        env_ids = [t for t, m in zip(ids, mask) if m == 0]
        assert env_ids == encode(tok, observation) and tok.decode(env_ids) == observation
        assert tok.decode([t for t, m in zip(ids, mask) if m == 1]).startswith("I need to search.")
        assert inputs["tool_mask"][row, : len(mask)].tolist() == mask  # TRL's loss mask factor
    records = [json.loads(line) for line in open(tmp_path / "rollouts.jsonl")]  # actions per rollout
    assert [(r["n_actions"], r["queries"], r["observation_tokens"]) for r in records] == [
        (1, [SEARCH_QUERY], m.count(0)) for m in out["env_mask"]
    ]

    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    em, well_formed = _check_rewards(logged, out, [q["golden_answers"] for q in questions[:1]] * 2)
    assert em == [1.0, 1.0] and all(well_formed)  # the taught trajectory answers right
    assert logged["agent/actions"] == logged["agent/written_searches"] == 1
    # the evidence term reads the dataset's evidence ids and the ids the search returned to each rollout
    gold = set(dataset[0]["evidence_ids"])
    found = [len(gold & {d.id for d in docs}) / len(gold) for docs in recorder.calls[0][2]]
    assert gold and out["retrieved_ids"] == [[d.id for d in docs] for docs in recorder.calls[0][2]]
    assert sum(found) > 0 and logged["rewards/evidence_term/mean"] == pytest.approx(0.5 * sum(found) / len(found))

    # observation tokens contribute no gradient: the final hidden state that predicts a token only feeds that
    # token's log-prob, so its gradient is zero exactly when the token is out of the loss
    captured = {}

    def keep(module, args, output):
        output.retain_grad()
        captured["hidden"] = output

    hook = trainer.model.model.norm.register_forward_hook(keep)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop otherwise
    trainer.compute_loss(trainer.model, inputs).backward()
    hook.remove()
    grad = captured["hidden"].grad.norm(dim=-1)  # (batch, prompt + completion)
    start = inputs["prompt_ids"].shape[1] - 1
    predicting = grad[:, start : start + inputs["completion_ids"].shape[1]]  # position i predicts completion token i
    live = inputs["completion_mask"].bool()
    env = inputs["tool_mask"].bool()
    assert (predicting[live & ~env] == 0).all()
    assert (live & ~env).sum() == sum(m.count(0) for m in out["env_mask"]) > 0
    assert (predicting[live & env] > 0).any()


@pytest.mark.slow
def test_rl1_opens_the_observation_and_the_policy_writes_it(searching_dir, model_dir, searcher, questions, tmp_path):
    recorder = RecordingSearcher(searcher)
    trainer, tok, dataset, rollouts = _trainer(
        RL1Config, searching_dir, model_dir, tmp_path, recorder, observation_tokens=16
    )
    # the written observations get the room real ones take outside max_tokens: 64 + 3 searches x 16
    assert trainer.args.max_completion_length == 64 + SearchEnvConfig().max_actions * 16
    trainer.model.train()
    trainer._generate_and_score_completions([dict(dataset[0]) for _ in range(2)])
    out = rollouts[-1]
    assert recorder.calls == []  # the simulated environment never searches
    opening = encode(tok, FMT.observation_opening)
    for trajectory, ids, mask in zip(out["trajectory"], out["completion_ids"], out["env_mask"]):
        # the only tokens out of the loss are the environment's observation openings, one per search call
        calls = FMT.parse(trajectory).n_actions
        assert calls >= 1 and mask.count(0) == len(opening) * min(calls, SearchEnvConfig().max_actions)
        first = mask.index(0)
        assert ids[first : first + len(opening)] == opening and mask[first : first + len(opening)] == [0] * len(opening)
        assert len(ids) - mask.count(0) <= trainer.args.max_completion_length
        search_end = trajectory.index(FMT.search_close) + len(FMT.search_close)
        assert trajectory[search_end:].startswith(FMT.observation_opening)
        assert len(trajectory) > search_end + len(FMT.observation_opening)  # the policy went on writing
        assert trajectory == RL_PROMPT.prefill + tok.decode(ids, skip_special_tokens=True)
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    _check_rewards(logged, out, [q["golden_answers"] for q in questions[:1]] * 2)
    # nothing was searched; every call was answered by an opening, and the log counts the policy's calls
    assert logged["agent/actions"] == sum(m.count(0) for m in out["env_mask"]) / len(opening) / 2
    assert logged["agent/written_searches"] == sum(FMT.parse(t).n_actions for t in out["trajectory"]) / 2 >= 1
    assert "agent/written_observations" in logged


def test_only_the_simulated_environment_budgets_written_observations():
    cfg = TrainConfig(search=SearchEnvConfig(max_tokens=320, max_actions=3))
    assert rollout_budget(cfg, RL1Config(observation_tokens=400)).max_tokens == 320 + 3 * 400
    assert rollout_budget(cfg, RL2Config(observation_tokens=400)).max_tokens == 320  # real ones are extra
    assert rollout_budget(cfg, RL1Config(observation_tokens=400)).max_actions == 3
    with pytest.raises(ValueError, match="observation_tokens"):
        RL1Config(observation_tokens=-1)


def test_the_reward_scale_reaches_grpo_and_an_unknown_one_is_refused(tmp_path):
    assert grpo_config(TrainConfig(), RL2Config(), tmp_path).scale_rewards == "group"  # TRL's and the paper's
    assert grpo_config(TrainConfig(), RL2Config(scale_rewards="none"), tmp_path).scale_rewards == "none"
    assert grpo_config(TrainConfig(), RL1Config(scale_rewards="batch"), tmp_path).scale_rewards == "batch"
    with pytest.raises(ValueError, match=r"rl2\.scale_rewards must be one of group, batch, none; got 'std'"):
        RL2Config(scale_rewards="std")


def test_the_stages_reward_settings_reach_its_reward_functions(monkeypatch, tmp_path):
    import train.rl

    built = []

    def recording(*args):
        built.append(args)
        raise RuntimeError("recorded")

    monkeypatch.setattr(train.rl, "make_rewards", recording)
    stage = RL1Config(evidence_reward=0.2, evidence_gate="answer", echo_penalty=0.3, failed_call_penalty=0.1)
    with pytest.raises(RuntimeError, match="recorded"):
        build_rl_trainer(TrainConfig(format="autocoa"), stage, None, None, None, tmp_path)
    (args,) = built
    assert args == (stage.reward_metric, stage.format_penalty, "autocoa", 0.1, stage.judge, 0.2, "answer", 0.3)
    assert make_rewards(*args)[-1].func.__name__ == "echo_term"


@pytest.mark.parametrize("stage_cls", [RL1Config, RL2Config])
@pytest.mark.slow
def test_a_step_changes_every_parameter(stage_cls, tiny_dir, model_dir, searcher, tmp_path):
    # identical completions with opposite advantages cancel, so the random model sampled at temperature 1
    # (all completions differ) is the policy here
    trainer, _, _, rollouts = _trainer(stage_cls, tiny_dir, model_dir, tmp_path, searcher, temperature=1.0)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert len({tuple(ids) for ids in rollouts[-1]["completion_ids"]}) == 2
    for name, param in trainer.model.named_parameters():
        assert not torch.equal(param, before[name]), f"{name} did not change"


@pytest.mark.slow
def test_lora_rl_in_bf16_rounds_the_frozen_base_once_and_the_adapter_every_step(
    tiny_dir, model_dir, searcher, tmp_path
):
    """On a CPU in bf16 the RL stages multiply with bf16 weight copies (train.bf16_weights): LoRA's frozen base is
    rounded once, not cast in every forward of every rollout and loss, and the adapter is rounded after each step."""
    trainer, *_ = _trainer(
        RL1Config, tiny_dir, model_dir, tmp_path, searcher, temperature=1.0, lora_r=4, max_steps=2,
        cfg_settings={"bf16": True},
    )  # fmt: skip
    [copies] = [c for c in trainer.callback_handler.callbacks if isinstance(c, Bf16Weights)]
    rounded, refresh = [], copies.refresh

    def spy():
        refresh()
        rounded.append(dict(copies.copies))

    copies.refresh = spy
    modules = dict(trainer.model.named_modules())
    base = [m.weight for n, m in modules.items() if n.endswith(".base_layer")]
    adapter = [m.weight for n, m in modules.items() if ".lora_" in n and isinstance(m, torch.nn.Linear)]
    assert base and adapter and all(not w.requires_grad for w in base)
    before = [w.detach().clone() for w in adapter]
    trainer.train()
    assert len(rounded) == 2  # once per optimizer step
    first, second = rounded
    assert all(first[id(w)] is second[id(w)] and first[id(w)].dtype == torch.bfloat16 for w in base)
    assert all(first[id(w)] is not second[id(w)] for w in adapter)
    assert all(not torch.equal(w, b) for w, b in zip(adapter, before))  # the adapter trained through its copies


@pytest.mark.model
@pytest.mark.server
@pytest.mark.slow
def test_vllm_engine_rollouts_sync_every_step_and_train(model_dir, searcher, tmp_path):
    """rl1 on the vLLM engine (in-process, CPU) with the real 135M policy: the engine's sampling log-probs
    travel with the ids, the policy's weights reach the engine before the second step, the weights move.
    (vLLM's CPU attention has no kernel for the tiny model's head size; the engine's log-prob parity and
    real-search rollouts are tested in test_vllm_engine.py.)"""
    trainer, tok, _, rollouts = _trainer(
        RL1Config, model_dir, model_dir, tmp_path, searcher, temperature=1.0, engine="vllm", max_steps=2
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    syncs = [h["agent/weight_syncs"] for h in trainer.state.log_history if "agent/weight_syncs" in h]
    assert syncs == [0.0, 1.0]  # synced before step 2
    engine = trainer.rollout_func.policy_engine.engine.llm.llm_engine  # the stage's KV cache, not vLLM's default
    assert engine.vllm_config.cache_config.kv_cache_memory_bytes == int(RL1Config.kv_cache_gib * 2**30)
    assert engine.vllm_config.cache_config.block_size == CPU_BLOCK_SIZE  # not vLLM's 128 on CPU
    for out in rollouts:
        assert out["logprobs"] is not None
        for ids, mask, logprobs in zip(out["completion_ids"], out["env_mask"], out["logprobs"]):
            assert len(ids) == len(mask) == len(logprobs) and all(lp <= 0 for lp in logprobs)
            assert sum(lp < 0 for lp in logprobs) > len(logprobs) // 2  # sampled tokens carry their log-prob
    moved = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before), "a parameter did not change"


@pytest.mark.model
@pytest.mark.server
@pytest.mark.slow
def test_lora_rl_moves_only_the_adapter_and_the_engine_serves_the_merged_policy(model_dir, tmp_path):
    from train.rollout import policy_weights

    tok = load_tokenizer(model_dir, model_dir)
    stage = RL1Config(
        num_generations=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        max_steps=2,
        learning_rate=1e-2,
        temperature=1.0,
        questions=None,
        engine="vllm",
        observation_tokens=16,
        lora_r=None,
    )
    # float32 on both sides (bf16 would round the engine's weights), the top-level rank 4
    cfg = TrainConfig(
        format="autocoa",
        prompt=RL_PROMPT,
        search=SearchEnvConfig(max_tokens=32, topk=1),
        lora_r=4,
        lora_alpha=8,
        bf16=False,
    )
    rewards = make_rewards(stage.reward_metric, stage.format_penalty, "autocoa") + [parity]
    trainer = build_rl_trainer(
        cfg, stage, load_model(model_dir, tok), tok, rl_dataset(tok, None, 1, RL_PROMPT), tmp_path, reward_funcs=rewards
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)  # the base weights stay as they were
    engine = trainer.rollout_func.policy_engine.engine
    assert engine.syncs == 1
    engine.sync_weights(policy_weights(trainer))  # the adapter merged into the weights the engine gets
    ids = encode(tok, "<|im_start|>user\nWho wrote Maria Golovin?<|im_end|>\n<|im_start|>assistant\n<think>\nI search.")
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.merge_adapter()
    try:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    finally:
        model.unmerge_adapter()
    mine = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0][5:].tolist()
    served = engine.sequence_logprobs(ids, 6)
    gap = sum(abs(a - b) for a, b in zip(mine, served)) / len(mine)
    assert gap <= 1e-3, f"engine vs merged LoRA policy: mean abs log-prob gap {gap:.2e}"


def test_forward_passes_trim_the_padding_no_row_uses(tiny_dir, model_dir, searcher, tmp_path):
    """TRL pads a generation batch to its longest prompt and completion; each chunk runs at its own length,
    and a row's log-probs equal those of the row alone without padding (zeros where the row has no token)."""
    from trl import GRPOTrainer

    trainer, _, _, _ = _trainer(RL2Config, tiny_dir, model_dir, tmp_path, searcher)
    pad = trainer.processing_class.pad_token_id
    short_prompt, short_completion = [5, 6, 7], [8, 9]
    long_prompt, long_completion = [11, 12, 13, 14, 15], [16, 17, 18, 19, 20, 21]
    # left-padded prompts, right-padded completions, as TRL builds them
    ids = torch.tensor([[pad, pad] + short_prompt + short_completion + [pad] * 4, long_prompt + long_completion])
    mask = torch.tensor([[0, 0] + [1] * 5 + [0] * 4, [1] * 11])
    seen = []
    forward = trainer.model.forward

    def spy(*args, **kwargs):
        seen.append(kwargs["input_ids"].shape[1])
        return forward(*args, **kwargs)

    trainer.model.forward = spy
    logps, entropies, _ = trainer._get_per_token_logps_and_entropies(
        trainer.model, ids, mask, 6, batch_size=1, compute_entropy=True
    )
    trainer.model.forward = forward
    assert seen == [5, 11]  # the short row ran at its own 3 + 2 tokens
    assert logps.shape == entropies.shape == (2, 6) and (logps[0, 2:] == 0).all() and (entropies[0, 2:] == 0).all()
    for row, (prompt, completion) in enumerate([(short_prompt, short_completion), (long_prompt, long_completion)]):
        alone = torch.tensor([prompt + completion])
        expected, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(
            trainer, trainer.model, alone, torch.ones_like(alone), len(completion)
        )
        assert torch.allclose(logps[row, : len(completion)], expected[0], atol=1e-5)


@pytest.mark.slow
def test_the_fused_lm_head_runs_in_small_token_tiles_on_cpu_with_the_same_results(
    tiny_dir, model_dir, searcher, tmp_path, monkeypatch
):
    """On CPU the RL trainer runs GRPOTrainer's fused LM head over ``CPU_TOKEN_TILE`` tokens at a time (TRL's
    4,096-token tiles hold ~5 tile-sized temporaries: +0.85 GB at 1,300 tokens). Log-probs, entropies and the
    gradients they give equal those of TRL's own tiles on a sequence that spans three of ours."""
    from trl.kernels import chunked_logprob

    from train.trl_glue import CPU_TOKEN_TILE

    trainer, _, _, _ = _trainer(RL2Config, tiny_dir, model_dir, tmp_path, searcher)
    assert chunked_logprob.TOKEN_CHUNK_SIZE == CPU_TOKEN_TILE
    length = 2 * CPU_TOKEN_TILE + 37
    ids = torch.randint(100, 30000, (1, length), generator=torch.Generator().manual_seed(0))
    scored = length - 20

    def forward_backward(tile):
        monkeypatch.setattr(chunked_logprob, "TOKEN_CHUNK_SIZE", tile)
        trainer.model.zero_grad(set_to_none=True)
        logps, entropies, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, torch.ones_like(ids), scored, compute_entropy=True
        )
        (logps.mean() + entropies.mean()).backward()
        grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
        return logps.detach(), entropies.detach(), grads

    ours, theirs = forward_backward(CPU_TOKEN_TILE), forward_backward(4096)
    assert ours[0].shape == (1, scored) and ours[2] and ours[2].keys() == theirs[2].keys()
    assert torch.allclose(ours[0], theirs[0], atol=1e-5) and torch.allclose(ours[1], theirs[1], atol=1e-5)
    for name, grad in ours[2].items():
        assert torch.allclose(grad, theirs[2][name], atol=1e-6, rtol=1e-4), name
