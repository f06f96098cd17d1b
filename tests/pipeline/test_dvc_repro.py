"""The real pipeline end to end with `dvc repro` on a tiny configuration, in a fresh git clone.

Every stage runs for real (index, split, vLLM CPU synthesis, curation, five TRL stages, evaluation
of seven models, report); sizes are cut to a handful of questions and one step per training stage.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.model]

TINY = {
    "split": {"heldout": 3, "train": 6},
    "synth": {"max_tokens": 96, "max_actions": 2, "concurrency": 8},
    "curate": {"eval_questions": 1, "n_pairs": 20, "n_coa": 20, "n_cot": 20},
    "train": {stage: {"max_steps": 1, "max_length": 512} for stage in ("sft1", "sft2", "sft3")} | {
        stage: {"max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 2, "max_tokens": 48,
                "max_actions": 1} for stage in ("rl1", "rl2")},
    "evaluate": {"max_tokens": 96, "max_actions": 2},
}


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def dvc(cwd: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def clone(tmp_path_factory, model_dir):
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(("tests/", "bench/", "metrics/")):
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, repo / f)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(merge(params, TINY), sort_keys=False))
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "COA_MODELS_DIR": str(Path(model_dir).parent),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(repo)}
    first = dvc(repo, "repro", env=env)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    return repo, env


def test_every_stage_wrote_outputs_and_metrics(clone):
    repo, _ = clone
    for path in ["runs/index/index.json", "runs/split/heldout.jsonl", "runs/curate/analyze/two_by_two.png",
                 "runs/curate/sets/coa.parquet", "runs/curate/sets/pairs.parquet", "runs/eval/table.md"]:
        assert (repo / path).exists(), path
    for stage in ("sft1", "sft2", "sft3", "rl1", "rl2"):
        assert (repo / f"runs/train/{stage}/model.safetensors").exists(), stage
        assert json.loads((repo / f"metrics/train_{stage}.json").read_text())
    for name in ("synth_cot", "synth_coa"):
        assert json.loads((repo / f"metrics/{name}.json").read_text())["dataset"]["rows"] == 6
    # branches exist only where a CoA trajectory searched; the tiny teacher may not have
    assert "dataset" in json.loads((repo / "metrics/synth_branch.json").read_text())
    for name in ("base", "react", "sft1", "sft2", "sft3", "rl1", "rl2"):
        metrics = json.loads((repo / f"runs/eval/{name}/metrics.json").read_text())
        assert metrics["datasets"]["heldout"]["n"] == 3
    table = (repo / "runs/eval/table.md").read_text()
    assert all(f"| {name} (" in table for name in ("base", "react", "sft1", "rl2"))


def test_metrics_show_and_second_repro_does_nothing(clone):
    repo, env = clone
    shown = dvc(repo, "metrics", "show", "--json", env=env)
    assert shown.returncode == 0 and "train_sft1" in shown.stdout
    status = dvc(repo, "status", env=env)
    assert "up to date" in status.stdout, status.stdout
    again = dvc(repo, "repro", env=env)
    assert again.returncode == 0
    assert "Running stage" not in again.stdout, again.stdout
