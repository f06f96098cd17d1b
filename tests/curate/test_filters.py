"""Every filter reason fires on a row made to break exactly that rule, and the report counts it."""

import json

import polars as pl
import pytest

from coa.trajectory import write_trajectories
from curate import score
from curate.filters import REASONS
from curate.decontam import load_eval_questions
from tests.curate.helpers import EVAL_SETS, F, config, model, obs, searched, traj


@pytest.fixture(scope="module")
def reasons_run(questions, tmp_path_factory):
    in_eval = set(load_eval_questions(EVAL_SETS)["eval_question"].to_list())
    qs = [q for q in questions if q["question"] not in in_eval][:40]
    q = iter(qs)
    loop = "I need to check that. " * 12
    cases = {
        "clean": traj(next(q), searched("Maria Golovin composer", "GOLD")),
        "no_answer": traj(
            next(q),
            [
                model(f"<think>\nthinking\n{F.search_call('x y')}"),
                obs(),
                model("Still thinking, never answering.\n</think>\n"),
            ],
        ),
        "unbalanced_tags": traj(
            next(q), [model("<think>\n<think>\nnested thoughts\n</think>\n\\boxed{GOLD}")], mode="cot"
        ),
        "search_after_answer": traj(
            next(q), [model("<think>\nsure\n</think>\n\\boxed{GOLD} <begin_search> more </end_search>")], mode="cot"
        ),
        "empty_query": traj(next(q), searched(" ", "GOLD")),
        "model_observation": traj(
            next(q),
            [
                model(
                    f"<think>\n{F.search_call('x y')}\n\n<search_result> I made this up "
                    "</search_result>\nso\n</think>\n\\boxed{GOLD}"
                )
            ],
        ),
        "orphan_observation": traj(
            next(q), [model("<think>\nno call here\n"), obs(), model("fine.\n</think>\n\\boxed{GOLD}")]
        ),
        "unfinished": traj(next(q), searched("a b", "GOLD"), finish="max_tokens"),
        "too_few_actions": traj(next(q), [model("<think>\nI know it.\n</think>\n\\boxed{GOLD}")]),  # coa, min_actions=1
        "too_many_actions": traj(
            next(q),
            [model("<think>\n")]
            + [  # max_actions=3
                s for i in range(4) for s in (model(f"step {i} {F.search_call(f'query {i}')}"), obs())
            ]
            + [model("done\n</think>\n\\boxed{GOLD}")],
        ),
        "too_short": traj(next(q), [model("<think></think>\\boxed{x}")], mode="cot"),  # 24 < min_chars
        "too_long": traj(next(q), [model("<think>\n" + "word " * 900 + "\n</think>\n\\boxed{GOLD}")], mode="cot"),
        "repetition": traj(next(q), [model(f"<think>\n{loop}\n</think>\n\\boxed{{GOLD}}")], mode="cot"),  # in a line
        "repetition_lines": traj(
            next(q), [model("<think>\n" + "I will search.\n" * 8 + "ok\n</think>\n\\boxed{GOLD}")], mode="cot"
        ),
        "repetition_words": traj(
            next(q), [model("<think>\n" + "and then the " * 25 + "\n</think>\n\\boxed{GOLD}")], mode="cot"
        ),  # one "sentence": only the distinct-word rule sees it
        "repeated_query": traj(
            next(q),
            [
                model(f"<think>\n{F.search_call('same query')}"),
                obs(),
                model(f"again {F.search_call('Same Query')}"),
                obs(),
                model("ok\n</think>\n\\boxed{GOLD}"),
            ],
        ),
    }
    dup_q = next(q)
    cases["duplicate"] = traj(dup_q, searched("film director", "GOLD"), sample=1)
    cases["dup_original"] = traj(dup_q, searched("film director", "GOLD"), sample=0)
    near_q = next(q)
    near_text = (
        "I should look this up carefully before answering. The question asks about a film, the person who "
        "directed it and where that person was born, so I will first find the film, then its director, "
        "then check the birthplace in a second search if the first one does not say it today."
    )
    cases["near_original"] = traj(near_q, searched("film", "GOLD", near_text), sample=0)
    cases["near_duplicate"] = traj(near_q, searched("film", "GOLD", near_text.replace("today", "now")), sample=1)
    contaminated = next(x for x in questions if x["id"] in _CONTAMINATED)
    cases["contaminated"] = traj(contaminated, searched("x y", "GOLD"))
    rows = []
    for name, t in cases.items():
        gold = t.golden_answers[0]
        t.segments = [dict(s, text=s["text"].replace("GOLD", gold)) for s in t.segments]
        t.id = name
        rows.append(t)
    path = write_trajectories(tmp_path_factory.mktemp("reasons") / "rows.parquet", rows)
    out = tmp_path_factory.mktemp("score")
    score.run(config(out, input=[str(path)], min_actions=1, max_actions=3, min_chars=30, max_chars=4000))
    return pl.read_parquet(out / "scores.parquet"), json.loads((out / "metrics.json").read_text())


_CONTAMINATED = {"5a71214d5542994082a3e5b9"}  # also verbatim in the AutoCoA test set (its HotpotQA dev part)


def test_every_reason_fires(reasons_run):
    df, metrics = reasons_run
    got = dict(df.select("id", "drop_reason").iter_rows())
    for reason in REASONS:
        assert got[reason] == reason, (reason, df.filter(pl.col("id") == reason)["reasons"].to_list())
    assert got["repetition_lines"] == got["repetition_words"] == "repetition"
    for kept in ("clean", "dup_original", "near_original"):
        assert got[kept] is None, df.filter(pl.col("id") == kept)["reasons"].to_list()
    assert df.filter(pl.col("id") == "duplicate")["duplicate_of"].item() == "dup_original"
    assert df.filter(pl.col("id") == "near_duplicate")["near_duplicate_of"].item() == "near_original"
    assert metrics["reasons"]["first"] == {r: 3 if r == "repetition" else 1 for r in REASONS}
    assert metrics["kept"] == 3 and metrics["rows"] == len(REASONS) + 5


def test_contamination_names_its_match(reasons_run):
    df, metrics = reasons_run
    row = df.filter(pl.col("id") == "contaminated").row(0, named=True)
    assert row["contamination"] == "exact" and row["eval_set"].endswith("all_test_data_test.parquet")
    assert metrics["contamination"]["contaminated_questions"] == 1
