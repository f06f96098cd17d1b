"""The whole method end to end, as a user runs it on their own dataset: a fresh git clone with every size cut
(``tests/pipeline/tiny.py``), a second dataset written into it, and

    dvc exp run -S data.corpus=data/own/own_corpus.jsonl -S data.questions=data/own/own_questions.jsonl

Every stage runs for real (index, split, reference-teacher synthesis with real search, curation, five TRL
stages, vLLM CPU evaluation of seven models, report). One run serves two sets of checks, since a whole tiny
run is the suite's longest setup (~11 min on 2 cores); tests/conftest.py puts these tests first, so that it runs
alone while the session is young (``tests.pipeline.tiny.own_data_run``):

- the data went where the params say: the dataset is made different from the embedded one wherever the
  FlashRAG form allows (a few HotpotQA dev questions that no evaluation set holds, with new question ids and
  only ``golden_answers`` and ``metadata.gold_paragraph_ids``; their own candidate paragraphs as a separate
  uncompressed corpus in ``{"id", "contents"}`` form with new ids), and the index, split, synthesis and
  evaluation used it;
- the run is not hollow: every set has rows (pairs in both directions), every SFT stage's saved weights
  differ from its start and its objective fell, rl2's rollouts carry real search results that were
  env-masked, rl1's observations were opened for the policy, and a second ``dvc repro`` does nothing.

The embedded dataset takes the same path through ``data.*`` (tests/pipeline/test_data_params.py checks that
dvc.yaml reads nothing else); the README's ``dvc repro`` on it is timed in docs/measurements.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from tests.pipeline.tiny import CORPUS, HELDOUT, N_QUESTIONS, OWN_TRAIN, QUESTIONS, dvc, own_data_run

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.model]

ALWAYS_RUN = {"checks", "run_report"}  # always_changed: they run on every repro


@pytest.fixture(scope="module")
def run(tmp_path_factory, model_dir):
    """The whole tiny run; its clone (five checkpoints and their DVC cache, ~5 GB) goes when these tests end."""
    folder = tmp_path_factory.mktemp("own_data")
    done, env, questions, passages = own_data_run(folder / "repo", model_dir)
    assert done.returncode == 0, done.stdout
    yield folder / "repo", env, questions, passages
    shutil.rmtree(folder, ignore_errors=True)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_run_reaches_the_report_and_names_the_data(run):
    repo, _, _, _ = run
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["data"] == {"corpus": CORPUS, "questions": QUESTIONS}
    report = (repo / "runs/report/report.md").read_text()
    assert f"- data: questions `{QUESTIONS}`, corpus `{CORPUS}`" in report
    assert json.loads((repo / "runs/report/checks.json").read_text())["checks"]


def test_the_index_holds_the_own_corpus(run):
    repo, _, _, passages = run
    meta = json.loads((repo / "runs/index/index.json").read_text())
    assert (meta["corpus"], meta["n_docs"]) == (CORPUS, len(passages))


def test_split_synthesis_and_evaluation_used_the_own_questions(run):
    repo, _, questions, _ = run
    ids = {q["id"] for q in questions}
    held, train = read_jsonl(repo / "runs/split/heldout.jsonl"), read_jsonl(repo / "runs/split/train.jsonl")
    assert len(held) == HELDOUT and len(train) == N_QUESTIONS - HELDOUT
    assert {q["id"] for q in held} | {q["id"] for q in train} == ids
    for mode in ("cot", "coa"):
        summary = json.loads((repo / f"metrics/synth_{mode}.json").read_text())
        assert summary["dataset"]["rows"] == OWN_TRAIN, summary
    # the reference CoA answers from what the search returned: right answers mean the own corpus was searched
    assert json.loads((repo / "metrics/synth_coa.json").read_text())["dataset"]["em"] > 0.5
    for name in ("base", "react", "sft1", "sft2", "sft3", "rl1", "rl2"):
        rows = json.loads((repo / f"runs/eval/{name}/per_question.json").read_text())
        assert {r["question_id"] for r in rows} == {q["id"] for q in held}, name


def test_every_stage_wrote_outputs_and_metrics(run):
    repo, *_ = run
    for path in [
        "runs/index/index.json",
        "runs/split/heldout.jsonl",
        "runs/curate/analyze/two_by_two.png",
        "runs/curate/sets/coa.parquet",
        "runs/curate/sets/pairs.parquet",
        "runs/eval/table.md",
        "runs/report/checks.json",
        "runs/report/when_to_act.json",
        "runs/fidelity/sft3/fidelity.json",
        "runs/report/report.md",
        "runs/reward_probe/rl1/reward_probe.json",
        "runs/reward_probe/rl2/reward_probe.json",
    ]:
        assert (repo / path).exists(), path
    for stage in ("sft1", "sft2", "sft3", "rl1", "rl2"):
        assert (repo / f"runs/train/{stage}/model.safetensors").exists(), stage
        assert json.loads((repo / f"metrics/train_{stage}.json").read_text())
    for name in ("synth_cot", "synth_coa"):
        assert json.loads((repo / f"metrics/{name}.json").read_text())["dataset"]["rows"] == OWN_TRAIN
    for name in ("base", "react", "sft1", "sft2", "sft3", "rl1", "rl2"):
        metrics = json.loads((repo / f"runs/eval/{name}/metrics.json").read_text())
        assert metrics["datasets"]["heldout"]["n"] == HELDOUT
    table = (repo / "runs/eval/table.md").read_text()
    assert all(f"| {name} (" in table for name in ("base", "react", "sft1", "rl2"))


def test_every_set_has_rows_and_pairs_go_both_ways(run):
    repo, *_ = run
    sets = json.loads((repo / "runs/curate/sets/metrics.json").read_text())
    for name in ("pairs", "coa", "cot"):
        assert sets[name]["written"] > 0, (name, sets[name])
    pairs = pq.read_table(repo / "runs/curate/sets/pairs.parquet").to_pylist()
    assert {p["direction"] for p in pairs} <= {"act", "no_act"} and any(p["direction"] == "act" for p in pairs)
    grid = json.loads((repo / "runs/curate/analyze/metrics.json").read_text())["two_by_two"]
    assert grid["cot_wrong_coa_right"] > 0 and grid["cot_right_coa_right"] > 0, grid
    assert sets["rl_questions"]["written"] > 0


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def load(model_path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()


def stage_objective(model, stage: str, repo: Path, tokenizer, n: int = 6) -> float:
    """The stage's own objective on its first ``n`` training examples (lower is better): for sft1 the
    paper's loss -log σ(P̄c - P̄r) + α·(-P̄c), for sft2/sft3 the mean NLL of the trained tokens."""
    from train.data import pair_dataset, sft_dataset

    sets = repo / "runs/curate/sets"

    def mean_logp(prompt_ids, cont_ids):
        ids = torch.tensor([prompt_ids + cont_ids])
        with torch.no_grad():
            logps = model(ids).logits[0, :-1].log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
        return logps[len(prompt_ids) - 1 :].mean()

    if stage == "sft1":
        pairs = pair_dataset(tokenizer, sets / "pairs.parquet", 1024)[0]
        rows = pairs.select(range(min(n, len(pairs))))  # the tiny run may mine fewer than n pairs
        losses = []
        for r in rows:
            c, rej = mean_logp(r["prompt_ids"], r["chosen_ids"]), mean_logp(r["prompt_ids"], r["rejected_ids"])
            losses.append(-torch.nn.functional.logsigmoid(c - rej) + 0.2 * -c)
        return float(torch.stack(losses).mean())
    rows = sft_dataset(tokenizer, [sets / "coa.parquet", sets / "cot.parquet"], stage == "sft3", 1024, stage)[0]
    total, count = 0.0, 0
    for r in rows.select(range(min(n, len(rows)))):
        ids, labels = torch.tensor([r["input_ids"]]), torch.tensor([r["labels"]])
        with torch.no_grad():
            out = model(ids, labels=labels)
        trained = int((labels[0, 1:] != -100).sum())
        total, count = total + float(out.loss) * trained, count + trained
    return total / count


def test_every_sft_stage_moved_its_weights_and_lowered_its_objective(run, model_dir, tokenizer):
    repo, *_ = run
    start, start_model = tensors(Path(model_dir)), load(Path(model_dir))
    for stage in ("sft1", "sft2", "sft3"):
        out = repo / f"runs/train/{stage}"
        trained = tensors(out)
        moved = [k for k in trained if not torch.equal(trained[k].float(), start[k].float())]
        assert len(moved) > len(trained) // 2, f"{stage}: only {len(moved)} of {len(trained)} tensors changed"
        metrics = json.loads((out / "metrics.json").read_text())
        assert "skipped" not in metrics and metrics["steps"] >= 1, metrics
        trained_model = load(out)  # each checkpoint loaded once: the next stage's start
        before = stage_objective(start_model, stage, repo, tokenizer)
        after = stage_objective(trained_model, stage, repo, tokenizer)
        assert after < before, f"{stage}: its objective on its own data went {before:.4f} -> {after:.4f}"
        start, start_model = trained, trained_model


def test_rl2_inserted_real_observations_and_masked_them(run):
    repo, *_ = run
    rollouts = [json.loads(line) for line in open(repo / "runs/train/rl2/rollouts.jsonl")]
    searched = [r for r in rollouts if r["n_actions"] > 0]
    assert searched, "no rl2 rollout searched: the env mask was never exercised"
    assert all(r["observation_tokens"] > 0 and r["queries"] for r in searched)
    steps = list(csv.DictReader(open(repo / "runs/train/rl2/steps.csv")))
    assert any(float(r.get("agent/env_masked_fraction") or 0) > 0 for r in steps)


def test_rl1_opened_each_observation_for_the_policy_to_write(run):
    repo, *_ = run
    rollouts = [json.loads(line) for line in open(repo / "runs/train/rl1/rollouts.jsonl")]
    searched = [r for r in rollouts if r["n_actions"] > 0]
    assert searched, "no rl1 rollout searched: the simulated environment was never exercised"
    # the opening tag is the environment's (masked); everything the policy wrote after it is in the loss
    assert all(
        0 < r["observation_tokens"] <= 8 * (r["n_actions"] + r["budget_notices"]) and r["queries"]
        for r in searched
        if not r["budget_notices"]
    )
    probe = json.loads((repo / "runs/reward_probe/rl1/reward_probe.json").read_text())
    assert probe["tools"] == "simulated" and probe["models"]["after"]["n"] == 2 * 1


def test_metrics_show_and_second_repro_does_nothing(run):
    repo, env, *_ = run
    shown = dvc(repo, "metrics", "show", "--json", env=env)
    assert shown.returncode == 0 and "train_sft1" in shown.stdout
    status = dvc(repo, "status", env=env)
    # only the reporting stages run again (always_changed: checks and the run report on every repro)
    assert set(re.findall(r"^(\S+):$", status.stdout, re.M)) <= ALWAYS_RUN, status.stdout
    again = dvc(repo, "repro", env=env)
    assert again.returncode == 0
    assert set(re.findall(r"Running stage '([^']+)'", again.stdout)) == ALWAYS_RUN, again.stdout
    assert "| check | subject | status |" in again.stdout.split("Running stage 'run_report'")[1]  # printed last
