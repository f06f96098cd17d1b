"""Publish a real curate run to the local Hub-protocol server with the real client, load it back
with ``datasets.load_dataset`` through the same server, re-publish, cut an upload, read the card."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from coa.io import OWNER_FILE
from tests.data_cards.conftest import ROOT, hub_env, publish_cli
from tests.data_cards.hub_rules import HUB_LICENSES, validate_card_metadata

LOAD = """
import json, sys
from datasets import load_dataset
repo, names = sys.argv[1], sys.argv[2].split(",")
out = {n: load_dataset(repo, n, split="train").to_list() for n in names}
print(json.dumps(out, default=str))
"""


def load_back(hub, repo_id: str, names: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, repo_id, ",".join(names)],
        env=hub_env(hub),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def rows_of(path) -> list[dict]:
    return json.loads(json.dumps(pq.read_table(path).to_pylist(), default=str))


@pytest.fixture(scope="module")
def published(curate_run, hub):
    proc = publish_cli(curate_run, hub, "repo_id=tester/autocoa-sets", "trajectories=true", "max_shard_bytes=20000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
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


@pytest.mark.slow
def test_second_publish_adds_no_commit(published, curate_run, hub):
    head = hub.commits("tester/autocoa-sets")[0].oid
    proc = publish_cli(curate_run, hub, "repo_id=tester/autocoa-sets", "trajectories=true", "max_shard_bytes=20000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "unchanged, no commit" in proc.stdout
    assert hub.commits("tester/autocoa-sets")[0].oid == head


@pytest.mark.slow
def test_cut_upload_fails_clearly_and_a_rerun_completes(curate_run, hub):
    repo = "tester/cut-sets"
    hub.cut(rf"/api/datasets/{repo}/commit/")  # the link drops half-way through the commit request
    proc = publish_cli(curate_run, hub, f"repo_id={repo}")
    assert proc.returncode == 1
    assert f"publishing to {hub.url}/datasets/{repo}@main failed, nothing was committed" in proc.stderr
    assert "Re-run the same command to finish" in proc.stderr
    assert [c.summary for c in hub.commits(repo)] == ["initial commit"]
    puts_before = sum(m == "PUT" for m, _ in hub.requests)
    proc = publish_cli(curate_run, hub, f"repo_id={repo}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "committed" in proc.stdout and len(hub.commits(repo)) == 2
    assert sum(m == "PUT" for m, _ in hub.requests) == puts_before  # LFS objects that arrived are not sent again
    assert {"pairs", "coa", "cot"} == {p.split("/")[0] for p in hub.commits(repo)[0].files if p.endswith(".parquet")}


def test_refused_token_is_named_but_never_printed(curate_run, hub):
    bad = "hf_" + "x" * 32
    proc = publish_cli(curate_run, hub, "repo_id=tester/refused", token=bad)
    assert proc.returncode == 2 and "the token in HF_TOKEN was refused (401)" in proc.stderr
    assert bad not in proc.stdout + proc.stderr and "tester/refused" not in hub.repos


def test_private_repo_on_a_branch(curate_run, hub):
    proc = publish_cli(curate_run, hub, "repo_id=tester/private-sets", "private=true", "revision=v1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    repo = hub.repos["tester/private-sets"]
    assert repo.private and len(repo.history("v1")) == 2 and len(repo.history("main")) == 1


def test_card_parses_and_its_licence_is_accepted(published, hub):
    readme = hub.commits("tester/autocoa-sets")[0].files["README.md"].data.decode()
    card = DatasetCard(readme)
    meta = card.data.to_dict()
    assert meta["license"] == "cc-by-sa-4.0" and meta["license"] in HUB_LICENSES  # HotpotQA rows share alike
    assert validate_card_metadata(readme) == []
    assert [c["config_name"] for c in meta["configs"]] == ["pairs", "coa", "cot", "trajectories"]
    assert meta["source_datasets"] == ["hotpotqa/hotpot_qa"] and meta["size_categories"] == ["n<1K"]
    for heading in (
        "Sets",
        "Teachers and prompts",
        "Retrieval and sampling",
        "Decontamination",
        "Review",
        "CoT × CoA",
        "Example rows",
        "Load and train",
        "Licence",
        "Citation",
        "Provenance",
    ):
        assert f"\n## {heading}\n" in card.text, heading
    assert "arXiv:2503.06580" in card.text and "HotpotQA" in card.text
    assert "![two_by_two](plots/two_by_two.png)" in card.text
    assert 'load_dataset("tester/autocoa-sets", "coa", split="train")' in card.text


def test_dest_writes_the_same_layout_without_uploading(curate_run, hub, tmp_path):
    n_repos = len(hub.repos)
    proc = publish_cli(curate_run, hub, "repo_id=tester/offline", f"dest={tmp_path / 'copy'}", "max_shard_bytes=20000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = {p.relative_to(tmp_path / "copy").as_posix() for p in (tmp_path / "copy").rglob("*") if p.is_file()}
    remote = set(hub.commits("tester/autocoa-sets")[0].files) - {".gitattributes"}
    assert local == remote - {p for p in remote if p.startswith("trajectories/")} | {OWNER_FILE}  # + what it wrote
    assert len(hub.repos) == n_repos


def test_empty_sets_and_missing_inputs(tmp_path, capsys):
    """The embedded 135M run writes empty sets: the card says so and no config is published."""
    from coa.trajectory import PAIR_SCHEMA, TRAJECTORY_SCHEMA
    from data_cards import publish

    sets = tmp_path / "sets"
    sets.mkdir()
    pq.write_table(PAIR_SCHEMA.empty_table(), sets / "pairs.parquet")
    for name in ("coa", "cot"):
        pq.write_table(TRAJECTORY_SCHEMA.empty_table(), sets / f"{name}.parquet")
    args = ["repo_id=tester/empty", f"sets_dir={sets}", f"curate_dir={tmp_path}", f"dest={tmp_path / 'out'}"]
    assert publish.main(args) == 0
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "Empty in this run, so not published as configs: `pairs`, `coa`, `cot`." in readme
    assert DatasetCard(readme).data.to_dict()["configs"] == [] and validate_card_metadata(readme) == []
    assert not list((tmp_path / "out").rglob("*.parquet"))
    (sets / "cot.parquet").unlink()
    assert publish.main(args) == 2
    assert f"{sets / 'cot.parquet'}: set not found" in capsys.readouterr().err
    assert publish.main(["repo_id=no-slash"]) == 2
    assert "repo_id must be ORG/NAME, got 'no-slash'" in capsys.readouterr().err
