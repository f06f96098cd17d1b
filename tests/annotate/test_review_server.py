"""Against the real Argilla server on loopback: push real sets, decide in the UI as a person, pull, and the
curated sets change; resume, duplicates, disagreement and bad input."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import polars as pl
import pytest

from annotate import credentials
from annotate.client import ServerDown
from annotate.config import ReviewConfig
from annotate.render import row_of
from annotate.run import execute, main
from tests.fixtures.review_run import run_sets
from tests.annotate.ui import decide, open_dataset, signed_in

# the README's review screenshots: written to docs/ only when asked (COA_SCREENSHOTS=docs), so a test run
# never modifies tracked files
SHOTS = Path(__file__).resolve().parents[2] / "docs" if os.environ.get("COA_SCREENSHOTS") == "docs" else None
pytestmark = pytest.mark.server


def review_cfg(stack, sample: Path, tmp_path: Path, **kw) -> ReviewConfig:
    kw.setdefault("sets_dir", str(sample / "sets"))
    return ReviewConfig(
        api_url=stack.cfg.api_url,
        data_dir=str(stack.data),
        review=str(tmp_path / "review" / "review.parquet"),
        known_rows=[str(sample / "score" / "scores.parquet"), str(sample / "pairs" / "pairs.parquet")],
        **kw,
    )


def client_of(stack):
    from annotate.client import connect

    return connect(stack.cfg.api_url, credentials.owner_api_key(stack.data))


def records_of(stack, name: str) -> list:
    client = client_of(stack)
    dataset = client.datasets(name=name, workspace="argilla")
    return list(dataset.records(with_responses=True))


def test_push_decide_in_ui_pull_and_the_sets_change(stack, sample, tmp_path):
    shots = SHOTS or tmp_path
    cfg = review_cfg(stack, sample, tmp_path, action="push")
    before = {n: pl.read_parquet(sample / "sets" / f"{n}.parquet") for n in ("coa", "cot", "pairs")}
    report = execute(cfg)
    assert {n: r["sent"] for n, r in report.items()} == {n: df.height for n, df in before.items()}

    url, password = stack.cfg.api_url, credentials.load_or_create(stack.data)["annotator_password"]
    with signed_in(url, "annotator", password) as page:
        open_dataset(page, url, "autocoa-coa")
        page.screenshot(path=str(shots / "review_trajectory.png"))
        decide(page, "reject")
        decide(page, "accept", corrected_answer="Nobody in particular")
        open_dataset(page, url, "autocoa-pairs")
        page.screenshot(path=str(shots / "review_pair.png"))

    metrics = execute(ReviewConfig(**{**cfg.__dict__, "action": "pull"}))
    table = pl.read_parquet(cfg.review)
    coa = table.filter(pl.col("set") == "coa").sort("decision")
    assert coa["decision"].to_list() == ["accept", "reject"] and table.height == 2
    assert coa["n_reviewers"].to_list() == [1, 1] and metrics["sets"]["coa"]["resolved"] == 2
    corrected, rejected = coa["row_id"].to_list()
    assert coa["corrected_answer"].to_list() == ["Nobody in particular", None]

    after = tmp_path / "after"
    run_sets(sample, after, review=cfg.review)  # curate sets reads the pulled table as it is
    got = pl.read_parquet(after / "coa.parquet")
    assert rejected in set(before["coa"]["id"]) and rejected not in set(got["id"])  # a rejected row leaves
    row = got.filter(pl.col("id") == corrected).row(0, named=True)  # accepted, scored again against the fix
    assert row["golden_answers"] == ["Nobody in particular"] and row["em"] == 0.0 and not row["correct"]
    assert before["coa"].filter(pl.col("id") == corrected)["em"].to_list() == [1.0]

    again = execute(cfg)  # a re-push sends nothing and duplicates nothing
    assert all(r["sent"] == 0 for r in again.values())
    assert len(records_of(stack, "autocoa-coa")) == before["coa"].height


def test_interrupted_push_resumes_and_changed_content_is_a_new_record(stack, sample, tmp_path, monkeypatch):
    cfg = review_cfg(stack, sample, tmp_path, action="push", sets=["cot"], dataset_prefix="resume-", batch_size=5)
    from argilla._api._records import RecordsAPI

    real, calls = RecordsAPI.bulk_upsert, []

    def flaky(self, dataset_id, records):
        calls.append(len(records))
        if len(calls) == 3:
            raise httpx.ConnectError("connection refused")
        return real(self, dataset_id, records)

    monkeypatch.setattr(RecordsAPI, "bulk_upsert", flaky)
    with pytest.raises(ServerDown, match=rf"{stack.cfg.api_url} is not reachable .*after 10 of \d+ new records"):
        execute(cfg)
    monkeypatch.setattr(RecordsAPI, "bulk_upsert", real)
    n = pl.read_parquet(sample / "sets" / "cot.parquet").height
    report = execute(cfg)["cot"]
    assert (report["already_there"], report["sent"]) == (10, n - 10)
    assert len(records_of(stack, "resume-cot")) == n

    changed = tmp_path / "sets"
    changed.mkdir()
    df = pl.read_parquet(sample / "sets" / "cot.parquet")
    first = df["id"][0]
    df.with_columns(answer=pl.when(pl.col("id") == first).then(pl.lit("Changed")).otherwise("answer")).write_parquet(
        changed / "cot.parquet"
    )
    report = execute(ReviewConfig(**{**cfg.__dict__, "sets_dir": str(changed)}))["cot"]
    assert (report["sent"], report["changed_content"]) == (1, 1)
    ids = [str(r.id) for r in records_of(stack, "resume-cot")]
    assert len(ids) == n + 1 and sum(row_of(i) == first for i in ids) == 2


def _answer_as(stack, dataset_name: str, answers: dict[int, list[tuple[str, dict]]]) -> list[str]:
    """Log submitted answers by named users onto records by position; returns the records' row ids."""
    import argilla as rg

    client = client_of(stack)
    dataset = client.datasets(name=dataset_name, workspace="argilla")
    records = sorted(dataset.records(), key=lambda r: str(r.id))
    for i, by_user in answers.items():
        for user, values in by_user:
            uid = client.users(username=user).id
            for question, value in values.items():
                records[i].responses.add(rg.Response(question, value, user_id=uid, status="submitted"))
    dataset.records.log([records[i] for i in answers])
    return [row_of(str(records[i].id)) for i in answers]


def test_several_reviewers_majority_reject_wins_ties_and_agreement(stack, sample, tmp_path):
    cfg = review_cfg(stack, sample, tmp_path, action="push", sets=["cot"], dataset_prefix="multi-", min_submitted=2)
    execute(cfg)
    tie, agree, alone = _answer_as(
        stack,
        "multi-cot",
        {
            0: [("annotator", {"decision": "accept"}), ("annotator2", {"decision": "reject"})],
            1: [
                ("annotator", {"decision": "accept", "corrected_answer": "Paris"}),
                ("annotator2", {"decision": "accept", "corrected_answer": "Paris", "first_bad_step": "2"}),
            ],
            2: [("annotator", {"decision": "reject"})],
        },
    )
    metrics = execute(ReviewConfig(**{**cfg.__dict__, "action": "pull"}))
    table = {r["row_id"]: r for r in pl.read_parquet(cfg.review).iter_rows(named=True)}
    assert set(table) == {tie, agree}  # one answer of the two needed: still pending
    assert (table[tie]["decision"], table[tie]["n_accept"], table[tie]["n_reject"]) == ("reject", 1, 1)
    assert (table[agree]["decision"], table[agree]["corrected_answer"], table[agree]["first_bad_step"]) == (
        "accept",
        "Paris",
        2,
    )
    m = metrics["sets"]["cot"]
    assert (m["pending"], m["ties"], m["pairwise_agreement"]) == (1, 1, 0.5)


def test_first_bad_step_offers_the_longest_records_steps_and_pull_refuses_one_past_its_record(stack, sample, tmp_path):
    from annotate.push import read_set, render_set
    from annotate.render import n_steps

    cfg = review_cfg(stack, sample, tmp_path, action="push", sets=["coa"], dataset_prefix="steps-")
    lengths = [r["n_steps"] for r in render_set(cfg, "coa", read_set(cfg, "coa"))]
    assert min(lengths) < max(lengths)  # the premise: some record is shorter than the list of labels
    execute(cfg)
    client = client_of(stack)
    dataset = client.datasets(name="steps-coa", workspace="argilla")
    assert dataset.settings.questions["first_bad_step"].labels == [str(i) for i in range(1, max(lengths) + 1)]

    records = sorted(dataset.records(), key=lambda r: str(r.id))
    short = min(range(len(records)), key=lambda i: n_steps(records[i].fields))
    shown = n_steps(records[short].fields)
    assert shown == min(lengths)
    _answer_as(stack, "steps-coa", {short: [("annotator", {"decision": "reject", "first_bad_step": str(shown + 1)})]})
    with pytest.raises(
        ValueError,
        match=rf"record '{records[short].id}': first_bad_step {shown + 1} is past the "
        rf"record's {shown} steps",
    ):
        execute(ReviewConfig(**{**cfg.__dict__, "action": "pull"}))

    # a dataset made with fewer labels than a record now pushed has steps: refused, naming the way out
    import argilla as rg

    from annotate.datasets import settings

    rg.Dataset(name="few-coa", workspace="argilla", settings=settings("trajectories", cfg, 3), client=client).create()
    with pytest.raises(
        ValueError, match=rf"offers first bad steps 1..3, but 'coa' now has a record of {max(lengths)} steps"
    ):
        execute(ReviewConfig(**{**cfg.__dict__, "dataset_prefix": "few-"}))


def _submit(dataset, record, value: str, user_id) -> None:
    import argilla as rg

    record.responses.add(rg.Response("decision", value, user_id=user_id, status="submitted"))
    dataset.records.log([record])


def test_vanished_row_names_the_record(stack, sample, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    df = pl.read_parquet(sample / "sets" / "cot.parquet")
    pl.concat([df, df.head(1).with_columns(id=pl.lit("feedfacefeedface"))]).write_parquet(extra / "cot.parquet")
    cfg = review_cfg(stack, sample, tmp_path, action="push", sets=["cot"], dataset_prefix="ghost-", sets_dir=str(extra))
    execute(cfg)
    client = client_of(stack)
    dataset = client.datasets(name="ghost-cot", workspace="argilla")
    ghost = next(r for r in dataset.records() if row_of(str(r.id)) == "feedfacefeedface")
    _submit(dataset, ghost, "reject", client.me.id)
    pull = ReviewConfig(**{**cfg.__dict__, "action": "pull", "sets_dir": str(sample / "sets")})
    with pytest.raises(
        ValueError, match=rf"record '{ghost.id}' has answers for row 'feedfacefeedface', which no longer exists"
    ):
        execute(pull)


def test_unknown_label_names_the_record(stack, sample, tmp_path):
    import argilla as rg

    from annotate.datasets import settings

    cfg = review_cfg(stack, sample, tmp_path, action="push", sets=["cot"], dataset_prefix="label-")
    client = client_of(stack)
    by_hand = settings(
        "trajectories", cfg, cfg.max_steps
    )  # someone made the dataset by hand, with a label of their own
    by_hand.questions["decision"].labels = ["accept", "reject", "maybe"]
    rg.Dataset(name="label-cot", workspace="argilla", settings=by_hand, client=client).create()
    execute(cfg)
    dataset = client.datasets(name="label-cot", workspace="argilla")
    record = next(iter(dataset.records()))
    _submit(dataset, record, "maybe", client.me.id)
    with pytest.raises(
        ValueError, match=rf"record '{record.id}': decision 'maybe' is not one of \('accept', 'reject'\)"
    ):
        execute(ReviewConfig(**{**cfg.__dict__, "action": "pull"}))


def test_status_and_server_down(stack, sample, tmp_path, capsys):
    execute(review_cfg(stack, sample, tmp_path, action="status"))
    out = capsys.readouterr().out
    assert "coa (autocoa-coa):" in out and "records complete" in out
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens
    rc = main(["push", f"api_url={dead}", f"data_dir={stack.data}", f"sets_dir={sample / 'sets'}"])
    err = capsys.readouterr().err
    assert rc == 1 and f"Argilla server at {dead} is not reachable" in err and "nothing was lost" in err
    assert credentials.load_or_create(stack.data)["owner_api_key"] not in out + err  # secrets never printed
