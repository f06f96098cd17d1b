"""Teacher-guided RL (``train/teacher_guided.py``): the teacher's corrections of a step's failed questions as a
supervised term beside GRPO, on the tiny model, with corrections written by hand in the trajectory schema (a student
prefix as prefill, a real BM25 observation, the teacher's continuation)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from coa.environment import SearchEnvConfig
from coa.prompts import PromptConfig, render_prompt
from coa.tokenize import tokenize_segments
from coa.trajectory import Trajectory, segment, write_trajectories
from tests.train.conftest import FMT, RL_PROMPT, TINY_RL
from train.checkpoint import load_model, load_tokenizer
from train.config import RL1Config, RL2Config, TrainConfig
from train.data import rl_dataset
from train.rl import build_rl_trainer
from train.run import command
from train.teacher_guided import teacher_term
from train.trl_glue import TrimmingGRPOTrainer

WEIGHT = 0.5


def continuation(q) -> str:
    """The teacher's text after the student's prefix (the trained part of a correction, with the EOS)."""
    return "The result names it.\n</think>\n\n" + FMT.answer_text(q["golden_answers"][0])


def correction(tok, q, searcher, sample: int, prompt: PromptConfig = RL_PROMPT, teacher: bool = True) -> Trajectory:
    """A correction as synth.onpolicy writes one: the student's prefix (its search and the real observation) as
    prefill, then the teacher's continuation; ``teacher=False``: the prefix alone (nothing to train)."""
    query = q["question"][:40].strip()
    docs = searcher.search([query], 1)[0]
    segments = [
        segment("prefill", "<think>\n"),
        segment("prefill", f"Attempt {sample}: I should look this up.\n" + FMT.search_call(query)),
        segment("observation", FMT.observation(docs), query=query, doc_ids=[d.id for d in docs]),
    ] + ([segment("model", continuation(q))] if teacher else [])
    return Trajectory(
        question_id=q["id"],
        question=q["question"],
        golden_answers=q["golden_answers"],
        prompt=render_prompt(tok, q["question"], prompt),
        segments=segments,
        mode="correction",
        sample=sample,
        parent_id=f"student-{q['id']}",
        decision_index=2,
        finish_reason="answer",
        answer=q["golden_answers"][0],
    )


@pytest.fixture
def corrections(tmp_path, tokenizer, questions, searcher):
    """Two corrections of question 1, one of question 0, none of question 2, one of question 3 (outside a 3-question
    pool)."""
    rows = [
        correction(tokenizer, questions[1], searcher, 0),
        correction(tokenizer, questions[0], searcher, 0),
        correction(tokenizer, questions[1], searcher, 1),
        correction(tokenizer, questions[3], searcher, 0),
    ]
    path = tmp_path / "corrections.parquet"
    write_trajectories(path, rows)
    return path, rows


class Correctness:
    """The answer term (first reward function) as a stand-in: 1 for the questions in ``right``, else 0."""

    __name__ = "correctness"

    def __init__(self, right=()):
        self.right = set(right)

    def __call__(self, completions, question_id, **kwargs):
        return [float(q in self.right) for q in question_id]


def parity(completions, **kwargs):
    """Differs inside every group: GRPO's own gradient is not zero."""
    return [float(i % 2) for i in range(len(completions))]


def _trainer(policy_dir, model_dir, out, searcher, corrections_path, weight, right=(), **settings):
    tok = load_tokenizer(policy_dir, model_dir)
    stage = RL1Config(
        **{
            **TINY_RL,
            "observation_tokens": 8,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 3,  # one step: the 3 questions x 2 rollouts
            "max_steps": 1,
            "learning_rate": 1e-3,
            "teacher_weight": weight,
            "teacher_corrections": str(corrections_path),
            **settings,
        }
    )
    cfg = TrainConfig(format="autocoa", prompt=RL_PROMPT, search=SearchEnvConfig(max_tokens=32, topk=1))
    dataset = rl_dataset(tok, None, 3, RL_PROMPT)
    teacher = teacher_term(tok, stage, "rl1", dataset, "autocoa")
    correctness = Correctness(right)
    trainer = build_rl_trainer(
        cfg,
        stage,
        load_model(policy_dir, tok),
        tok,
        dataset,
        out,
        reward_funcs=[correctness, parity],
        searcher=searcher,
        teacher=teacher,
    )
    return trainer, tok, dataset, correctness


def recomputed_nll(model, tok, rows: list[Trajectory], grad: bool = False) -> torch.Tensor:
    """Token-mean NLL over the rows' trained tokens, from the model's full logits (with its graph: ``grad``); each
    row's trained tokens are checked to be exactly the teacher's continuation and the EOS."""
    total, count = 0.0, 0
    for row in rows:
        tt = tokenize_segments(tok, row.prompt, row.segments, eos=True)
        ids, labels = torch.tensor(tt.input_ids), torch.tensor(tt.labels(observation_loss=False))
        trained = labels[1:] != -100
        assert tok.decode(ids[1:][trained]) == row.segments[-1]["text"] + tok.eos_token
        with torch.set_grad_enabled(grad):
            logits = model(input_ids=ids[None]).logits[0, :-1].float()
        total += torch.nn.functional.cross_entropy(logits[trained], ids[1:][trained], reduction="sum")
        count += int(trained.sum())
    return total / count


@pytest.mark.slow
def test_the_term_is_the_weighted_nll_of_the_failed_questions_corrections(
    tiny_dir, model_dir, searcher, questions, corrections, tmp_path
):
    path, rows = corrections
    q0, q1, q2 = (q["id"] for q in questions[:3])
    trainer, tok, dataset, correctness = _trainer(tiny_dir, model_dir, tmp_path, searcher, path, WEIGHT, right={q0})
    assert trainer.teacher.stats == {
        "file": str(path),
        "weight": WEIGHT,
        "corrections": 3,
        "questions": 2,
        "pool_questions": 3,
        "rows_outside_pool": 1,
    }
    trainer.model.train()  # as inside trainer.train(): metrics under "train"
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop otherwise
    batch = [dict(dataset[i]) for i in (0, 0, 1, 1, 2, 2)]
    inputs = trainer._generate_and_score_completions(batch)
    assert trainer.teacher.failed == {q1, q2}  # q0's rollouts are right

    plain = TrimmingGRPOTrainer.compute_loss(trainer, trainer.model, inputs)  # GRPO alone: same weights, inputs
    guided = trainer.compute_loss(trainer.model, inputs)
    expected = recomputed_nll(trainer.model, tok, [rows[0], rows[2]])  # q1's two corrections; q2 has none
    assert (guided - plain).item() == pytest.approx(WEIGHT * expected.item(), rel=1e-5)
    logged = trainer._metrics["train"]
    assert logged["teacher_nll"] == [pytest.approx(expected.item(), rel=1e-5)]
    assert (logged["teacher_questions"], logged["teacher_questions_uncorrected"]) == ([1], [1])

    # once per step: the failed questions are used up; a step whose rollouts are all right adds nothing
    assert trainer.compute_loss(trainer.model, inputs).item() == pytest.approx(plain.item())
    correctness.right = {q0, q1, q2}
    inputs = trainer._generate_and_score_completions(batch)
    assert trainer.teacher.failed == set()
    assert trainer.compute_loss(trainer.model, inputs).item() == pytest.approx(
        TrimmingGRPOTrainer.compute_loss(trainer, trainer.model, inputs).item()
    )
    assert logged["teacher_nll"] == [pytest.approx(expected.item(), rel=1e-5)]  # no new value
    assert logged["teacher_questions"][1:] == [0, 0] and logged["teacher_questions_uncorrected"][1:] == [0, 0]


@pytest.mark.slow
def test_one_correction_at_a_time_gives_the_whole_terms_gradient(tiny_dir, model_dir, corrections):
    """Each correction's share is backpropagated right after its forward (one correction's activations held at a
    time): the gradient is the one of the whole term, weight x the token-mean NLL over every correction."""
    path, rows = corrections
    tok = load_tokenizer(tiny_dir, model_dir)
    pool = rl_dataset(tok, None, 3, RL_PROMPT)
    term = teacher_term(tok, RL1Config(teacher_weight=WEIGHT, teacher_corrections=str(path)), "rl1", pool, "autocoa")
    model = load_model(tiny_dir, tok)
    questions = sorted({r.question_id for r in rows[:3]})
    term.note(questions, [0.0] * len(questions))
    backward_calls = []
    value, _ = term.step_loss(model, lambda share: (backward_calls.append(share), share.backward()))
    assert len(backward_calls) == 3 and not value.requires_grad
    stepwise = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    assert stepwise, "no gradient reached the weights"

    model.zero_grad()
    whole = WEIGHT * recomputed_nll(model, tok, rows[:3], grad=True)
    whole.backward()
    assert value.item() == pytest.approx(whole.item(), rel=1e-5)
    assert stepwise.keys() == {k for k, p in model.named_parameters() if p.grad is not None}
    for k, p in model.named_parameters():
        if k in stepwise:
            torch.testing.assert_close(stepwise[k], p.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_the_weights_move_toward_the_teacher_unlike_plain_grpo(
    tiny_dir, model_dir, searcher, questions, corrections, tmp_path
):
    path, rows = corrections
    trained, nll = {}, {}
    for weight in (0.0, WEIGHT):
        trainer, tok, _, _ = _trainer(tiny_dir, model_dir, tmp_path / str(weight), searcher, path, weight)
        trainer.train()  # one optimizer step: every question fails (no right answer)
        trained[weight] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        nll[weight] = recomputed_nll(trainer.model, tok, rows[:3]).item()  # q0's and q1's corrections
        log = trainer.state.log_history[0]
        if weight:
            assert (log["teacher_questions"], log["teacher_questions_uncorrected"]) == (2, 1)
            assert math.isfinite(log["teacher_nll"])
        else:
            assert trainer.teacher is None and not any(k.startswith("teacher") for k in log)
    start = load_model(tiny_dir, tok).state_dict()
    moved = [k for k in start if not torch.equal(start[k], trained[0.0][k])]
    assert moved, "plain GRPO did not move the weights (parity gives it a gradient)"
    assert any(not torch.equal(trained[0.0][k], trained[WEIGHT][k]) for k in moved)
    assert nll[WEIGHT] < nll[0.0]  # the pull is toward the teacher's tokens


@pytest.mark.slow
def test_a_stage_run_writes_the_term_per_step_into_steps_csv(tiny_dir, corrections, tmp_path):
    path, _ = corrections
    runs = tmp_path / "runs"
    rl1 = {
        **{k: v for k, v in TINY_RL.items() if k not in ("questions", "lora_r", "beta")},
        "questions": "null",
        "question_limit": 3,
        "lora_r": "null",
        "observation_tokens": 8,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 3,
        "max_steps": 1,
        "teacher_weight": WEIGHT,
        "teacher_corrections": path,
    }
    argv = [f"model={tiny_dir}", f"base_model={tiny_dir}", f"runs_dir={runs}", "format=autocoa", "search.max_tokens=32"]
    argv += ["prompt.demonstrations=false", "num_threads=1", "save_steps=0", "stage=rl1"]
    assert command(argv + [f"rl1.{k}={v}" for k, v in rl1.items()]) == 0
    with open(runs / "rl1" / "steps.csv") as f:
        (row,) = list(csv.DictReader(f))
    # the random tiny model answers nothing right: q0 and q1 have corrections, q2 has none
    assert (float(row["teacher_questions"]), float(row["teacher_questions_uncorrected"])) == (2, 1)
    assert math.isfinite(float(row["teacher_nll"]))
    stats = json.loads((runs / "rl1" / "metrics.json").read_text())["data"]["teacher_corrections"]
    assert (stats["corrections"], stats["questions"], stats["rows_outside_pool"]) == (3, 2, 1)


# ---- bad input: one line naming the file, row and field (exit 2 on the command line) --------------------------


def _pool(tokenizer):
    return rl_dataset(tokenizer, None, 3, RL_PROMPT)


def test_a_missing_corrections_file_is_named(tokenizer, tmp_path):
    stage = RL2Config(teacher_weight=WEIGHT, teacher_corrections=str(tmp_path / "none.parquet"))
    with pytest.raises(FileNotFoundError, match=rf"^rl2\.teacher_corrections: {tmp_path}/none\.parquet does not exist"):
        teacher_term(tokenizer, stage, "rl2", _pool(tokenizer), "autocoa")


def test_a_correction_without_trained_tokens_is_named(tokenizer, questions, searcher, tmp_path):
    path = tmp_path / "corrections.parquet"
    write_trajectories(
        path,
        [
            correction(tokenizer, questions[0], searcher, 0),
            correction(tokenizer, questions[1], searcher, 0, teacher=False),
        ],
    )
    stage = RL1Config(teacher_weight=WEIGHT, teacher_corrections=str(path))
    with pytest.raises(
        ValueError,
        match=rf"^{path}: row 2 \(question {questions[1]['id']}\): field 'segments': no trained tokens",
    ):
        teacher_term(tokenizer, stage, "rl1", _pool(tokenizer), "autocoa")


def test_a_correction_in_another_prompt_is_named(tokenizer, questions, searcher, tmp_path):
    path = tmp_path / "corrections.parquet"
    other = PromptConfig(format="autocoa", demonstrations=True)
    write_trajectories(path, [correction(tokenizer, questions[2], searcher, 0, prompt=other)])
    stage = RL1Config(teacher_weight=WEIGHT, teacher_corrections=str(path))
    with pytest.raises(ValueError, match=rf"^{path}: row 1 \(question {questions[2]['id']}\): field 'prompt' is not"):
        teacher_term(tokenizer, stage, "rl1", _pool(tokenizer), "autocoa")


def test_plain_grpo_reads_no_corrections(tokenizer):
    assert teacher_term(tokenizer, RL2Config(teacher_corrections="/nowhere.parquet"), "rl2", [], "autocoa") is None


@pytest.mark.parametrize(
    "cls, settings, message",
    [
        (RL2Config, {"teacher_weight": -0.1}, r"rl2\.teacher_weight must be >= 0 \(0 = plain GRPO\), got -0\.1"),
        (RL1Config, {"teacher_weight": float("nan")}, r"rl1\.teacher_weight must be >= 0 \(0 = plain GRPO\), got nan"),
        (RL1Config, {"teacher_weight": 0.5}, r"rl1\.teacher_weight=0\.5 needs rl1\.teacher_corrections"),
    ],
)
def test_bad_teacher_settings_are_refused(cls, settings, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        cls(**settings)


def test_the_command_line_says_it_in_one_line_and_exits_2(tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COA_DEBUG", raising=False)
    common = [f"model={tiny_dir}", f"base_model={tiny_dir}", "rl2.questions=null", f"runs_dir={tmp_path / 'runs'}"]
    missing = tmp_path / "none.parquet"
    assert command(["stage=rl2", "rl2.teacher_weight=0.5", f"rl2.teacher_corrections={missing}", *common]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"train: rl2.teacher_corrections: {missing} does not exist") and err.count("\n") == 1
    assert command(["stage=rl2", "rl2.teacher_weight=-1", *common]) == 2
    assert capsys.readouterr().err == "train: rl2.teacher_weight must be >= 0 (0 = plain GRPO), got -1.0\n"
