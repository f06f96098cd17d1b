"""What a real teacher breaks in the format when it answers, repaired or named, so that no such row reaches the
data as a plain "answer" (seen with Qwen2.5-Coder-1.5B-Instruct: docs/experiments/real_llm.md; its own outputs are
the test fixtures, tests/fixtures/real_llm/).

``settle`` runs on each teacher trajectory that ended with ``finish_reason="answer"``:

* **half-closed think** (``think_closed``, repaired): the reasoning opened by the prefilled think tag never closes,
  and the answer follows inside it (``…so the answer is <answer>X</answer>``). The think-close tag is inserted
  before the answer's markup, in the model's last segment (its token ids re-encoded), when that alone makes the text
  well-formed; the row keeps ``answer`` and the run counts the repair.
* **written observation** (``model_observation``, named): the teacher wrote its own search results (the
  observation tags) instead of calling the search; the loop ran real search, so these results are invented. The
  row ends ``malformed``.
* **anything else that does not parse** (``malformed``, named): an answer, but the text breaks the format (a stray
  close tag, an answer after a call, ...). The row ends ``malformed``, as the chat engine ends such rows.

Each outcome is counted in the run summary (``run.protocol``). Repetition loops end ``max_tokens`` and a reply
without an answer ``eos`` already (the agent loop), and curation names them again (``repetition``, ``no_answer``).
"""

from __future__ import annotations

from coa.agent import Episode, written_observations
from coa.formats import FormatPreset, completion_text
from coa.tokenize import encode

REPAIRED, MODEL_OBSERVATION, MALFORMED = "think_closed", "model_observation", "malformed"


def settle(ep: Episode, fmt: FormatPreset) -> str | None:
    """Repair or name a protocol break of an answered episode (see the module doc); the outcome, None if none."""
    if ep.finish_reason != "answer":
        return None
    if written_observations(ep, fmt) > 0:
        ep.finish_reason = MALFORMED
        return MODEL_OBSERVATION
    if fmt.parse(ep.completion).well_formed:
        return None
    if close_think_before_answer(ep, fmt):
        return REPAIRED
    ep.finish_reason = MALFORMED
    return MALFORMED


def close_think_before_answer(ep: Episode, fmt: FormatPreset) -> bool:
    """Insert the think-close tag before the last answer markup of the last model segment, if the think is still
    open there and the result is well-formed; the segment is changed only then."""
    index = next((i for i in range(len(ep.segments) - 1, ep.frozen - 1, -1) if ep.segments[i]["kind"] == "model"), None)
    if index is None or not fmt.answer_open:
        return False
    last = ep.segments[index]
    at = last["text"].rfind(fmt.answer_open)
    before = completion_text(ep.segments[:index]) + last["text"][: max(at, 0)]
    if at < 0 or before.rfind(fmt.think_open) <= before.rfind(fmt.think_close):
        return False
    text = last["text"][:at].rstrip() + "\n" + fmt.think_close + "\n" + last["text"][at:]
    old = last["text"]
    last["text"] = text
    if not fmt.parse(ep.completion).well_formed:
        last["text"] = old
        return False
    last["token_ids"] = encode(ep.tokenizer, text)
    last["logprobs"] = [0.0] * len(last["token_ids"])  # the inserted tag was not sampled: no log-probs to keep
    return True
