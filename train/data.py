"""Curated sets → token ids the trainers use as is.

* pairs (SFT-1): ``prompt`` / ``chosen`` / ``rejected`` tokenised separately (``coa.tokenize.encode``);
  EOS is appended to a continuation only when it ends the turn (``*_ends_turn``), so a continuation that
  stops at the search-close tag never learns to end the answer there.
* trajectories (SFT-2/3): ``coa.tokenize.tokenize_segments(..., eos=True)`` with ``labels(observation_loss)``:
  the prompt is always masked, observation segments unless ``observation_loss``.
* questions (RL): the chat prompt rendered by ``coa.prompts.render_prompt``; the prefill is added by the
  rollout (it is written by the toolkit, not by the policy).

Examples longer than ``max_length`` are dropped and counted, never cut (a cut would drop the EOS or
split a tag); ``length_cut`` says what the limit costs: the share of sequences and tokens it drops (the
stage's truncation fractions) and the searches per sequence on each side of it. Every error names the file,
the row and the field.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from datasets import Dataset

from coa.errors import reading
from coa.prompts import PromptConfig, render_prompt
from coa.questions import DEFAULT_QUESTIONS, evidence_ids, load_questions
from coa.tokenize import LABEL_NAMES, encode, tokenize_segments
from coa.trajectory import PAIR_SCHEMA, SEGMENT_KINDS, read_table

PAIR_COLUMNS = ("prompt", "chosen", "rejected", "chosen_ends_turn", "rejected_ends_turn")
CONTEXT_COLUMNS = ("chat_prompt", "prefix")  # the shared context as segments (older pair files lack them)


def _files(path: Path, stage: str) -> list[Path]:
    if not path.exists():
        raise FileNotFoundError(
            f"{stage}: set not found: {path} (curated sets are written by curate; set sets_dir=… or {stage}.data=…)"
        )
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{stage}: {path} holds no .parquet file")
    return files


def check_format(table, path: Path, fmt: str | None) -> None:
    """A set written in another format than the configured one would teach the wrong tags: refuse it."""
    if fmt is None or "format" not in table.column_names:
        return
    found = sorted({f for f in table.column("format").to_pylist() if f} - {fmt})
    if found:
        raise ValueError(
            f"{path}: the set is in format {', '.join(map(repr, found))} but training is configured for "
            f"format {fmt!r} (params.yaml top-level `format`); re-curate the sets in {fmt!r} or set "
            f"format={found[0]}"
        )


def _check_rows(n: int, path: Path, stage: str) -> None:
    if n == 0:
        raise ValueError(f"{stage}: {path} has no rows; an empty set cannot be trained on")


def read_pairs(path: str | Path, stage: str = "sft1", fmt: str | None = None) -> list[dict]:
    """Rows of a pair set (file or folder of shards), checked against ``PAIR_SCHEMA``'s text columns and,
    when ``fmt`` is given, the configured format."""
    path = Path(path)
    rows: list[dict] = []
    for f in _files(path, stage):
        with reading(f):
            table = pq.read_table(f)
        missing = [c for c in PAIR_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(
                f"{f}: missing pair columns {missing} (schema: coa.trajectory.PAIR_SCHEMA, columns {PAIR_SCHEMA.names})"
            )
        check_format(table, f, fmt)
        columns = list(PAIR_COLUMNS) + [c for c in CONTEXT_COLUMNS if c in table.column_names]
        for i, row in enumerate(table.select(columns).to_pylist(), start=1):
            for name in PAIR_COLUMNS:
                kind = bool if name.endswith("ends_turn") else str
                if not isinstance(row[name], kind) or row[name] == "":
                    raise ValueError(
                        f"{f}: row {i}: field {name!r} must be a {'non-empty ' * (kind is str)}"
                        f"{kind.__name__}, got {row[name]!r}"
                    )
            rows.append(row)
    _check_rows(len(rows), path, stage)
    return rows


def context_ids(tokenizer, row: dict) -> list[int]:
    """The shared context's ids: the chat prompt, then each prefix segment, as the policy saw them (never the
    string ``prompt`` re-tokenised: a cut inside a token would shift the continuation's first token)."""
    if row.get("chat_prompt") is not None and row.get("prefix") is not None:
        context = "".join([row["chat_prompt"], *(s["text"] for s in row["prefix"])])
        if context != row["prompt"]:
            raise ValueError("pair row: field 'prompt' is not chat_prompt + the prefix segments' text")
        return tokenize_segments(tokenizer, row["chat_prompt"], row["prefix"]).input_ids
    return encode(tokenizer, row["prompt"])


def pair_features(tokenizer, row: dict) -> dict:
    """``prompt_ids`` / ``chosen_ids`` / ``rejected_ids``; EOS only after a continuation that ends the turn."""
    eos = [tokenizer.eos_token_id]
    return {
        "prompt_ids": context_ids(tokenizer, row),
        "chosen_ids": encode(tokenizer, row["chosen"]) + (eos if row["chosen_ends_turn"] else []),
        "rejected_ids": encode(tokenizer, row["rejected"]) + (eos if row["rejected_ends_turn"] else []),
    }


def length_cut(lengths: list[int], searches: list[int], max_length: int) -> dict:
    """What ``max_length`` keeps and drops of sequences of ``lengths`` tokens with ``searches`` search calls each:
    the truncation fractions (sequences and tokens dropped whole), the searches per kept and per dropped sequence
    (None where there is none) and the sequences with two or more searches on each side.

    >>> length_cut([100, 900, 1500], [0, 1, 3], 1024)["searches_per_dropped"]
    3.0
    """
    kept = [i for i, n in enumerate(lengths) if n <= max_length]
    dropped = [i for i, n in enumerate(lengths) if n > max_length]

    def per_sequence(rows: list[int]) -> float | None:
        return round(sum(searches[i] for i in rows) / len(rows), 4) if rows else None

    return {
        "max_length": max_length,
        "kept": len(kept),
        "dropped": len(dropped),
        "truncation_fraction": round(len(dropped) / len(lengths), 6) if lengths else 0.0,
        "truncation_token_fraction": round(sum(lengths[i] for i in dropped) / sum(lengths), 6) if lengths else 0.0,
        "searches_per_kept": per_sequence(kept),
        "searches_per_dropped": per_sequence(dropped),
        "multi_search_kept": sum(searches[i] >= 2 for i in kept),
        "multi_search_dropped": sum(searches[i] >= 2 for i in dropped),
    }


def pair_length(row: dict) -> int:
    """A pair's longest row: the shared context and the longer continuation."""
    return len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))


def pair_dataset(tokenizer, path: str | Path, max_length: int, fmt: str | None = None) -> tuple[Dataset, dict]:
    """Pairs as ids; the stats say what the length limit dropped and how much of each pair is its context computed
    twice (CPO and DPO run the chosen and the rejected row each from the start)."""
    rows = [pair_features(tokenizer, r) for r in read_pairs(path, fmt=fmt)]
    kept = [r for r in rows if pair_length(r) <= max_length]
    if not kept:
        raise ValueError(f"sft1: all {len(rows)} pairs of {path} are longer than max_length={max_length}")
    cut = length_cut([pair_length(r) for r in rows], [0] * len(rows), max_length)
    pair_tokens = sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in kept)
    stats = {
        "pairs": len(kept),
        "dropped_too_long": len(rows) - len(kept),
        "truncation_fraction": cut["truncation_fraction"],
        "truncation_token_fraction": cut["truncation_token_fraction"],
        "prompt_tokens": sum(len(r["prompt_ids"]) for r in kept),
        "chosen_tokens": sum(len(r["chosen_ids"]) for r in kept),
        "rejected_tokens": sum(len(r["rejected_ids"]) for r in kept),
        "repeated_prompt_fraction": round(sum(len(r["prompt_ids"]) for r in kept) / pair_tokens, 6),
        "chosen_ending_turn": sum(r["chosen_ids"][-1:] == [tokenizer.eos_token_id] for r in kept),
    }
    return Dataset.from_list(kept), stats


def sft_features(tokenizer, prompt: str, segments: list[dict], observation_loss: bool) -> dict:
    tt = tokenize_segments(tokenizer, prompt, segments, eos=True)
    return {"input_ids": tt.input_ids, "labels": tt.labels(observation_loss), "kinds": tt.segment_labels}


def search_calls(row: dict) -> int:
    """Search calls a trajectory made: its ``n_actions``, else its observation segments."""
    if row.get("n_actions") is not None:
        return row["n_actions"]
    return sum(s["kind"] == "observation" for s in row["segments"] or [])


def sft_dataset(
    tokenizer, paths: list[str | Path], observation_loss: bool, max_length: int, stage: str, fmt: str | None = None
) -> tuple[Dataset, dict]:
    """``input_ids``/``labels`` of every trajectory in ``paths`` (SFTTrainer uses them as they are); the stats
    count tokens by owner and say what ``max_length`` dropped (``length_cut``)."""
    rows, dropped = [], 0
    lengths, searches = [], []
    token_counts = {name: 0 for name in LABEL_NAMES.values()}
    for path in map(Path, paths):
        for f in _files(path, stage):
            table = read_table(f)
            _check_rows(table.num_rows, f, stage)
            check_format(table, f, fmt)
            columns = ["prompt", "segments"] + (["n_actions"] if "n_actions" in table.column_names else [])
            for i, row in enumerate(table.select(columns).to_pylist(), start=1):
                segments = row["segments"] or []
                if not row["prompt"] or not segments:
                    field_name = "prompt" if not row["prompt"] else "segments"
                    raise ValueError(f"{f}: row {i}: field {field_name!r} is empty")
                bad = [s["kind"] for s in segments if s["kind"] not in SEGMENT_KINDS]
                if bad:
                    raise ValueError(f"{f}: row {i}: field 'segments': unknown kind {bad[0]!r}")
                feats = sft_features(tokenizer, row["prompt"], segments, observation_loss)
                lengths.append(len(feats["input_ids"]))
                searches.append(search_calls(row))
                if len(feats["input_ids"]) > max_length:
                    dropped += 1
                    continue
                for k in feats.pop("kinds"):
                    token_counts[LABEL_NAMES[k]] += 1
                rows.append(feats)
    if not rows:
        raise ValueError(f"{stage}: every trajectory is longer than max_length={max_length}")
    cut = length_cut(lengths, searches, max_length)
    stats = {
        "sequences": len(rows),
        "dropped_too_long": dropped,
        **{f"{k}_tokens": v for k, v in token_counts.items()},
        "trained_tokens": sum(sum(t != -100 for t in r["labels"]) for r in rows),
        **{
            k: cut[k]
            for k in (
                "truncation_fraction",
                "truncation_token_fraction",
                "searches_per_kept",
                "searches_per_dropped",
                "multi_search_kept",
                "multi_search_dropped",
            )
        },
    }
    return Dataset.from_list(rows), stats


def rl_dataset(tokenizer, questions: str | None, limit: int | None, prompt: PromptConfig) -> Dataset:
    """One row per question: the rendered chat ``prompt`` plus what the rewards need."""
    path = Path(questions) if questions else DEFAULT_QUESTIONS
    if not path.exists():
        raise FileNotFoundError(
            f"rl: question file not found: {path} (`python -m coa.questions split` writes the "
            "training pool; or set rl1.questions / rl2.questions, null = the embedded HotpotQA)"
        )
    rows = load_questions(path, limit=limit)
    _check_rows(len(rows), path, "rl")
    return Dataset.from_list(
        [
            {
                "prompt": render_prompt(tokenizer, q["question"], prompt),
                "question_id": q["id"],
                "question": q["question"],  # what reward_metric=llm_judge shows its judge
                "golden_answers": q["golden_answers"],
                "evidence_ids": evidence_ids(q),  # what evidence_reward reads
            }
            for q in rows
        ]
    )
