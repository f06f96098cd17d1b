import dataclasses
import json

import pytest

from coa.config import load_config
from coa.questions import load_questions


@dataclasses.dataclass
class Inner:
    base_url: str = ""


@dataclasses.dataclass
class Cfg:
    n: int = 1
    out: str = "runs/x"
    teacher: Inner = dataclasses.field(default_factory=Inner)


def test_precedence_and_nesting(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("stage:\n  n: 2\n  out: from_yaml\n")
    cfg = load_config(Cfg, "stage", ["n=4", "teacher.base_url=http://h:1/v1"], params_file=params)
    assert (cfg.n, cfg.out, cfg.teacher.base_url) == (4, "from_yaml", "http://h:1/v1")


def test_unknown_key_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key 'nn'; valid keys: n, out, teacher"):
        load_config(Cfg, "stage", ["nn=3"], params_file="none")


def test_question_errors_name_file_line_field(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text(
        json.dumps({"id": "1", "question": "Q?", "golden_answers": ["a"]})
        + "\n"
        + json.dumps({"id": "2", "question": "  ", "golden_answers": ["a"]})
        + "\n"
    )
    with pytest.raises(ValueError, match=r"q.jsonl:2: field 'question' is missing or empty"):
        load_questions(p)
    p.write_text(json.dumps({"question": "Q?", "golden_answers": ["a"]}) + "\n")
    with pytest.raises(ValueError, match=r"q.jsonl:1: missing field 'id'"):
        load_questions(p)


def test_embedded_sets_load():
    from coa.questions import DEFAULT_QUESTIONS

    assert len(load_questions(DEFAULT_QUESTIONS)) == 1979
    autocoa = load_questions("data/raw/autocoa/all_test_data_test.parquet")
    assert len(autocoa) == 2935 and {q["dataset"] for q in autocoa} >= {"2WIKI", "MuSiQue", "Bamboogle"}


def test_autocoa_prompt_is_theirs_verbatim():
    import pyarrow.parquet as pq

    from coa.prompts import AUTOCOA_COA

    row = pq.read_table("data/raw/autocoa/hotpot_qa_dev.parquet").slice(0, 1).to_pylist()[0]
    question = load_questions("data/raw/autocoa/hotpot_qa_dev.parquet", limit=1)[0]["question"]
    assert AUTOCOA_COA.format(question=question) == row["prompt"][0]["content"]


def test_split_is_by_question_and_deterministic(tmp_path):
    from coa.questions import DEFAULT_QUESTIONS, main

    assert main(["split", f"out={tmp_path}/a", "heldout=30", "train=100", "seed=1"]) == 0
    assert main(["split", f"out={tmp_path}/b", "heldout=30", "train=100", "seed=1"]) == 0
    train, held = load_questions(tmp_path / "a/train.jsonl"), load_questions(tmp_path / "a/heldout.jsonl")
    assert (len(train), len(held)) == (100, 30)
    assert not {q["id"] for q in train} & {q["id"] for q in held}
    assert (tmp_path / "a/heldout.jsonl").read_bytes() == (tmp_path / "b/heldout.jsonl").read_bytes()
    all_ids = {q["id"] for q in load_questions(DEFAULT_QUESTIONS)}
    assert {q["id"] for q in held} <= all_ids


def test_split_keeps_synthesised_questions_away_from_their_held_out_seeds(tmp_path):
    """A pool of seeds plus questions built from them (``synth.questions``' pool.jsonl): the held-out part is
    the seeds-only split's where no synthesised question is drawn, and no training question shares a seed
    with a held-out one, either way round."""
    from coa.questions import main, split_questions

    seeds = [{"id": f"s{i}", "question": f"q{i}?", "golden_answers": [f"a{i}"]} for i in range(40)]
    built = [
        {"id": f"c{i}", "question": f"c{i}?", "golden_answers": ["x"], "metadata": {"seed_ids": [f"s{i}", f"s{i + 1}"]}}
        for i in range(39)
    ]
    plain_train, plain_held, none_shared = split_questions(seeds, 5, 0, seed=3)
    assert none_shared == 0 and len(plain_train) == 35  # no synthesised question: the split as before
    train, held, shared = split_questions(seeds + built, 8, 0, seed=3)
    held_seeds = {s for q in held for s in {q["id"], *q.get("metadata", {}).get("seed_ids", [])}}
    for q in train:
        assert not {q["id"], *q.get("metadata", {}).get("seed_ids", [])} & held_seeds, q
    assert shared > 0 and len(train) + len(held) + shared == len(seeds) + len(built)
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in seeds + built))
    assert main(["split", f"questions={path}", f"out={tmp_path}/out", "heldout=8", "train=0", "seed=3"]) == 0
    counts = json.loads((tmp_path / "out/split.json").read_text())
    assert counts == {"train": len(train), "heldout": 8, "left_out_shared_seed": shared, "seed": 3}  # no generator


def test_split_can_keep_synthesised_questions_out_of_training(tmp_path):
    """``train_synthesised=false`` (the baseline of a question-synthesis experiment): the same held-out part,
    synthesised questions among it, and a training pool of seeds only, filled to ``train`` from the seeds."""
    from coa.questions import main, split_questions, synthesised

    seeds = [{"id": f"s{i}", "question": f"q{i}?", "golden_answers": [f"a{i}"]} for i in range(60)]
    built = [
        {
            "id": f"c{i}",
            "question": f"c{i}?",
            "golden_answers": ["x"],
            "metadata": {"seed_ids": [f"s{i}", f"s{i + 1}"], "generator": "compose"},
        }
        for i in range(0, 58, 2)
    ]
    train, held, shared = split_questions(seeds + built, 10, 20, seed=1)
    base_train, base_held, base_shared = split_questions(seeds + built, 10, 20, seed=1, train_synthesised=False)
    assert base_held == held and base_shared == shared
    assert any(map(synthesised, held)) and any(map(synthesised, train))  # this pool puts some on either side
    assert len(base_train) == 20 and not any(map(synthesised, base_train))
    assert [q for q in train if not synthesised(q)] == base_train[: sum(not synthesised(q) for q in train)]
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in seeds + built))
    args = ["split", f"questions={path}", "heldout=10", "train=20", "seed=1"]
    assert main([*args, f"out={tmp_path}/exp"]) == 0
    assert main([*args, f"out={tmp_path}/base", "train_synthesised=false"]) == 0
    exp, base = (json.loads((tmp_path / d / "split.json").read_text()) for d in ("exp", "base"))
    assert (tmp_path / "exp/heldout.jsonl").read_bytes() == (tmp_path / "base/heldout.jsonl").read_bytes()
    assert exp["train_synthesised"] == sum(map(synthesised, train)) > 0 and base["train_synthesised"] == 0
    assert exp["heldout_synthesised"] == base["heldout_synthesised"] == sum(map(synthesised, held))
