"""evaluate.stats on hand-built cases with known answers."""

from __future__ import annotations

import pytest

from coa.stats import difference_sd, min_detectable_difference, paired_difference, power_statement
from evaluate.stats import breakdown, dataset_breakdowns, question_groups, question_rows, retrieval_coverage


def test_paired_difference_of_identical_models_is_exactly_zero():
    a = [1.0, 0.0] * 50
    got = paired_difference(a, a)
    assert got == {"diff": 0.0, "ci95": [0.0, 0.0], "n": 100}


def test_paired_difference_sees_what_unpaired_intervals_cannot():
    # b is right on every question a gets right, plus 10 more: the paired interval excludes 0
    a = [1.0] * 30 + [0.0] * 70
    b = [1.0] * 40 + [0.0] * 60
    got = paired_difference(a, b)
    assert got["diff"] == 0.1 and got["ci95"][0] > 0 and got["ci95"][1] <= 0.2
    with pytest.raises(ValueError, match="same questions: 2 vs 3"):
        paired_difference([1, 0], [1, 0, 1])


def test_min_detectable_difference_known_values():
    # (1.959964 + 0.841621) * sd / sqrt(n)
    assert min_detectable_difference(100, 0.5) == pytest.approx(0.14008, abs=1e-5)
    assert min_detectable_difference(400, 0.5) == pytest.approx(0.07004, abs=1e-5)
    assert min_detectable_difference(0, 0.5) is None
    assert difference_sd([0, 0, 1, 1], [1, 0, 1, 0]) == pytest.approx((2 / 3) ** 0.5)
    statement = power_statement(100, 0.5, "sft2 vs sft3")
    assert statement["min_detectable_em_difference"] == 0.1401 and "n = 100" in statement["text"]


def test_question_groups_read_the_files_own_fields():
    assert question_groups({"id": "5a7", "metadata": {"type": "bridge"}}) == {"qtype": "bridge", "hops": None}
    assert question_groups({"id": "x", "metadata": {"type": "bridge_comparison"}})["qtype"] == "bridge_comparison"
    assert question_groups({"id": "3hop1__1_2_3", "metadata": {}}) == {"qtype": None, "hops": 3}
    hotpot = {"id": "5a8", "metadata": {"type": "bridge", "gold_paragraph_ids": ["hp1", "hp2", "hp2"]}}
    assert question_groups(hotpot)["hops"] == 2
    composed = {"id": "compose-1", "metadata": {"hops": 4, "question_decomposition": [{}] * 4, "type": "comparison"}}
    assert question_groups(composed) == {"qtype": "comparison", "hops": 4}
    assert question_groups({"id": "q", "metadata": {"question_decomposition": [{}, {}, {}, {}]}})["hops"] == 4
    assert question_groups({"id": 7}) == {"qtype": None, "hops": None}


def test_breakdown_by_group_and_retrieval_coverage():
    rows = [
        {"qtype": "bridge", "em": 1.0, "f1": 1.0},
        {"qtype": "bridge", "em": 0.0, "f1": 0.5},
        {"qtype": "comparison", "em": 1.0, "f1": 1.0},
        {"qtype": None, "em": 0.0, "f1": 0.0},
    ]
    got = breakdown(rows, "qtype", resamples=100)
    assert {g: (v["n"], v["em"], v["f1"]) for g, v in got.items()} == {
        "bridge": (2, 0.5, 0.75),
        "comparison": (1, 1.0, 1.0),
    }
    passages = [["Menotti wrote Maria Golovin."], ["nothing here", "still nothing"], []]
    golds = [["Gian Carlo Menotti", "Menotti"], ["Paris"], ["Rome"]]
    assert retrieval_coverage(passages, golds) == {"rate": 0.3333, "n": 3}
    assert retrieval_coverage([], []) == {"rate": None, "n": 0}


def test_question_rows_join_scores_groups_and_what_was_retrieved():
    trajectories = [
        {
            "question_id": "b",
            "golden_answers": ["Paris"],
            "segments": [
                {"kind": "model", "text": "<search>x</search>"},
                {"kind": "observation", "text": "<information>Doc 1(Title: France) Paris is...</information>"},
            ],
        },
        {"question_id": "a", "golden_answers": ["Rome"], "segments": [{"kind": "model", "text": "Rome"}]},
    ]
    scored = [
        {"em": 1.0, "f1": 1.0, "n_actions": 1, "well_formed": 1.0},
        {"em": 0.0, "f1": 0.0, "n_actions": 0, "well_formed": 0.0},
    ]
    questions = [{"id": "a", "metadata": {"type": "comparison"}}, {"id": "b", "metadata": {"type": "bridge"}}]
    rows = question_rows(trajectories, scored, questions, "heldout")
    assert [(r["question_id"], r["qtype"], r["gold_retrieved"]) for r in rows] == [
        ("a", "comparison", False),
        ("b", "bridge", True),
    ]
    got = dataset_breakdowns(rows, resamples=10)
    assert got["retrieval_coverage"] == {"rate": 0.5, "n": 2}
    assert got["by_searches"]["1"]["em"] == 1.0 and got["by_hops"] == {}
    assert got["evidence_found"] == {"mean": None, "all": None, "n": 0}  # no question names its evidence


def test_evidence_found_is_the_share_of_each_questions_evidence_passages_returned():
    def searched(qid, *ids_per_call):
        segments = [{"kind": "model", "text": "Berlin", "doc_ids": ["p9"]}]  # the model's own text retrieves nothing
        for ids in ids_per_call:
            segments += [
                {"kind": "model", "text": "<search>q</search>"},
                {"kind": "observation", "text": "r", "doc_ids": ids},
            ]
        return {"question_id": qid, "golden_answers": ["x"], "segments": segments}

    trajectories = [searched("a", ["p1", "p5"]), searched("b", ["p3"], ["p4"]), searched("c", ["p7"]), searched("d")]
    scored = [{"em": 0.0, "f1": 0.0, "n_actions": n, "well_formed": 1.0} for n in (1, 2, 1, 0)]
    questions = [
        {"id": "a", "metadata": {"gold_paragraph_ids": ["p1", "p2"]}},
        {"id": "b", "metadata": {"gold_paragraph_ids": ["p3", "p4"]}},
        {"id": "c", "metadata": {}},  # no evidence ids: left out of the mean
        {"id": "d", "metadata": {"question_decomposition": [{"evidence_id": "p8"}, {"evidence_id": "p9"}]}},
    ]
    rows = question_rows(trajectories, scored, questions, "heldout")
    assert [r["evidence_recall"] for r in rows] == [0.5, 1.0, None, 0.0]
    assert dataset_breakdowns(rows, resamples=10)["evidence_found"] == {"mean": 0.5, "all": 0.3333, "n": 3}
