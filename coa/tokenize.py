"""Segment-by-segment tokenisation: ids plus the exact owner of every token.

``tokenize(prompt) + Σ ids(segment)`` in order, so the prompt / model / observation label of each
token is known by construction and never recovered by re-tokenising decoded text. A segment's ids are
the ones it carries (``token_ids``: for a model segment exactly what the engine generated) when they
decode to its text with this tokenizer, else its text encoded on its own. The agent loop
(``coa.agent``) builds ``Episode.ids`` the same way, so SFT trains on the ids RL rollouts and
evaluation feed their engines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

PROMPT, MODEL, OBSERVATION = 0, 1, 2
LABEL_NAMES = {PROMPT: "prompt", MODEL: "model", OBSERVATION: "observation"}
# a prefill is toolkit-written context (like the prompt): never trained, in SFT exactly as in RL
_KIND = {"model": MODEL, "prefill": PROMPT, "observation": OBSERVATION}


@dataclass
class TokenizedTrajectory:
    input_ids: list[int]
    segment_labels: list[int]  # PROMPT / MODEL / OBSERVATION per token
    segment_index: list[int]  # -1 for the prompt, else the index of the segment the token came from

    def labels(self, observation_loss: bool, ignore_index: int = -100) -> list[int]:
        """Loss labels: model tokens always, observation tokens only if ``observation_loss``."""
        trained = {MODEL, OBSERVATION} if observation_loss else {MODEL}
        return [t if s in trained else ignore_index for t, s in zip(self.input_ids, self.segment_labels)]


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def segment_ids(tokenizer, seg: dict) -> list[int]:
    """A segment's ids: the stored ones when they decode to its text with ``tokenizer`` (the same
    tokenizer wrote them), else the text encoded on its own."""
    ids = list(seg.get("token_ids") or [])
    if ids and tokenizer.decode(ids, skip_special_tokens=False) == seg["text"]:
        return ids
    return encode(tokenizer, seg["text"])


def tokenize_segments(tokenizer, prompt: str, segments: Sequence[dict], eos: bool = False) -> TokenizedTrajectory:
    """Tokenise a trajectory. ``eos=True`` appends the tokenizer's EOS as a model token
    (a finished trajectory ends the turn; a prefix that stops at a search tag must not)."""
    ids = encode(tokenizer, prompt)
    labels = [PROMPT] * len(ids)
    index = [-1] * len(ids)
    for i, seg in enumerate(segments):
        seg_ids = segment_ids(tokenizer, seg)
        ids += seg_ids
        labels += [_KIND[seg["kind"]]] * len(seg_ids)
        index += [i] * len(seg_ids)
    if eos:
        ids.append(tokenizer.eos_token_id)
        labels.append(MODEL)
        index.append(len(segments) - 1)
    return TokenizedTrajectory(ids, labels, index)
