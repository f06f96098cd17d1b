"""The pipeline tests' shared setup: a fresh git clone of the working tree with every size cut (``TINY``),
``dvc`` run in it with the test's Python first on PATH, and the whole tiny run on a second dataset
(``own_data_run``, tests/pipeline/test_pipeline.py)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

TRAIN = 60
TINY = {
    "split": {"heldout": 3, "train": TRAIN},
    "curate": {"eval_questions": 2, "n_pairs": 40, "n_coa": 40, "n_cot": 40},
    # sft2 gets enough steps on the reference CoA for the student to open searches by itself, so rl2's
    # rollouts search (and their observations must be env-masked)
    "train": {
        "sft1": {
            "max_steps": 2,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1.0e-5,
            "max_length": 1024,
        },
        "sft2": {
            "max_steps": 8,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "learning_rate": 3.0e-4,
            "max_length": 1024,
        },
        "sft3": {
            "max_steps": 3,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1.0e-4,
            "max_length": 1024,
        },
    }
    | {
        # rl1's written observations: 48 tokens each, not the default's 400: where memory bandwidth bounds decoding,
        # a rollout's length is the step's time (docs/measurements, "The tiny run where memory bandwidth bounds decoding")
        stage: {
            "max_steps": 1,
            "num_generations": 4,
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 1,
        }
        | ({"observation_tokens": 48} if stage == "rl1" else {})
        for stage in ("rl1", "rl2")
    },
    # one environment for synthesis, RL and evaluation: room for the reference CoA (at most 181 tokens on the own
    # dataset's questions), 2 searches; every rollout and evaluation decodes at most this many steps
    "search": {"max_tokens": 192, "max_actions": 2},
    "reward_probe": {"limit": 2, "samples": 1},  # each probe: 2 rollouts per checkpoint
}


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def dvc(cwd: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True
    )


def tiny_clone(repo: Path, model_dir: str | Path, sizes: dict = TINY) -> dict:
    """The working tree's tracked and unignored files (no tests, benchmarks or committed metrics) copied
    into a new git repository ``repo`` with ``sizes`` merged into its params.yaml and committed; returns the
    environment to run ``dvc`` in it."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(("tests/", "bench/", "metrics/")):
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, repo / f)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(merge(params, sizes), sort_keys=False))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "tiny")
    return {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "COA_MODELS_DIR": str(Path(model_dir).parent),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(repo),
    }


# the own dataset of the whole tiny run (tests/pipeline/test_pipeline.py)
N_QUESTIONS, HELDOUT = 40, 3
CORPUS, QUESTIONS = "data/own/own_corpus.jsonl", "data/own/own_questions.jsonl"
SOURCE = "data/raw/hotpotqa/hotpotqa_dev_union_flashrag.jsonl.gz"
SOURCE_CORPUS = "data/raw/hotpotqa/hotpotqa_union_corpus.jsonl.gz"
OWN_SIZES = merge(TINY, {"split": {"heldout": HELDOUT, "train": 0}})
OWN_TRAIN = N_QUESTIONS - HELDOUT


def own_dataset(repo: Path) -> tuple[list[dict], list[dict]]:
    """Writes CORPUS and QUESTIONS into ``repo``; returns (questions, passages)."""
    from coa.questions import load_questions

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


def own_data_run(repo: Path, model_dir: str | Path) -> tuple[subprocess.CompletedProcess, dict, list, list]:
    """``dvc exp run -S data.corpus=CORPUS -S data.questions=QUESTIONS`` in a tiny clone at ``repo`` with its own
    dataset (``own_dataset``); returns the finished run (its ``stdout`` the log's last 8,000 characters), the
    environment it ran in, and the dataset's questions and passages. It runs alone, in the foreground: beside
    other tests its vLLM stages and theirs once took more memory than a 24 GiB CI machine has."""
    env = tiny_clone(repo, model_dir, OWN_SIZES)
    questions, passages = own_dataset(repo)
    git(repo, "add", "data/own")
    git(repo, "commit", "-qm", "own dataset")
    cmd = [sys.executable, "-m", "dvc", "exp", "run"]
    cmd += ["-S", f"data.corpus={CORPUS}", "-S", f"data.questions={QUESTIONS}"]
    log = repo.parent / "dvc_exp_run.log"
    with open(log, "w") as out:
        code = subprocess.run(cmd, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    return subprocess.CompletedProcess(cmd, code, log.read_text()[-8000:]), env, questions, passages
