"""Publish a real curate run to the local Hub-protocol server with the real client, load it back
with ``datasets.load_dataset`` through the same server, re-publish, cut an upload, read the card."""
from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from tests.data_cards.conftest import ROOT, hub_env, publish_cli
from tests.data_cards.fake_hub import HUB_LICENSES, validate_card_metadata

LOAD = """
import json, sys
from datasets import load_dataset
repo, names = sys.argv[1], sys.argv[2].split(",")
out = {n: load_dataset(repo, n, split="train").to_list() for n in names}
print(json.dumps(out, default=str))
"""


def load_back(hub, repo_id: str, names: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", LOAD, repo_id, ",".join(names)], env=hub_env(hub),
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def rows_of(path) -> list[dict]:
    return json.loads(json.dumps(pq.read_table(path).to_pylist(), default=str))


@pytest.fixture(scope="module")
def published(curate_run, hub):
    proc = publish_cli(curate_run, hub, "repo_id=tester/autocoa-sets", "trajectories=true",
                       "max_shard_bytes=20000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_round_trip_through_the_server(published, curate_run, hub):
    sets = curate_run / "runs" / "curate" / "sets"
    commits = hub.commits("tester/autocoa-sets")
    assert len(commits) == 2  # the repo's initial commit + one publish commit
    files = commits[0].files
    assert {"README.md", "plots/two_by_two.png"} <= set(files)
    assert sum(p.startswith("coa/train-") for p in files) > 1  # sharded at max_shard_bytes
    assert all(files[p].lfs for p in files if p.endswith((".parquet", ".png")))  # sent through LFS
    called = {path.split("?")[0].rsplit("/", 1)[0] for _, path in hub.requests}
    assert {"/api", "/api/repos", "/datasets/tester/autocoa-sets.git/info/lfs/objects"} <= called
    got = load_back(hub, "tester/autocoa-sets", ["pairs", "coa", "cot", "trajectories"])
    for name in ("pairs", "coa", "cot"):
        assert got[name] == rows_of(sets / f"{name}.parquet"), name
        assert len(got[name]) > 0
    scores = pq.read_table(curate_run / "runs/curate/score/scores.parquet")
    assert len(got["trajectories"]) == scores.num_rows
    assert "token" not in published.stdout.lower() and hub.token not in published.stdout + published.stderr


def test_second_publish_adds_no_commit(published, curate_run, hub):
    head = hub.commits("tester/autocoa-sets")[0].oid
    proc = publish_cli(curate_run, hub, "repo_id=tester/autocoa-sets", "trajectories=true", "max_shard_bytes=20000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "unchanged, no commit" in proc.stdout
    assert hub.commits("tester/autocoa-sets")[0].oid == head
