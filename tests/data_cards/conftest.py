"""A real curate run to publish, and the local Hub-protocol server (``FakeHubServer``) to publish to.

The run: CoT and CoA trajectories for 40 embedded HotpotQA questions (real BM25 observations,
``tests/fixtures/trajectories.py``), then the real score → analyze → branches → pairs → sets steps, in the layout
``dvc repro`` writes (``runs/curate/{score,analyze,pairs,sets}``).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data_cards.fake_hub import FakeHubServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def curate_run(questions, searcher, tmp_path_factory):
    from coa.trajectory import read_trajectories, write_trajectories
    from curate import analyze, pairs, score, sets
    from tests.fixtures.trajectories import branch_trajectories, realistic_trajectories
    from tests.curate.helpers import config

    root = tmp_path_factory.mktemp("run")
    curate = root / "runs" / "curate"
    traj = write_trajectories(
        root / "runs" / "synth" / "part-000.parquet", realistic_trajectories(questions[:40], searcher)
    )
    score.run(config(curate / "score", input=[str(traj)]))
    analyze.run(config(curate / "analyze", step="analyze", input=[str(curate / "score")], eval_questions=4))
    decisions = [t.to_row() for t in read_trajectories(curate / "analyze" / "decisions.parquet")]

    def answer(d, kind):  # the acting branch answers right for even questions, the other for odd ones
        right = (int(d["question_id"], 16) % 2 == 0) == (kind == "force")
        return d["golden_answers"][0] if right else "Nobody"

    branches = write_trajectories(
        root / "runs" / "synth" / "branch.parquet", branch_trajectories(decisions, searcher, answer)
    )
    pairs.run(config(curate / "pairs", step="pairs", input=[str(branches)]))
    sets.run(
        config(
            curate / "sets",
            step="sets",
            input=[str(curate / "score")],
            pairs=str(curate / "pairs"),
            n_pairs=8,
            n_coa=30,
            n_cot=20,
            eval_questions=4,
            max_per_question=2,
        )
    )
    return root


@pytest.fixture(scope="session")
def hub():
    """One server per test session on 127.0.0.1 (a random port); each test uses its own repo name."""
    server = FakeHubServer(token="hf_" + secrets.token_hex(16)).start()
    yield server
    server.stop()


def hub_env(hub: FakeHubServer, token: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_TOKEN=token or hub.token,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(Path(os.environ.get("TMPDIR", "/tmp")) / f"hf-home-{os.getpid()}"),
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=str(ROOT),
    )
    env["HF_HUB_OFFLINE"] = "0"
    return env


def publish_cli(
    run_root: Path, hub: FakeHubServer, *args: str, token: str | None = None
) -> subprocess.CompletedProcess:
    """``python -m data_cards.publish`` in a fresh process: HF_ENDPOINT / HF_TOKEN reach the real client."""
    curate = run_root / "runs" / "curate"
    argv = [
        sys.executable,
        "-m",
        "data_cards.publish",
        f"sets_dir={curate / 'sets'}",
        f"curate_dir={curate}",
        f"index={run_root / 'runs' / 'index'}",
        f"params_file={ROOT / 'params.yaml'}",
        f"dvc_lock={ROOT / 'dvc.lock'}",
        *args,
    ]
    return subprocess.run(argv, cwd=ROOT, env=hub_env(hub, token), capture_output=True, text=True, timeout=300)
