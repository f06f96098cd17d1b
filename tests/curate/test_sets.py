"""The three sets: sizes, strata, the question split, decontamination, review and loud shortfalls."""

import polars as pl
import pytest

from coa.questions import DEFAULT_QUESTIONS, load_questions
from coa.trajectory import read_trajectories, write_trajectories
from curate import analyze, pairs, score, sets
from tests.fixtures.trajectories import branch_trajectories, contrasting_answer
from tests.curate.helpers import config


@pytest.fixture(scope="module")
def upstream(real_file, searcher, tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    score.run(config(root / "score", input=[str(real_file)]))
    analyze.run(config(root / "analyze", step="analyze", input=[str(root / "score")], eval_questions=8))
    decisions = [t.to_row() for t in read_trajectories(root / "analyze" / "decisions.parquet")]
    branches = write_trajectories(
        root / "branches.parquet", branch_trajectories(decisions, searcher, contrasting_answer)
    )
    pairs.run(config(root / "pairs", step="pairs", input=[str(branches)]))
    return root, pl.read_parquet(root / "score" / "scores.parquet")


def run_sets(root, out, **kw):
    kw = {"n_pairs": 10, "n_coa": 40, "n_cot": 30, "eval_questions": 8, "max_per_question": 2, **kw}
    metrics = sets.run(config(out, step="sets", input=[str(root / "score")], pairs=str(root / "pairs"), **kw))
    return metrics, {n: pl.read_parquet(out / f"{n}.parquet") for n in ("pairs", "coa", "cot")}


def test_sizes_strata_and_split(upstream, tmp_path):
    root, scores = upstream
    metrics, got = run_sets(root, tmp_path)
    assert (got["pairs"].height, got["coa"].height, got["cot"].height) == (10, 40, 30)
    held = {q["id"] for q in load_questions(tmp_path / "eval_questions.parquet")}
    assert len(held) == 8
    bad = set(scores.filter(pl.col("contamination").is_not_null())["question_id"])
    assert bad  # the AutoCoA test set shares HotpotQA dev questions with the fixtures
    for name, df in got.items():
        assert not set(df["question_id"]) & held, name  # no eval-split question in any training set
        assert not set(df["question_id"]) & bad, name  # no contaminated question
        assert df["id"].n_unique() == df.height
        assert df.group_by("question_id").len()["len"].max() <= 2
    for name in ("coa", "cot"):
        assert got[name]["correct"].all() and set(got[name]["mode"]) == {name}
        # each stratum's share follows what qualifies (largest remainder): within one row of proportional
        qualified = scores.filter(
            (pl.col("mode") == name) & pl.col("kept") & pl.col("correct") & ~pl.col("question_id").is_in(list(held))
        )
        assert metrics[name]["qualified"] == qualified.height
        pool = (
            qualified.with_columns(_o=pl.col("id").hash(0))
            .sort("_o", "id")
            .filter(pl.int_range(pl.len()).over("question_id") < 2)
        )
        n = got[name].height
        written = dict(got[name].group_by("stratum").len().iter_rows())
        assert sum(written.values()) == n and metrics[name]["strata"] == dict(sorted(written.items()))
        types = sets.question_types(load_questions(DEFAULT_QUESTIONS))
        pool = pool.join(types, on="question_id", how="left").with_columns(
            qtype=pl.col("qtype").fill_null(sets.guess_type(pl.col("question")))
        )
        bucket = pl.when(pl.col("n_calls") >= 4).then(pl.lit("4+")).otherwise(pl.col("n_calls").cast(pl.String))
        share = dict(pool.group_by(pl.format("actions={}|{}", bucket, pl.col("qtype"))).len().iter_rows())
        assert set(written) <= set(share) and len(share) >= 2
        for stratum, k in share.items():
            assert abs(written.get(stratum, 0) - n * k / pool.height) < 1, (name, stratum)
    assert set(got["coa"]["n_calls"]) >= {0, 1, 2, 3}
    assert set(got["pairs"]["direction"]) == {"act", "no_act"}


def test_ids_are_stable(upstream, tmp_path):
    root, _ = upstream
    _, a = run_sets(root, tmp_path / "a")
    _, b = run_sets(root, tmp_path / "b")
    assert all(a[n]["id"].to_list() == b[n]["id"].to_list() for n in a)


def test_shortfall_is_loud(upstream, tmp_path, capsys):
    root, _ = upstream
    with pytest.warns(UserWarning, match=r"cot: asked for 100000 rows but only \d+ qualify"):
        metrics, got = run_sets(root, tmp_path, n_cot=100000, max_per_question=0)
    assert "WARNING: cot" in capsys.readouterr().err
    assert metrics["cot"]["written"] == got["cot"].height == metrics["cot"]["qualified"]
    assert metrics["cot"]["short_by"] == 100000 - got["cot"].height


def test_review_vetoes_accepts_and_corrects(upstream, tmp_path):
    root, scores = upstream
    everything = {"n_coa": 100000, "n_pairs": 100000, "max_per_question": 0}
    with pytest.warns(UserWarning):
        _, before = run_sets(root, tmp_path / "before", **everything)
    held = set(pl.read_parquet(tmp_path / "before" / "eval_questions.parquet")["id"])
    coa = scores.filter((pl.col("mode") == "coa") & pl.col("kept") & ~pl.col("question_id").is_in(list(held)))
    right, wrong = coa.filter("correct")["id"].to_list(), coa.filter(~pl.col("correct"))["id"].to_list()
    wrong_row = coa.filter(pl.col("id") == wrong[1]).row(0, named=True)
    review = pl.DataFrame(
        {
            "row_id": [right[0], wrong[0], right[1], wrong[1], before["pairs"]["id"][0]],
            "decision": ["reject", "accept", "accept", "accept", "reject"],
            "corrected_answer": [None, None, "Definitely Not The Answer", wrong_row["pred"], None],
        }
    )
    review.write_csv(tmp_path / "review.csv")
    with pytest.warns(UserWarning):
        metrics, after = run_sets(root, tmp_path / "after", review=str(tmp_path / "review.csv"), **everything)
    ids = set(after["coa"]["id"])
    assert right[0] not in ids and before["pairs"]["id"][0] not in set(after["pairs"]["id"])  # vetoed
    assert wrong[0] in ids  # accepted although scored wrong
    assert right[1] in ids  # accepted: kept although its corrected gold no longer matches
    fixed = after["coa"].filter(pl.col("id") == wrong[1]).row(0, named=True)
    assert fixed["golden_answers"] == [wrong_row["pred"]] and fixed["correct"] and fixed["em"] == 1.0
    assert metrics["coa"]["review_rejected"] == 1 and metrics["pairs"]["review_rejected"] == 1


@pytest.mark.slow
def test_a_swapped_pair_stays_with_its_sides_exchanged(upstream, tmp_path):
    root, _ = upstream
    everything = {"n_coa": 100000, "n_pairs": 100000, "max_per_question": 0}
    with pytest.warns(UserWarning):
        _, before = run_sets(root, tmp_path / "before", **everything)
    pair = before["pairs"].row(0, named=True)
    pl.DataFrame({"row_id": [pair["id"]], "decision": ["swap"]}).write_csv(tmp_path / "review.csv")
    with pytest.warns(UserWarning):
        metrics, after = run_sets(root, tmp_path / "after", review=str(tmp_path / "review.csv"), **everything)
    swapped = after["pairs"].filter(pl.col("id") == pair["id"]).row(0, named=True)
    assert (swapped["chosen"], swapped["rejected"]) == (pair["rejected"], pair["chosen"])
    assert (swapped["chosen_id"], swapped["chosen_score"]) == (pair["rejected_id"], pair["rejected_score"])
    assert swapped["chosen_ends_turn"] == pair["rejected_ends_turn"] and swapped["prefix"] == pair["prefix"]
    assert {pair["direction"], swapped["direction"]} == {"act", "no_act"}
    assert metrics["pairs"]["review_swapped"] == 1 and after["pairs"].height == before["pairs"].height
    coa_id = after["coa"]["id"][0]
    pl.DataFrame({"row_id": [coa_id], "decision": ["swap"]}).write_csv(tmp_path / "bad.csv")
    with pytest.raises(
        ValueError, match=rf"review: row '{coa_id}' is a coa trajectory; 'swap' is a decision for pairs only"
    ):
        run_sets(root, tmp_path / "bad", review=str(tmp_path / "bad.csv"), **everything)


def test_bad_review_rows_name_file_row_and_column(upstream, tmp_path):
    root, _ = upstream
    path = tmp_path / "review.csv"
    pl.DataFrame({"row_id": ["a", "b"], "decision": ["accept", "maybe"]}).write_csv(path)
    with pytest.raises(ValueError, match=rf"{path}: row 2: column 'decision' is 'maybe'"):
        run_sets(root, tmp_path / "x", review=str(path))
