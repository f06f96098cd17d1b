"""Curated sets → ids: EOS placement, label masks, and the errors a user meets first."""
from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coa.trajectory import PAIR_SCHEMA, TRAJECTORY_SCHEMA, read_trajectories
from tests.train.conftest import FMT, RL_PROMPT
from train.checkpoint import load_model, load_tokenizer
from train.data import pair_dataset, read_pairs, rl_dataset, sft_dataset


def test_eos_only_after_a_continuation_that_ends_the_turn(tokenizer, sets_dir):
    dataset, stats = pair_dataset(tokenizer, sets_dir / "pairs.parquet", max_length=4096)
    rows = read_pairs(sets_dir / "pairs.parquet")
    eos = tokenizer.eos_token_id
    for row, feats in zip(rows, dataset):
        for side in ("chosen", "rejected"):
            ids = feats[f"{side}_ids"]
            text = tokenizer.decode(ids)
            if row[f"{side}_ends_turn"]:
                assert ids[-1] == eos and text == row[side] + tokenizer.eos_token
            else:
                assert eos not in ids and text == row[side] and text.endswith(FMT.search_close)
        assert tokenizer.decode(feats["prompt_ids"]) == row["prompt"]
    assert stats["chosen_ending_turn"] == sum(r["chosen_ends_turn"] for r in rows) == 2


def _trained_runs(ids: list[int], labels: list[int], tokenizer) -> list[str]:
    """Decoded text of each contiguous run of trained (label != -100) tokens."""
    runs, current = [], []
    for token, label in zip(ids, labels):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return [tokenizer.decode(r) for r in runs + ([current] if current else [])]


@pytest.mark.parametrize("observation_loss", [False, True])
def test_labels_cover_model_segments_and_observations_only_in_sft3(tokenizer, sets_dir, observation_loss):
    dataset, stats = sft_dataset(tokenizer, [sets_dir / "coa.parquet"], observation_loss, 4096, "sft")
    eos = tokenizer.eos_token
    for traj, row in zip(read_trajectories(sets_dir / "coa.parquet"), dataset):
        runs = _trained_runs(row["input_ids"], row["labels"], tokenizer)
        assert traj.segments[0]["kind"] == "prefill"  # toolkit-written: context in SFT exactly as in RL
        if observation_loss:  # sft3: everything after the prompt and the prefill
            assert runs == [traj.completion.removeprefix(traj.segments[0]["text"]) + eos]
        else:  # sft2: each model segment, the last with the end token; never a prompt or observation token
            model_texts = [s["text"] for s in traj.segments if s["kind"] == "model"]
            assert runs == model_texts[:-1] + [model_texts[-1] + eos]
            assert not any(FMT.result_open in r for r in runs)
    assert stats["observation_tokens"] > 0
    assert stats["trained_tokens"] == stats["model_tokens"] + observation_loss * stats["observation_tokens"]


def test_too_long_examples_are_dropped_and_counted(tokenizer, sets_dir):
    lengths = sorted(len(r["input_ids"]) for r in
                     sft_dataset(tokenizer, [sets_dir / "cot.parquet"], False, 4096, "sft2")[0])
    dataset, stats = sft_dataset(tokenizer, [sets_dir / "cot.parquet"], False, lengths[0], "sft2")
    kept = sum(n <= lengths[0] for n in lengths)
    assert len(dataset) == kept and stats["dropped_too_long"] == len(lengths) - kept == 1
    with pytest.raises(ValueError, match="every trajectory is longer than max_length=10"):
        sft_dataset(tokenizer, [sets_dir / "cot.parquet"], False, 10, "sft2")


def test_missing_set(tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sft2: set not found: .*coa.parquet \(curated sets"):
        sft_dataset(tokenizer, [tmp_path / "coa.parquet"], False, 4096, "sft2")
    with pytest.raises(FileNotFoundError, match="sft1: set not found"):
        pair_dataset(tokenizer, tmp_path / "pairs.parquet", 4096)


def test_empty_set(tokenizer, tmp_path):
    pq.write_table(TRAJECTORY_SCHEMA.empty_table(), tmp_path / "coa.parquet")
    pq.write_table(PAIR_SCHEMA.empty_table(), tmp_path / "pairs.parquet")
    with pytest.raises(ValueError, match=r"sft3: .*coa.parquet has no rows; an empty set cannot be trained on"):
        sft_dataset(tokenizer, [tmp_path / "coa.parquet"], True, 4096, "sft3")
    with pytest.raises(ValueError, match=r"sft1: .*pairs.parquet has no rows"):
        pair_dataset(tokenizer, tmp_path / "pairs.parquet", 4096)


def test_bad_rows_name_file_row_and_field(tokenizer, sets_dir, tmp_path):
    table = pq.read_table(sets_dir / "pairs.parquet").to_pylist()
    table[2]["chosen"] = ""
    pq.write_table(pa.Table.from_pylist(table, schema=PAIR_SCHEMA), tmp_path / "pairs.parquet")
    with pytest.raises(ValueError, match=r"pairs.parquet: row 3: field 'chosen' must be a non-empty str"):
        pair_dataset(tokenizer, tmp_path / "pairs.parquet", 4096)
    pq.write_table(pq.read_table(sets_dir / "pairs.parquet").drop(["rejected_ends_turn"]), tmp_path / "p2.parquet")
    with pytest.raises(ValueError, match=r"p2.parquet: missing pair columns \['rejected_ends_turn'\]"):
        pair_dataset(tokenizer, tmp_path / "p2.parquet", 4096)


@pytest.mark.slow
def test_checkpoint_with_another_tokenizer_is_refused(tiny_dir, model_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_dir, other)
    tok = load_tokenizer(other, model_dir)  # the same tokenizer passes
    tok.add_tokens(["<extra_tool_token>"])
    tok.save_pretrained(other)
    with pytest.raises(ValueError, match=r"has another tokenizer than the base model .* \(different vocabulary\)"):
        load_tokenizer(other, model_dir)


def test_a_model_smaller_than_its_tokenizer_is_refused(tokenizer, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=1000, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="the model has 1000 embeddings but its tokenizer 49152 tokens"):
        load_model(tmp_path, tokenizer)


def test_rl_prompts_are_rendered_chat_prompts(tokenizer, questions):
    dataset = rl_dataset(tokenizer, None, 2, RL_PROMPT)
    assert [r["question_id"] for r in dataset] == [q["id"] for q in questions[:2]]
    assert dataset[0]["prompt"].endswith("<|im_start|>assistant\n") and questions[0]["question"] in dataset[0]["prompt"]
    assert dataset[1]["golden_answers"] == questions[1]["golden_answers"]


def test_pair_context_is_tokenised_segment_by_segment(tokenizer, sets_dir):
    """The shared context is the chat prompt then each prefix segment, exactly as the policy saw it; a prefix
    ending in a space keeps its own " " token instead of merging with the continuation's first word."""
    from coa.tokenize import tokenize_segments
    from train.data import pair_features

    rows = read_pairs(sets_dir / "pairs.parquet")
    spaced = [r for r in rows if r["prefix"][-1]["text"].endswith(" ")]
    assert spaced and len(spaced) < len(rows)
    for row in rows:
        feats = pair_features(tokenizer, row)
        assert feats["prompt_ids"] == tokenize_segments(tokenizer, row["chat_prompt"], row["prefix"]).input_ids
        assert tokenizer.decode(feats["prompt_ids"]) == row["prompt"]
    row = spaced[0]
    naive = tokenizer(row["prompt"] + row["chosen"], add_special_tokens=False)["input_ids"]
    feats = pair_features(tokenizer, row)
    assert feats["prompt_ids"] + feats["chosen_ids"] != naive  # re-tokenising the joined string would shift it
    with pytest.raises(ValueError, match="field 'prompt' is not chat_prompt"):
        pair_features(tokenizer, row | {"prompt": row["prompt"] + "x"})
