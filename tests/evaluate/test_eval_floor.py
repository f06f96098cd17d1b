"""bench/eval_floor.py counts an evaluation's prefilled and decoded tokens and their attention context (hand-built
rows, a whitespace tokenizer, so every count can be worked out by hand)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "eval_floor", Path(__file__).resolve().parents[2] / "bench" / "eval_floor.py"
)
floor = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(floor)

SHARED = " ".join(f"t{i}" for i in range(20))  # 20 tokens: one whole 16-token block shared


def words(text: str, add_special_tokens: bool = False) -> dict:
    """A tokenizer stand-in: one id per whitespace-separated word."""
    return {"input_ids": [hash(w) % 1000 for w in text.split()]}


def row(question: str, segments: list[tuple[str, str, list[int]]]) -> dict:
    return {
        "prompt": f"{SHARED} {question}",
        "segments": [{"kind": k, "text": t, "token_ids": ids} for k, t, ids in segments],
    }


def test_replays_each_episodes_requests_against_whole_cache_blocks():
    rows = [
        # prompt 20 + 2 = 22 tokens; the model writes 3 ids (their text is not re-tokenised), 4 observed, 2 written
        row("q one", [("model", "x", [1, 2, 3]), ("observation", "a b c d", []), ("model", "y", [4, 5])]),
        row("q two", [("prefill", "p", []), ("model", "z", [6]), ("model", "w", [7])]),  # the last continues
    ]
    w = floor.work(rows, words, block=16)
    assert w["shared_prefix"] == 16  # 20 common tokens, cached in whole blocks, computed once
    # first row: its prompt past the shared block (6); then, at its second request, the 9 tokens of its partly filled
    # block (16..24) again and the 4 observed; second row: its prompt past the block and the prefill (7)
    assert w["prefilled"] == 16 + 6 + (9 + 4) + 7
    assert w["decoded"] == 3 + 2 + 1 + 1
    first = sum(range(16, 22)) + sum(range(22, 25)) + sum(range(16, 29)) + sum(range(29, 31))
    second = sum(range(16, 23)) + 23 + 24
    assert w["context"] == sum(range(16)) + first + second  # each computed token against the tokens before it


def test_shared_prefix_is_whole_blocks_only():
    assert floor.shared_prefix([[1] * 15, [1] * 15], block=16) == 0
    assert floor.shared_prefix([[1, 2] * 10, [2, 1] * 10], block=16) == 0
    assert floor.shared_prefix([[1] * 300, [1] * 299 + [2]], block=128) == 256
