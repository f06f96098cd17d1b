"""Fixtures for the training tests: a tiny random model of the SmolLM2 architecture with the real
tokenizer, curated sets written by hand in the core schemas (autocoa text, observations from the real
BM25 index), and a tiny model taught to make one real search call (for the RL-2 rollouts)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import coa.config
from coa.formats import get_format
from coa.prompts import PromptConfig, render_prompt
from coa.questions import DEFAULT_QUESTIONS, load_questions
from coa.tokenize import tokenize_segments
from coa.trajectory import PAIR_SCHEMA, Trajectory, segment, write_trajectories

FMT = get_format("autocoa")
# the instruction without its worked example: ~400-token prompts instead of ~600, the same format
RL_PROMPT = PromptConfig(format="autocoa", demonstrations=False)  # the format of FMT, which the fixtures write
SEARCH_QUERY = "Maria Golovin opera composer"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """One torch thread (the CI box has 2 cores shared with other work) and no params.yaml: the
    pipeline's own ``train`` section must not change what a test runs (tests write their own)."""
    torch.set_num_threads(1)
    monkeypatch.setattr(coa.config, "PARAMS_FILE", "none")


@pytest.fixture(scope="session")
def questions():
    return load_questions(DEFAULT_QUESTIONS, limit=4)


def tiny_model(tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=8192,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tokenizer):
    """A random 2-layer, 64-wide SmolLM2-architecture model + the real tokenizer, as an HF folder."""
    out = tmp_path_factory.mktemp("tiny")
    tiny_model(tokenizer).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _coa_trajectory(tokenizer, q, searcher, queries, sample=0):
    prompt = render_prompt(tokenizer, q["question"], RL_PROMPT)
    # the toolkit's prefill is its own segment: context, never trained
    segs, text = [segment("prefill", "<think>\n")], "I should look this up.\n"
    for query in queries:
        docs = searcher.search([query], 2)[0]
        segs += [
            segment("model", text + FMT.search_call(query)),
            segment("observation", FMT.observation(docs), query=query, doc_ids=[d.id for d in docs]),
        ]
        text = "The result helps.\n"
    segs.append(segment("model", text + "</think>\n\n" + FMT.answer_text(q["golden_answers"][0])))
    return Trajectory(
        question_id=q["id"],
        question=q["question"],
        golden_answers=q["golden_answers"],
        prompt=prompt,
        segments=segs,
        mode="coa",
        sample=sample,
        n_actions=len(queries),
        finish_reason="answer",
        answer=q["golden_answers"][0],
    )


@pytest.fixture(scope="session")
def sets_dir(tmp_path_factory, tokenizer, questions, searcher):
    """pairs.parquet, coa.parquet and cot.parquet as curation would write them."""
    out = tmp_path_factory.mktemp("sets")
    coa = [
        _coa_trajectory(tokenizer, questions[0], searcher, ["Maria Golovin opera", "Gian Carlo Menotti"]),
        _coa_trajectory(tokenizer, questions[1], searcher, [questions[1]["question"]]),
    ]
    cot = [
        Trajectory(
            question_id=q["id"],
            question=q["question"],
            golden_answers=q["golden_answers"],
            prompt=render_prompt(tokenizer, q["question"], PromptConfig(mode="cot", demonstrations=False)),
            mode="cot",
            segments=[
                segment(
                    "model", f"<think>\nI recall the answer.\n</think>\n\n{FMT.answer_text(q['golden_answers'][0])}"
                )
            ],
            finish_reason="answer",
            answer=q["golden_answers"][0],
        )
        for q in questions[2:4]
    ]
    write_trajectories(out / "coa.parquet", coa)
    write_trajectories(out / "cot.parquet", cot)
    pairs = []
    for i, q in enumerate(questions):
        chat = render_prompt(tokenizer, q["question"], RL_PROMPT)
        # odd rows: a prefix that ends in a space, as a cut before "<begin_search>" can (" <" is one token)
        thought = "Let me think about it.\n" if i % 2 == 0 else "Let me think about it. "
        prefix_segments = [segment("prefill", "<think>\n"), segment("model", thought)]
        prefix = chat + "<think>\n" + thought
        act = "I am not sure.\n" + FMT.search_call(q["question"][:40].strip())
        no_act = "I know this one well enough.\n</think>\n\n" + FMT.answer_text("unknown " * (i + 1))
        act_chosen = i % 2 == 0
        pairs.append(
            {
                "id": f"p{i}",
                "question_id": q["id"],
                "question": q["question"],
                "golden_answers": q["golden_answers"],
                "format": "autocoa",
                "prompt": prefix,
                "chat_prompt": chat,
                "prefix": prefix_segments,
                "chosen": act if act_chosen else no_act,
                "rejected": no_act if act_chosen else act,
                "chosen_ends_turn": not act_chosen,
                "rejected_ends_turn": act_chosen,
                "direction": "act" if act_chosen else "no_act",
                "decision_index": 1,
                "chosen_id": f"c{i}",
                "rejected_id": f"r{i}",
                "chosen_score": 1.0,
                "rejected_score": 0.0,
            }
        )
    pq.write_table(pa.Table.from_pylist(pairs, schema=PAIR_SCHEMA), out / "pairs.parquet")
    return out


@pytest.fixture(scope="session")
def searching_dir(tmp_path_factory, tokenizer, questions, searcher):
    """The tiny model taught (≈100 Adam steps, ~10 s) one trajectory of the RL prompt of question 0:
    a search call, then, after the real observation, the right answer. It reproduces it when sampled."""
    q = questions[0]
    docs = searcher.search([SEARCH_QUERY], 1)[0]
    segs = [
        segment("model", RL_PROMPT.prefill + "I need to search.\n" + FMT.search_call(SEARCH_QUERY)),
        segment("observation", FMT.observation(docs)),
        segment("model", "It was Menotti.\n</think>\n\n" + FMT.answer_text(q["golden_answers"][0])),
    ]
    tt = tokenize_segments(tokenizer, render_prompt(tokenizer, q["question"], RL_PROMPT), segs, eos=True)
    ids, labels = torch.tensor(tt.input_ids), torch.tensor(tt.labels(observation_loss=False))
    n_prefill = len(tokenizer(RL_PROMPT.prefill, add_special_tokens=False)["input_ids"])
    targets = (labels[1:] != -100).nonzero().squeeze(1)[n_prefill:]  # the prefill is given, not generated
    model = tiny_model(tokenizer, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(400):
        hidden = model.model(input_ids=ids[None]).last_hidden_state[0]
        # only the positions that predict trained tokens: the LM head over 49K words is the cost
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[targets]), ids[targets + 1])
        loss.backward()
        opt.step()
        opt.zero_grad()
        if loss.item() < 0.01:
            break
    assert loss.item() < 0.01, "the tiny model did not learn its search trajectory"
    out = tmp_path_factory.mktemp("searching")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# the tiny model's RL settings: HF generate, full fine-tuning, a KL term, EM (not the default run's vLLM + LoRA)
TINY_RL = {
    "num_generations": 2,
    "questions": None,
    "observation_tokens": 16,
    "engine": "hf",
    "lora_r": None,
    "beta": 0.001,
    "reward_metric": "em",
}


def small_train_section(runs_dir, sets_dir, small: dict, rl: dict) -> dict:
    """A params.yaml ``train`` section of one-step stages: ``small`` for every SFT stage, ``rl`` (over
    ``TINY_RL`` at temperature 0.6) for both RL stages."""
    rl = {**TINY_RL, "temperature": 0.6, **rl}
    return {
        "runs_dir": str(runs_dir),
        "sets_dir": str(sets_dir),
        "prompt": {"demonstrations": False},
        **{stage: small for stage in ("sft1", "sft2", "sft3")},
        "rl1": rl,
        "rl2": rl,
        "gradient_checkpointing": False,
        "num_threads": 1,
    }
