"""Decision points and prefix-matched pairs in both directions, from real trajectories."""

import json

import polars as pl
import pyarrow.parquet as pq
import pytest

from coa.formats import AUTOCOA as F
from coa.trajectory import PAIR_SCHEMA, read_trajectories, write_trajectories
from curate import analyze, pairs, score
from tests.fixtures.trajectories import branch_trajectories, contrasting_answer
from tests.curate.helpers import config


@pytest.fixture(scope="module")
def flow(real_file, searcher, tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    score.run(config(root / "score", input=[str(real_file)]))
    analyze.run(config(root / "analyze", step="analyze", input=[str(root / "score")], eval_questions=5))
    decisions = [t.to_row() for t in read_trajectories(root / "analyze" / "decisions.parquet")]
    branches = write_trajectories(
        root / "branches.parquet", branch_trajectories(decisions, searcher, contrasting_answer)
    )
    metrics = pairs.run(config(root / "pairs", step="pairs", input=[str(branches)]))
    parents = {t.id: t for t in read_trajectories(real_file)}
    return root, decisions, parents, pl.read_parquet(root / "pairs" / "pairs.parquet"), metrics


def test_decision_prefix_is_the_parent_cut_before_its_first_search(flow):
    _, decisions, parents, _, _ = flow
    assert decisions
    for d in decisions:
        parent = parents[d["parent_id"]]
        k = d["decision_index"]
        assert d["mode"] == "decision" and len(d["segments"]) == k and d["sample"] == 0
        assert [s["text"] for s in d["segments"][:-1]] == [s["text"] for s in parent.segments[: k - 1]]
        cut = d["segments"][-1]["text"]
        assert parent.segments[k - 1]["text"].startswith(cut + F.search_open)
        assert F.search_open not in "".join(s["text"] for s in d["segments"])  # before the FIRST search


def test_every_action_mode(real_file, tmp_path):
    score.run(config(tmp_path / "score", input=[str(real_file)]))
    analyze.run(
        config(
            tmp_path / "an", step="analyze", input=[str(tmp_path / "score")], decision_points="every", eval_questions=5
        )
    )
    rows = read_trajectories(tmp_path / "an" / "decisions.parquet")
    scores = pl.read_parquet(tmp_path / "score" / "scores.parquet")
    calls = dict(scores.select("id", "n_calls").iter_rows())
    per_parent = (
        pl.DataFrame({"p": [r.parent_id for r in rows], "s": [r.sample for r in rows]})
        .group_by("p")
        .agg(pl.len(), pl.col("s").max())
    )
    for p, n, top in per_parent.iter_rows():
        assert n == calls[p] and top == n - 1  # one decision before each search call
    parents = {t.id: t for t in read_trajectories(real_file)}
    for d in rows:  # the k-th decision cuts just before the k-th search call, wherever it is
        parent, k = parents[d.parent_id], d.decision_index
        cut = d.segments[-1]["text"]
        assert [s["text"] for s in d.segments[:-1]] == [s["text"] for s in parent.segments[: k - 1]]
        assert parent.segments[k - 1]["text"].startswith(cut + F.search_open)
        assert "".join(s["text"] for s in d.segments).count(F.search_open) == d.sample
    assert max(r.decision_index for r in rows) > 1  # later calls sit in later segments


def test_pairs_in_both_directions_are_prefix_matched(flow):
    root, decisions, parents, df, metrics = flow
    assert pq.read_schema(root / "pairs" / "pairs.parquet").equals(PAIR_SCHEMA)
    assert set(df["direction"]) == {"act", "no_act"}
    assert metrics["points_without_pair"]["no_contrast"] > 0  # both right: no pair
    branches = {t.id: t for t in read_trajectories(root / "branches.parquet")}
    for p in df.iter_rows(named=True):
        chosen, rejected = branches[p["chosen_id"]], branches[p["rejected_id"]]
        k = p["decision_index"]
        prefix = "".join(s["text"] for s in chosen.segments[:k])
        assert chosen.segments[:k] == rejected.segments[:k]  # byte-identical shared prefix
        assert p["prompt"] == chosen.prompt + prefix == parents[chosen.parent_id].prompt + prefix
        acting, other = ("chosen", "rejected") if p["direction"] == "act" else ("rejected", "chosen")
        assert p[acting].startswith(F.search_open) and p[acting].endswith(F.search_close)
        assert p[acting].count(F.search_close) == 1 and not p[f"{acting}_ends_turn"]
        assert not p[other].startswith(F.search_open) and p[f"{other}_ends_turn"] and "\\boxed{" in p[other]
        assert p["chosen"][0] != p["rejected"][0]  # they differ right after the shared prefix
        whole = p["prompt"] + p[acting]
        force = branches[p[f"{acting}_id"]]
        assert (force.prompt + force.completion).startswith(whole)
        assert p["chosen_score"] == 1.0 and p["rejected_score"] == 0.0


def test_prefix_mismatch_is_skipped_and_bad_branch_ids_fail(flow, tmp_path):
    root, *_ = flow
    rows = read_trajectories(root / "branches.parquet")
    first = rows[0]
    first.segments[0] = dict(first.segments[0], text=first.segments[0]["text"] + " ")  # prefix no longer shared
    path = write_trajectories(tmp_path / "b.parquet", rows)
    metrics = pairs.run(config(tmp_path / "p", step="pairs", input=[str(path)]))
    assert metrics["points_without_pair"]["prefix_mismatch"] == 1
    rows[1].branch_id = rows[1].branch_id.replace(":force", ":maybe").replace(":forbid", ":maybe")
    bad = write_trajectories(tmp_path / "bad.parquet", rows)
    with pytest.raises(ValueError, match=rf"{bad}: row id '{rows[1].id}': column 'branch_id'"):
        pairs.run(config(tmp_path / "p2", step="pairs", input=[str(bad)]))


def test_metrics_count_directions(flow):
    root, *_, df, metrics = flow
    saved = json.loads((root / "pairs" / "metrics.json").read_text())
    assert saved["pairs"] == df.height == sum(saved["by_direction"].values())
