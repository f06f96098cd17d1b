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
    lengths = sorted(
        len(r["input_ids"]) for r in sft_dataset(tokenizer, [sets_dir / "cot.parquet"], False, 4096, "sft2")[0]
    )
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

    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
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


def test_the_length_cut_reports_searches_of_kept_and_dropped_sequences(tokenizer, sets_dir):
    """The fixture's CoA trajectories made 2 and 1 searches, its CoT ones none; a limit just under the
    two-search trajectory drops it alone, and the stats say so in sequences, tokens and searches."""
    paths = [sets_dir / "coa.parquet", sets_dir / "cot.parquet"]
    every, _ = sft_dataset(tokenizer, paths, False, 4096, "sft2")
    lengths = [len(r["input_ids"]) for r in every]
    searches = [t.n_actions for name in ("coa", "cot") for t in read_trajectories(sets_dir / f"{name}.parquet")]
    assert sorted(searches) == [0, 0, 1, 2] and max(lengths) == lengths[searches.index(2)]
    limit = sorted(lengths)[-2]
    dataset, stats = sft_dataset(tokenizer, paths, False, limit, "sft2")
    assert len(dataset) == 3 and stats["dropped_too_long"] == 1
    assert stats["searches_per_kept"] == round(1 / 3, 4) and stats["searches_per_dropped"] == 2.0
    assert stats["multi_search_kept"] == 0 and stats["multi_search_dropped"] == 1
    assert stats["truncation_fraction"] == 0.25
    assert stats["truncation_token_fraction"] == round(max(lengths) / sum(lengths), 6)
    assert sft_dataset(tokenizer, paths, False, 4096, "sft2")[1]["searches_per_dropped"] is None


def test_pair_stats_count_the_context_each_pair_computes_twice(tokenizer, sets_dir):
    dataset, stats = pair_dataset(tokenizer, sets_dir / "pairs.parquet", max_length=4096)
    context = sum(len(r["prompt_ids"]) for r in dataset)
    total = sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in dataset)
    assert stats["prompt_tokens"] == context and stats["repeated_prompt_fraction"] == round(context / total, 6)
    assert stats["truncation_fraction"] == stats["truncation_token_fraction"] == 0.0


def _sft_trainer(tiny_dir, model_dir, sets_dir, out, **stage):
    from train.config import SFT2Config, TrainConfig
    from train.sft import build_sft_trainer

    tok = load_tokenizer(tiny_dir, model_dir)
    settings = SFT2Config(max_steps=1, max_length=4096, **stage)
    dataset, _ = sft_dataset(tok, [sets_dir / name for name in settings.data], False, 4096, "sft2")
    return build_sft_trainer(TrainConfig(bf16=False), settings, load_model(tiny_dir, tok), tok, dataset, out), dataset


def test_packed_rows_keep_each_sequence_to_itself(tiny_dir, model_dir, sets_dir, tmp_path):
    """packing=true: whole sequences side by side, position ids from 0 for each, labels as built; every token's
    log-probs equal those of its sequence run alone (no attention across a boundary), and the trainer counts
    no padding."""
    import torch

    trainer, dataset = _sft_trainer(
        tiny_dir, model_dir, sets_dir, tmp_path, packing=True, per_device_train_batch_size=1
    )
    model, by_ids = trainer.model.eval(), {tuple(r["input_ids"]): r["labels"] for r in dataset}
    seen = []
    for batch in trainer.get_train_dataloader():
        positions = batch["position_ids"][0]
        starts = (positions == 0).nonzero().flatten().tolist() + [len(positions)]
        with torch.no_grad():
            packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0].log_softmax(-1)
            for a, b in zip(starts, starts[1:]):
                ids = batch["input_ids"][0, a:b]
                labels = by_ids[tuple(ids.tolist())]  # a whole sequence of the set, never a cut one
                assert positions[a:b].tolist() == list(range(b - a))
                assert batch["labels"][0, a + 1 : b].tolist() == labels[1:]  # TRL masks each sequence's first token
                alone = model(input_ids=ids[None]).logits[0].log_softmax(-1)
                assert torch.allclose(packed[a:b], alone, atol=1e-4)
                seen.append(tuple(ids.tolist()))
        trainer.compute_loss(model, batch)
    assert sorted(seen) == sorted(by_ids)
    assert any(len(r) > 1 for r in trainer.train_dataset["seq_lengths"])  # a row holds several sequences
    assert trainer.tokens.summary()["padding_fraction"] == 0.0 and trainer.tokens.real == sum(map(len, by_ids))


def test_the_trainer_counts_padding_in_each_micro_batch(tiny_dir, model_dir, sets_dir, tmp_path):
    trainer, _ = _sft_trainer(tiny_dir, model_dir, sets_dir, tmp_path, per_device_train_batch_size=2)
    computed = real = 0
    for batch in trainer.get_train_dataloader():
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        computed, real = computed + len(lengths) * max(lengths), real + sum(lengths)
        trainer.compute_loss(trainer.model, batch)
    counted = trainer.tokens.summary()
    assert (counted["computed_tokens"], counted["real_tokens"]) == (computed, real) and computed > real
    assert counted["padding_fraction"] == round(1 - real / computed, 6)


def test_pair_batches_are_counted_as_cpo_computes_them(tiny_dir, model_dir, sets_dir, tmp_path):
    """SFT-1 runs each pair's prompt once and its two continuations together, padded to the longer: the count takes
    the prompt once and the padding between the two sides. Without the shared prompt (gradient checkpointing) the
    count takes the mask CPO builds (``pair_mask``)."""
    import torch

    from train.config import SFT1Config, TrainConfig
    from train.preference import build_sft1_trainer
    from train.trl_glue import pair_mask

    tok = load_tokenizer(tiny_dir, model_dir)
    dataset, _ = pair_dataset(tok, sets_dir / "pairs.parquet", 4096)
    cfg = TrainConfig(bf16=False, sft1=SFT1Config(per_device_train_batch_size=1, max_steps=1))
    trainer = build_sft1_trainer(cfg, load_model(tiny_dir, tok), tok, dataset, tmp_path)
    for batch in trainer.get_train_dataloader():
        built = trainer.concatenated_inputs(batch, padding_value=tok.pad_token_id)["concatenated_attention_mask"]
        assert torch.equal(pair_mask(batch), built)
        with torch.no_grad():
            trainer.concatenated_forward(trainer.model, batch)
    sides = [(len(r["prompt_ids"]), len(r["chosen_ids"]), len(r["rejected_ids"])) for r in dataset]
    assert trainer.tokens.computed == sum(p + 2 * max(c, r) for p, c, r in sides)
    assert trainer.tokens.real == sum(map(sum, sides)) and trainer.tokens.backward == 0
