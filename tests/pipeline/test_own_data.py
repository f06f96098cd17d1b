"""The whole method on a second dataset chosen by params alone, as a user would run it:

    dvc exp run -S data.corpus=data/own/own_corpus.jsonl -S data.questions=data/own/own_questions.jsonl

in a fresh git clone with every size cut. The dataset is built here from local files and made different
from the embedded one wherever the FlashRAG form allows: a few HotpotQA dev questions that no evaluation
set holds, with new question ids and only ``golden_answers`` and ``metadata.gold_paragraph_ids`` (no type,
level or supporting facts); their own candidate paragraphs as a separate corpus in ``{"id", "contents"}``
form with new ids, uncompressed. It is self-consistent: each question's gold paragraphs are in the corpus.
The checks: the run reaches the report, and the index, split, synthesis and evaluation used this dataset.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import yaml

from coa.questions import load_questions
from tests.pipeline.tiny import TINY, dvc, git, merge, tiny_clone

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.model]

N_QUESTIONS, HELDOUT = 40, 3
CORPUS, QUESTIONS = "data/own/own_corpus.jsonl", "data/own/own_questions.jsonl"
SOURCE = "data/raw/hotpotqa/hotpotqa_dev_union_flashrag.jsonl.gz"
SOURCE_CORPUS = "data/raw/hotpotqa/hotpotqa_union_corpus.jsonl.gz"
# TINY's sizes with one step per training stage: this test is about where the data go, not about learning
STEPS = {"sft1": 1, "sft2": 2, "sft3": 1, "rl1": 1, "rl2": 1}
SIZES = merge(
    TINY, {"split": {"heldout": HELDOUT, "train": 0}, "train": {stage: {"max_steps": n} for stage, n in STEPS.items()}}
)


def own_dataset(repo: Path) -> tuple[list[dict], list[dict]]:
    """Writes CORPUS and QUESTIONS into ``repo``; returns (questions, passages)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    evaluation = {
        q["question"].lower()
        for path in params["curate"]["eval_sets"]
        if not path.startswith("runs/")
        for q in load_questions(repo / path)
    }  # curate would drop a training question they hold
    source = [q for q in load_questions(repo / SOURCE) if q["question"].lower() not in evaluation]
    chosen = source[::-1][:N_QUESTIONS]
    wanted = {pid for q in chosen for pid in q["metadata"]["context_paragraph_ids"]}
    with gzip.open(repo / SOURCE_CORPUS, "rt") as f:
        paragraphs = {p["id"]: p for p in map(json.loads, f) if p["id"] in wanted}
    new_id = {old: f"own-p{i}" for i, old in enumerate(sorted(wanted, key=lambda pid: int(pid[2:])))}
    passages = [
        {"id": new_id[old], "contents": f'"{paragraphs[old]["title"]}"\n{paragraphs[old]["text"]}'} for old in new_id
    ]
    questions = [
        {
            "id": f"own-q{i}",
            "question": q["question"],
            "golden_answers": q["golden_answers"],
            "metadata": {"gold_paragraph_ids": [new_id[p] for p in q["metadata"]["gold_paragraph_ids"]]},
        }
        for i, q in enumerate(chosen)
    ]
    assert all(q["metadata"]["gold_paragraph_ids"] and q["golden_answers"] for q in questions)
    for path, rows in ((CORPUS, passages), (QUESTIONS, questions)):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return questions, passages


@pytest.fixture(scope="module")
def run(tmp_path_factory, model_dir):
    repo = tmp_path_factory.mktemp("own_data") / "repo"
    env = tiny_clone(repo, model_dir, SIZES)
    questions, passages = own_dataset(repo)
    git(repo, "add", "data/own")
    git(repo, "commit", "-qm", "own dataset")
    done = dvc(repo, "exp", "run", "-S", f"data.corpus={CORPUS}", "-S", f"data.questions={QUESTIONS}", env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    yield repo, questions, passages
    shutil.rmtree(repo.parent, ignore_errors=True)  # five checkpoints and their DVC cache


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_run_reaches_the_report_and_names_the_data(run):
    repo, _, _ = run
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["data"] == {"corpus": CORPUS, "questions": QUESTIONS}
    report = (repo / "runs/report/report.md").read_text()
    assert f"- data: questions `{QUESTIONS}`, corpus `{CORPUS}`" in report
    assert json.loads((repo / "runs/report/checks.json").read_text())["checks"]


def test_the_index_holds_the_own_corpus(run):
    repo, _, passages = run
    meta = json.loads((repo / "runs/index/index.json").read_text())
    assert (meta["corpus"], meta["n_docs"]) == (CORPUS, len(passages))


def test_split_synthesis_and_evaluation_used_the_own_questions(run):
    repo, questions, _ = run
    ids = {q["id"] for q in questions}
    held, train = read_jsonl(repo / "runs/split/heldout.jsonl"), read_jsonl(repo / "runs/split/train.jsonl")
    assert len(held) == HELDOUT and len(train) == N_QUESTIONS - HELDOUT
    assert {q["id"] for q in held} | {q["id"] for q in train} == ids
    for mode in ("cot", "coa"):
        summary = json.loads((repo / f"metrics/synth_{mode}.json").read_text())
        assert summary["dataset"]["rows"] == N_QUESTIONS - HELDOUT, summary
    # the reference CoA answers from what the search returned: right answers mean the own corpus was searched
    assert json.loads((repo / "metrics/synth_coa.json").read_text())["dataset"]["em"] > 0.5
    for name in ("base", "react", "sft1", "sft2", "sft3", "rl1", "rl2"):
        rows = json.loads((repo / f"runs/eval/{name}/per_question.json").read_text())
        assert {r["question_id"] for r in rows} == {q["id"] for q in held}, name
