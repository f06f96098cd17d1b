"""Whether a model would search again after its first observation, read off its probabilities (teacher-forced).

At the point after a trajectory's first observation the reference teacher writes either ``I still need X. I will
search for it.`` (a second search) or ``The search results say: ...`` (an answer; ``synth.reference``). For every
CoA trajectory of the reference teacher with at least one search, this feeds the prompt, the teacher's first turn and
its first observation to each model, then the teacher's opening of the next turn (the format's ``<think>`` line) and
scores the two leads: the log-odds ``log P(search lead) - log P(answer lead)``. It prints, per model and per what
the teacher did next (searched again or answered), the mean log-odds and the share of trajectories whose lead of
greatest probability is the search's, so a stage that stops searching shows where its probabilities moved.

    python bench/search_again.py runs/curate/sets/coa.parquet --models runs/train/sft2,runs/train/sft3
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from coa.tokenize import encode, tokenize_segments  # noqa: E402
from synth.reference import QUOTE_LEAD  # noqa: E402

SEARCH_LEAD = "I still need"  # synth.reference: the teacher's step before a further search
ANSWER_LEAD = QUOTE_LEAD.strip()


def decision_points(rows: list[dict]) -> list[dict]:
    """The prompt and segments up to the first observation, the opening of the teacher's next turn (its text before
    the first lead), and whether the teacher searched again there."""
    points = []
    for row in rows:
        segments = row["segments"] or []
        first_obs = next((i for i, s in enumerate(segments) if s["kind"] == "observation"), None)
        if first_obs is None or first_obs + 1 >= len(segments):
            continue
        after = segments[first_obs + 1]["text"]
        lead = next((x for x in (SEARCH_LEAD, ANSWER_LEAD) if x in after), None)
        at = after.index(lead) if lead else -1
        if not 0 <= at <= 40:  # no lead, or another step first (a comparison's reading): not this decision
            continue
        points.append(
            {
                "prompt": row["prompt"],
                "segments": segments[: first_obs + 1],
                "opening": after[:at],
                "searched_again": lead == SEARCH_LEAD,
            }
        )
    return points


@torch.no_grad()
def leads_logprob(model, context: list[int], leads: list[list[int]]) -> list[float]:
    """log P(lead | context) for each lead: the context's forward once, each lead on a copy of its cache."""
    out = model(torch.tensor([context]), use_cache=True)
    scores = []
    for lead in leads:
        logits = out.logits[0, -1:]
        if len(lead) > 1:
            more = model(torch.tensor([lead[:-1]]), past_key_values=copy.deepcopy(out.past_key_values))
            logits = torch.cat([logits, more.logits[0]])
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        scores.append(float(logprobs.gather(1, torch.tensor(lead)[:, None]).sum()))
    return scores


def score(model_dir: str, points: list[dict]) -> list[float]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    leads = [encode(tokenizer, SEARCH_LEAD), encode(tokenizer, ANSWER_LEAD)]
    odds = []
    for p in points:
        context = tokenize_segments(tokenizer, p["prompt"], p["segments"]).input_ids + encode(tokenizer, p["opening"])
        search, answer = leads_logprob(model, context, leads)
        odds.append(search - answer)
    return odds


def summary(odds: list[float], points: list[dict]) -> dict:
    out = {}
    for name, again in (("teacher_searched_again", True), ("teacher_answered", False)):
        xs = [o for o, p in zip(odds, points) if p["searched_again"] == again]
        out[name] = {
            "n": len(xs),
            "mean_log_odds_search": round(sum(xs) / max(len(xs), 1), 3),
            "search_lead_more_likely": round(sum(x > 0 for x in xs) / max(len(xs), 1), 3),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("coa", help="the reference teacher's CoA set (TRAJECTORY_SCHEMA parquet)")
    parser.add_argument("--models", required=True, help="comma-separated model folders")
    parser.add_argument("--per-side", type=int, default=100, help="decision points scored per teacher decision")
    args = parser.parse_args(argv)
    points = decision_points(pq.read_table(args.coa, columns=["prompt", "segments"]).to_pylist())
    points = [p for p in points if p["searched_again"]][: args.per_side] + [
        p for p in points if not p["searched_again"]
    ][: args.per_side]
    if not points:
        print(f"{args.coa}: no trajectory with a search and a step after it", file=sys.stderr)
        return 2
    for model_dir in args.models.split(","):
        print(json.dumps({"model": model_dir, **summary(score(model_dir, points), points)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
