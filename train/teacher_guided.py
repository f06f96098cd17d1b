"""Teacher-guided RL (DGPO's idea): GRPO plus a pull toward the teacher, on the questions the policy gets wrong.

Plain GRPO on a small student learns only from the rollouts it samples; where none of a group is right, the group
teaches nothing. With ``rl1.teacher_weight`` / ``rl2.teacher_weight`` w > 0, each optimizer step's loss is

    GRPO's loss + w x (token-mean NLL of the teacher's corrections of the step's failed questions)

* failed: a question with at least one of the step's rollouts at correctness 0 (the first reward function,
  ``train.rewards.CORRECTNESS``; with ``reward_metric=f1`` a partly right answer is not a failure);
* corrections: ``teacher_corrections``, a set in the trajectory schema (e.g. ``synth.onpolicy``'s
  ``corrections.parquet``): the student's prefix as ``prefill`` segments, the teacher's continuation as model and
  observation segments, tokenised as SFT-2 tokenises trajectories (``train.data.sft_features``: only the teacher's
  model tokens and the closing EOS are trained; prompt, prefix and observations are masked). Every row of a failed
  question enters; the mean runs over all their trained tokens.
* once per optimizer step, in the step's last micro-batch (``train.trl_glue``): each correction's share of the term
  is backpropagated as soon as its forward is done, so one correction's activations are held at a time, not all of
  them until the micro-batch's backward; a failed question without a correction adds nothing and is counted.

Per step, ``steps.csv`` gets ``teacher_questions`` (failed questions with corrections, the term's),
``teacher_questions_uncorrected`` (failed without) and ``teacher_nll`` (the mean NLL before the weight; absent in a
step that had none). The corrections are checked when the stage starts: every row of a question in the pool must
have the prompt the stage renders for it (the same question, prompt settings and tokenizer) and trained tokens.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

from coa.trajectory import read_table
from train.config import RL1Config
from train.data import check_format, sft_features


class TeacherTerm:
    """The corrections of a stage's questions and the failed questions noted since the last term."""

    def __init__(self, weight: float, corrections: dict[str, list[dict]], stats: dict):
        self.weight, self.corrections, self.stats = weight, corrections, stats
        self.failed: set[str] = set()

    def note(self, question_ids: list[str], correctness: list[float]) -> None:
        """The questions of scored rollouts, with each rollout's correctness."""
        self.failed.update(q for q, score in zip(question_ids, correctness) if score == 0)

    def step_loss(self, model, backward, tokens=None) -> tuple[torch.Tensor | None, dict]:
        """``weight`` x the token-mean NLL of the corrections of the questions failed since the last call, detached
        (None: no failed question has one), and the step's metrics. Each correction's share of it goes to
        ``backward`` (a callable taking a loss) right after its forward, so its gradient is in place when this
        returns; ``tokens`` (a ``train.common.TokenCount``) counts the passes."""
        failed, self.failed = self.failed, set()
        corrected = sorted(q for q in failed if q in self.corrections)
        metrics = {"teacher_questions": len(corrected), "teacher_questions_uncorrected": len(failed) - len(corrected)}
        if not corrected:
            return None, metrics
        rows = [r for q in corrected for r in self.corrections[q]]
        device = next(model.parameters()).device
        # position i predicts token i + 1: only the positions before a trained token go through the LM head
        trained_positions = [(torch.tensor(r["labels"][1:], device=device) != -100).nonzero().flatten() for r in rows]
        trained = sum(map(len, trained_positions))  # the mean's denominator
        term = torch.zeros((), device=device)
        for row, positions in zip(rows, trained_positions):
            ids = torch.tensor(row["input_ids"], device=device)
            logits = model(input_ids=ids[None], logits_to_keep=positions, use_cache=False).logits[0].float()
            share = (
                self.weight * torch.nn.functional.cross_entropy(logits, ids[positions + 1], reduction="sum") / trained
            )
            backward(share)
            term = term + share.detach()
            if tokens is not None:
                tokens.add(torch.ones(1, len(ids), dtype=torch.long))
        return term, {**metrics, "teacher_nll": term.item() / self.weight}


def teacher_term(tokenizer, stage: RL1Config, key: str, pool, fmt: str | None = None) -> TeacherTerm | None:
    """The teacher term of stage ``key`` (rl1 | rl2) over ``pool`` (``train.data.rl_dataset``'s rows: question_id,
    prompt); None for plain GRPO (``teacher_weight`` 0). Bad input is one ValueError naming the file, row and field."""
    if stage.teacher_weight == 0:
        return None
    path = Path(stage.teacher_corrections)
    if not path.exists():
        raise FileNotFoundError(
            f"{key}.teacher_corrections: {path} does not exist (synth.onpolicy writes corrections.parquet: "
            "docs/how-to/teacher_guided_rl.md)"
        )
    table = read_table(path)
    if table.num_rows == 0:
        raise ValueError(f"{key}.teacher_corrections: {path} has no rows; a teacher term needs corrections")
    check_format(table, path, fmt)
    prompts = {row["question_id"]: row["prompt"] for row in pool}
    corrections: dict[str, list[dict]] = defaultdict(list)
    outside = 0
    for i, row in enumerate(table.select(["question_id", "prompt", "segments"]).to_pylist(), start=1):
        where = f"{path}: row {i}"
        for name in ("question_id", "prompt", "segments"):
            if not row[name]:
                raise ValueError(f"{where}: field {name!r} is empty")
        where += f" (question {row['question_id']})"
        if row["question_id"] not in prompts:
            outside += 1  # another stage's question: never failed here
            continue
        if row["prompt"] != prompts[row["question_id"]]:
            raise ValueError(
                f"{where}: field 'prompt' is not the prompt {key} renders for this question (other prompt "
                "settings or another tokenizer's chat template): the correction would teach another context"
            )
        feats = sft_features(tokenizer, row["prompt"], row["segments"], observation_loss=False)
        if not any(label != -100 for label in feats["labels"][:-1]):  # the last is the EOS every row ends with
            raise ValueError(
                f"{where}: field 'segments': no trained tokens (no model segment with text after the prefix): "
                "a correction must hold the teacher's continuation"
            )
        corrections[row["question_id"]].append({"input_ids": feats["input_ids"], "labels": feats["labels"]})
    stats = {
        "file": str(path),
        "weight": stage.teacher_weight,
        "corrections": sum(map(len, corrections.values())),
        "questions": len(corrections),
        "pool_questions": len(prompts),
        "rows_outside_pool": outside,
    }
    return TeacherTerm(stage.teacher_weight, dict(corrections), stats)
