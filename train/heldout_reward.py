"""Held-out reward beside the training reward, on the same steps: over-fitting to the RL pool as it happens.

An RL stage's ``reward`` column (``steps.csv``) is the reward of each step's own rollouts on its training
pool. Whether the policy learns the task or only its pool shows in questions it never trains on. Every
``every`` optimizer steps, and once before the first, ``HeldoutReward`` rolls out the policy being
trained on fixed question sets. The default is the curated eval split
(``runs/curate/sets/eval_questions.parquet``), which ``curate step=sets`` keeps out of every training set
and out of the RL pool. Decoding is greedy, one rollout per question, in the stage's own environment
(prompt, tools, budget, search) with its reward functions. The callback logs, in the log row of that
step:

  <set>_reward        mean reward (the stage's reward functions summed, as the training ``reward``)
  <set>_correctness   mean of the answer term alone
  <set>_search_calls  search calls per rollout

so ``steps.csv`` carries ``heldout_reward`` beside ``reward``. The step-0 row holds the start checkpoint's
values. Each measurement uses the same questions, decoded greedily, so a change between two is the policy's
and not the draw's. Measured the same way on the first questions of the stage's own pool
(``pool_reward``), it gives the comparison that shows over-fitting: ``pool_reward`` rises while
``heldout_reward`` stays flat or falls. The training ``reward`` is sampled at the stage's temperature, so
compare its trend, not its level.

    trainer.add_callback(heldout_callback(trainer, stage, cfg.prompt, fmt, rollout_budget(cfg, stage), rewards,
                                          searcher))
    trainer.add_callback(HeldoutReward(trainer, {"heldout": questions}, every=4, probe=policy_probe(...)))

Cost: one greedy batch per set per measurement (HF generate on the live weights, not the vLLM rollout
engine, whose weights lag one sync behind).
"""

from __future__ import annotations

from typing import Callable, Sequence

from transformers import TrainerCallback

from coa.agent import Budget, drive, start_episode
from coa.engines import make_engine
from coa.formats import FormatPreset
from coa.prompts import PromptConfig, render_prompt
from coa.questions import evidence_ids, load_questions
from coa.tools.toolbox import Toolbox
from coa.trajectory import failed_calls, retrieved_ids
from train.rewards import reward_terms
from train.trl_glue import add_step_metric, has_step_metrics, unwrap_model_for_generation

# A probe: (trainer, questions) -> one row per question with "reward", "correctness" and "search_calls". A
# question is a dict with "id", "golden_answers", "question" (its text) and optionally "prompt" (already rendered,
# as the training dataset holds it; else "question" is rendered with the stage's prompt); its evidence ids are
# "evidence_ids" (the training dataset's column) or read from "metadata" (a question file's row).
Probe = Callable[[object, Sequence[dict]], list[dict]]
KEYS = ("reward", "correctness", "search_calls")


def score_rollouts(
    texts: Sequence[str],
    golds: Sequence[list],
    reward_funcs: Sequence,
    fmt: FormatPreset,
    failed: Sequence[int] | None = None,
    evidence: Sequence[list] | None = None,
    retrieved: Sequence[list] | None = None,
    questions: Sequence[str] | None = None,
) -> list[dict]:
    """Each rollout's reward (the reward functions summed, as GRPO's ``reward``), its answer term (the first
    function, ``train.rewards.correctness``) and its search calls; ``failed``: each rollout's calls that came
    back with an error, ``evidence`` and ``retrieved``: the question's evidence ids and the rollout's retrieved
    ids (``train.rewards.failed_calls_term`` and ``evidence_term`` read them, as in training), ``questions``: the
    question texts (``train.rewards.echo_term`` reads them).

    >>> from coa.formats import get_format
    >>> from train.rewards import make_rewards
    >>> fmt = get_format("search_r1")
    >>> score_rollouts(["<think>x</think><answer>Paris</answer>", "no answer"], [["Paris"], ["Rome"]],
    ...                make_rewards("em", 1.0, "search_r1"), fmt)[1]
    {'reward': -1.0, 'correctness': 0.0, 'search_calls': 0}
    """
    texts = list(texts)
    asked = list(questions) if questions is not None else None
    terms = reward_terms(list(reward_funcs), texts, list(golds), failed, evidence, retrieved, asked)
    return [
        {
            "reward": float(sum(t[i] for t in terms)),
            "correctness": float(terms[0][i]),
            "search_calls": fmt.parse(text).n_actions,
        }
        for i, text in enumerate(texts)
    ]


def policy_probe(
    prompt: PromptConfig,
    fmt: FormatPreset,
    budget: Budget,
    tools: str,
    reward_funcs: Sequence,
    searcher=None,
    toolbox: Toolbox | None = None,
) -> Probe:
    """The probe of an RL stage: its policy's live weights, greedy, one rollout per question, in eval mode
    (no LoRA dropout), gradient checkpointing off for the generation as in the stage's own rollouts; ``toolbox``:
    the enabled tools beyond search, as the stage's rollouts get them (``SearchEnvConfig.loop_tools``)."""

    def probe(trainer, questions: Sequence[dict]) -> list[dict]:
        tok = trainer.processing_class
        episodes = [
            start_episode(
                q.get("prompt") or render_prompt(tok, q["question"], prompt),
                tok,
                prefill=prompt.prefill,
                tools=tools,
                question={"id": q["id"]},
            )
            for q in questions
        ]
        with unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
        ) as model:
            training = model.training
            model.eval()
            try:
                engine = make_engine("hf", model=model, tokenizer=tok, temperature=0.0)
                drive(episodes, engine, searcher, fmt, budget, tools=toolbox)
            finally:
                model.train(training)
        return score_rollouts(
            [ep.completion for ep in episodes],
            [q["golden_answers"] for q in questions],
            reward_funcs,
            fmt,
            [failed_calls(ep.segments) for ep in episodes],
            [q.get("evidence_ids") or evidence_ids(q) for q in questions],
            [retrieved_ids(ep.segments) for ep in episodes],
            [q["question"] for q in questions],
        )

    return probe


class HeldoutReward(TrainerCallback):
    """Every ``every`` optimizer steps (and at the last step, and at step 0 before any update), ``probe`` on each
    named question set; the means go into the log row of that step as ``<name>_reward``, ``<name>_correctness``
    and ``<name>_search_calls`` (the module docstring). ``history`` keeps every measurement with its step.

    The values join the trainer's own averaged metrics (GRPOTrainer's ``_metrics``, which its ``log`` merges
    into the row of the step), so the row that holds the step's ``reward`` holds them too, in ``steps.csv``,
    ``log_history`` and any ``report_to``; a measuring step that would not log asks for a log."""

    def __init__(self, trainer, sets: dict[str, Sequence[dict]], every: int, probe: Probe):
        if every < 1:
            raise ValueError(f"heldout_reward_every must be >= 1 to measure (0 = no callback), got {every}")
        empty = [name for name, questions in sets.items() if not questions]
        if not sets or empty:
            raise ValueError(f"held-out reward: no questions in set(s) {empty or '(none given)'}")
        if not has_step_metrics(trainer):
            raise TypeError(
                f"{type(trainer).__name__} has no _metrics: the held-out reward joins the log rows of "
                "TRL's GRPOTrainer (the RL stages)"
            )
        self.trainer, self.sets, self.every, self.probe = trainer, dict(sets), every, probe
        self.history: list[dict] = []

    def measure(self, step: int) -> dict:
        values = {}
        for name, questions in self.sets.items():
            rows = self.probe(self.trainer, questions)
            values |= {f"{name}_{key}": sum(float(r[key]) for r in rows) / len(rows) for key in KEYS}
        self.history.append({"step": step, **values})
        return values

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:  # the start checkpoint's values, a row of their own (a resumed run has its row)
            self.trainer.log(self.measure(0))

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if step % self.every and step < state.max_steps:
            return
        for name, value in self.measure(step).items():
            add_step_metric(self.trainer, name, value)
        control.should_log = True  # the row of this step carries them even off the logging_steps grid


def heldout_questions(path: str, limit: int, pool: Sequence[dict]) -> list[dict]:
    """The first ``limit`` questions of ``path``, refused if any is in the training ``pool`` (by id, or by
    question text where the pool rows have it): a held-out reward must come from questions never trained on."""
    questions = load_questions(path, limit=limit or None)
    ids = {q["id"] for q in pool}
    texts = {q["question"].strip().lower() for q in pool if q.get("question")}
    shared = [q for q in questions if q["id"] in ids or q["question"].strip().lower() in texts]
    if shared:
        raise ValueError(
            f"{path}: {len(shared)} of its first {len(questions)} questions are in the stage's training "
            f"pool (first: {shared[0]['id']!r}); the held-out reward needs questions the stage never "
            "trains on, such as the curated eval split runs/curate/sets/eval_questions.parquet"
        )
    return questions


def heldout_callback(
    trainer,
    stage,
    prompt: PromptConfig,
    fmt: FormatPreset,
    budget: Budget,
    reward_funcs: Sequence,
    searcher=None,
    toolbox: Toolbox | None = None,
) -> HeldoutReward:
    """The callback of an RL stage's settings: ``heldout_reward_every`` steps, the first ``heldout_limit`` of
    ``heldout_questions`` (checked against the stage's pool, the trainer's dataset) as ``heldout``, and the
    first ``heldout_limit`` of the pool itself, with the prompts it trains on, as ``pool``."""
    data = trainer.train_dataset
    pool = [
        {"id": i, "prompt": p, "question": q, "golden_answers": g, "evidence_ids": e}
        for i, p, q, g, e in zip(
            data["question_id"], data["prompt"], data["question"], data["golden_answers"], data["evidence_ids"]
        )
    ]
    sets = {
        "heldout": heldout_questions(stage.heldout_questions, stage.heldout_limit, pool),
        "pool": pool[: stage.heldout_limit],
    }
    probe = policy_probe(
        prompt, fmt, budget, stage.tools, reward_funcs, searcher if stage.tools == "real" else None, toolbox
    )
    return HeldoutReward(trainer, sets, stage.heldout_reward_every, probe)
