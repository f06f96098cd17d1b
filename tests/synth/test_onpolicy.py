"""On-policy error mining (synth.onpolicy, synth.corrections) on hand-built student trajectories, the real BM25 index and
the real reference teacher (no model: the teacher is templated), and once end to end with the real 135M student.

The question: "How many people live in the County serviced by The Collier Area Transit system?" (gold 321,520). Searching
the question returns the transit system's page but not the county's; the reference teacher then searches the county's
title and answers from it.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import yaml

from coa.config import build
from coa.formats import get_format
from coa.prompts import PromptConfig, render_prompt
from coa.questions import DEFAULT_QUESTIONS, load_questions, write_questions
from coa.search import load_searcher
from coa.tokenize import encode, tokenize_segments
from coa.trajectory import Trajectory, read_trajectories, segment
from synth.corrections import REASONS, Step, judge, turn_starts
from synth.onpolicy import OnPolicyConfig, correct, run, write_sets
from synth.reference import Passages, evidence_of
from train.data import pair_dataset, pair_features, sft_dataset, sft_features

QID, COUNTY, GOLD = "5a714f6f5542994082a3e7b3", "Collier County, Florida", "321,520"
FMT = get_format("search_r1")
PREFILL = "<think>\n"


@pytest.fixture(scope="module")
def question():
    return next(q for q in load_questions(DEFAULT_QUESTIONS, limit=40) if q["id"] == QID)


def config(index_dir, model_dir, out, questions_file, **over) -> OnPolicyConfig:
    base = dict(
        policy=str(model_dir),
        out=str(out),
        questions=str(questions_file),
        format="search_r1",
        search={"index": str(index_dir), "max_actions": 3, "max_tokens": 512},
        prompt={"demonstrations": False, "prefill": PREFILL},
        progress=False,
        rows_per_shard=1,
    )
    return build(OnPolicyConfig, base | over, "test")


def chunked_ids(tokenizer, text: str) -> list[int]:
    """Ids of ``text`` as an engine may generate them: not its canonical encoding, decoding to it all the same."""
    ids = [t for i in range(0, len(text), 3) for t in encode(tokenizer, text[i : i + 3])]
    assert tokenizer.decode(ids) == text and ids != encode(tokenizer, text)
    return ids


def student(question, steps: list[tuple[str, str]], name: str, searcher, tokenizer) -> Trajectory:
    """A student's row: ("search", query) steps with real observations, then ("answer", text)."""
    segments = [segment("prefill", PREFILL, token_ids=encode(tokenizer, PREFILL))]
    for kind, arg in steps:
        opening = "" if len(segments) == 1 else PREFILL
        if kind == "search":
            text = f"{opening}I will look it up.\n</think>\n{FMT.search_call(arg)}"
            docs = searcher.search([arg], 3)[0]
            obs = FMT.observation(docs)
            segments += [
                segment("model", text, token_ids=chunked_ids(tokenizer, text)),
                segment("observation", obs, query=arg, doc_ids=[d.id for d in docs], token_ids=encode(tokenizer, obs)),
            ]
        else:
            text = f"{opening}I can answer now.\n</think>\n{FMT.answer_text(arg)}"
            segments.append(segment("model", text, token_ids=chunked_ids(tokenizer, text)))
    prompt = render_prompt(tokenizer, question["question"], PromptConfig(format="search_r1", demonstrations=False))
    answer = next((arg for kind, arg in steps if kind == "answer"), None)
    searches = sum(kind == "search" for kind, _ in steps)
    return Trajectory(
        QID, question["question"], list(question["golden_answers"]), prompt, segments, sample=0, format="search_r1",
        answer=answer, n_actions=searches, finish_reason="answer", teacher="student", id=f"student-{name}",
    )  # fmt: skip


# each student, and the outcome expected at each of its turns
CASES = {
    "misses": ([("search", "QUESTION"), ("search", "banana bread recipe"), ("answer", "unknown")],
               ["agree", "query_misses_evidence", "answer_while_evidence_missing"]),
    "finds": ([("search", "QUESTION"), ("search", COUNTY.lower()), ("answer", GOLD)], ["agree", "differs", "right_answer"]),
    "early": ([("search", "QUESTION"), ("answer", "unknown")], ["agree", "answer_while_evidence_missing"]),
    "ignores": ([("search", "QUESTION"), ("search", COUNTY), ("answer", "Naples")],
                ["agree", "agree", "wrong_answer_with_gold_in_observations"]),
    "reads": ([("search", "QUESTION"), ("search", COUNTY), ("answer", GOLD)], ["agree", "agree", "right_answer"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def mined(question, index_dir, model_dir, tokenizer, tmp_path_factory):
    """The teacher's rows at every turn of the hand-built students, and the sets mined from them."""
    d = tmp_path_factory.mktemp("onpolicy")
    write_questions(d / "q.jsonl", [question])
    searcher = load_searcher(index_dir)
    students = [
        student(
            question, [(k, question["question"] if a == "QUESTION" else a) for k, a in steps], name, searcher, tokenizer
        )
        for name, (steps, _) in CASES.items()
    ]
    cfg = config(index_dir, model_dir, d / "out", d / "q.jsonl")
    teachers, stats = correct(cfg, students, [question])
    metrics = write_sets(cfg, students, teachers, [question], {"teacher": stats.rows})
    return cfg, students, teachers, metrics


def test_each_reason_is_named_at_its_turn_and_not_in_the_matching_right_case(mined):
    cfg, students, _, metrics = mined
    decisions = pq.read_table(cfg.out_dir / "decisions.parquet").to_pylist()
    found = {}
    for d in decisions:
        found.setdefault(d["student_id"].removeprefix("student-"), []).append(d["outcome"])
    assert found == {name: outcomes for name, (_, outcomes) in CASES.items()}
    assert metrics["corrections"] == 4 and not metrics["dropped"]  # the teacher answers right from every prefix
    assert {r: e["written"] for r, e in metrics["errors"].items()} == {
        "query_misses_evidence": 1,
        "answer_while_evidence_missing": 2,
        "wrong_answer_with_gold_in_observations": 1,
        "wrong_tool": 0,
    }


def test_reasons_keeps_only_the_named_errors_it_lists_and_counts_the_others(
    mined, question, index_dir, model_dir, tmp_path
):
    cfg, students, teachers, _ = mined
    reading = "wrong_answer_with_gold_in_observations"
    only = config(index_dir, model_dir, tmp_path, cfg.questions, reasons=[reading])
    metrics = write_sets(only, students, teachers, [question], {})
    written = {r: e["written"] for r, e in metrics["errors"].items()}
    assert written == {r: int(r == reading) for r in REASONS}
    assert metrics["dropped"] == {"not_kept": 3} and metrics["corrections"] == 1
    (pair,) = pq.read_table(tmp_path / "pairs.parquet").to_pylist()
    assert pair["direction"] == "answer" and pair["rejected_score"] == 0 and pair["chosen_score"] == 1
    assert pq.read_table(tmp_path / "corrections.parquet").column("reason").to_pylist() == [reading]
    with pytest.raises(ValueError, match="reasons: unknown misread"):
        config(index_dir, model_dir, tmp_path, cfg.questions, reasons=["misread"])


def test_wrong_tool_is_a_call_of_another_tool_than_the_teachers(question, index_dir):
    searcher = load_searcher(index_dir)
    docs = searcher.search([question["question"]], 3)[0]
    prefix = [segment("observation", FMT.observation(docs), query=question["question"], doc_ids=[d.id for d in docs])]
    evidence = evidence_of(question, Passages(index_dir))
    teacher = Step("…", tool="search", query=COUNTY)
    opens = Step("…", tool="open", args='{"doc": "Collier Area Transit"}')
    searches = Step("…", tool="search", query=COUNTY)
    assert judge(opens, teacher, question["golden_answers"], evidence, prefix, FMT) == "wrong_tool"
    assert judge(searches, teacher, question["golden_answers"], evidence, prefix, FMT) == "agree"
    assert set(REASONS) == {"query_misses_evidence", "answer_while_evidence_missing",
                            "wrong_answer_with_gold_in_observations", "wrong_tool"}  # fmt: skip


def test_a_correction_keeps_the_students_prefix_token_for_token_and_trains_only_the_teacher(mined, tokenizer):
    cfg, students, teachers, _ = mined
    corrections = {r["id"]: r for r in pq.read_table(cfg.out_dir / "corrections.parquet").to_pylist()}
    misses = next(s for s in students if s.id == "student-misses")
    start = turn_starts(misses.segments)[1]  # after the first observation: the student searched for banana bread
    row = corrections[teachers[(misses.id, start)].id]
    assert (row["reason"], row["parent_id"], row["decision_index"]) == ("query_misses_evidence", misses.id, start)
    assert [s["kind"] for s in row["segments"][:start]] == ["prefill", "prefill", "observation"]
    assert [s["token_ids"] for s in row["segments"][:start]] == [s["token_ids"] for s in misses.segments[:start]]

    features = sft_features(tokenizer, row["prompt"], row["segments"], observation_loss=False)
    prompt_ids = encode(tokenizer, misses.prompt)
    student_ids = [t for s in misses.segments[:start] for t in s["token_ids"]]
    assert features["input_ids"][: len(prompt_ids) + len(student_ids)] == prompt_ids + student_ids
    trained = [t for t in features["labels"] if t != -100]
    teacher_text = "".join(s["text"] for s in row["segments"][start:] if s["kind"] == "model")
    assert tokenizer.decode(trained) == teacher_text + tokenizer.eos_token
    assert COUNTY in teacher_text and GOLD in teacher_text and "banana" not in tokenizer.decode(trained)


def test_a_pairs_two_sides_share_the_students_prefix_exactly(mined, tokenizer):
    cfg, students, teachers, _ = mined
    pairs = pq.read_table(cfg.out_dir / "pairs.parquet").to_pylist()
    corrections = {r["id"]: r for r in pq.read_table(cfg.out_dir / "corrections.parquet").to_pylist()}
    by_id = {s.id: s for s in students}
    assert len(pairs) == len(corrections) == 4
    for pair in pairs:
        mine, start = by_id[pair["rejected_id"]], pair["decision_index"]
        context = tokenize_segments(tokenizer, mine.prompt, mine.segments[:start]).input_ids
        assert pair_features(tokenizer, pair)["prompt_ids"] == context  # one context for chosen and rejected
        correction = corrections[pair["chosen_id"]]
        assert (
            sft_features(tokenizer, correction["prompt"], correction["segments"], False)["input_ids"][: len(context)]
            == context
        )
        assert pair["rejected"] == "".join(s["text"] for s in mine.segments[start:start + 1])  # fmt: skip
        assert pair["chosen"] == correction["segments"][start]["text"] and pair["chosen"] != pair["rejected"]
    assert sorted(p["direction"] for p in pairs) == ["act", "act", "answer", "tool"]
    for pair in pairs:  # a side that calls a tool does not end the turn (no EOS after it); an answer does
        assert pair["chosen_ends_turn"] == (pair["direction"] == "answer")
        assert pair["rejected_ends_turn"] == (pair["direction"] != "tool")


def test_an_llm_teacher_continues_exactly_the_students_prefix(mined, question, index_dir, model_dir, tmp_path):
    """The plug point for any teacher: an OpenAI-compatible server (the stand-in, over the completions engine) is sent
    the student's prompt and prefix as they are, at every turn, and its continuations are mined like the reference's."""
    from tests.fixtures.chat_api import FakeReasoningAPI

    _, students, _, _ = mined
    write_questions(tmp_path / "q.jsonl", [question])
    with FakeReasoningAPI(searches=1) as api:
        teacher = {"kind": "llm", "base_url": api.url, "model": api.model, "api": "completions", "retries": 0}
        cfg = config(index_dir, model_dir, tmp_path / "out", tmp_path / "q.jsonl", teacher=teacher)
        teachers, stats = correct(cfg, students, [question])
    turns = [(s, k) for s in students for k in turn_starts(s.segments)]
    assert stats.rows == len(teachers) == len(turns)
    sent = {r["prompt"] for r in api.requests}
    for s, k in turns:
        assert s.prompt + "".join(seg["text"] for seg in s.segments[:k]) in sent
        row = teachers[(s.id, k)]
        assert [seg["text"] for seg in row.segments[:k]] == [seg["text"] for seg in s.segments[:k]]
        assert row.teacher == api.model and row.segments[k]["kind"] == "model"
    metrics = write_sets(cfg, students, teachers, [question], {"teacher": stats.rows})
    assert metrics["turns"] == len(turns) and sum(metrics["outcomes"].values()) == len(turns)


def test_the_sets_read_as_training_sets(mined, tokenizer):
    cfg, *_ = mined
    sft, stats = sft_dataset(tokenizer, [cfg.out_dir / "corrections.parquet"], False, 4096, "sft2", fmt="search_r1")
    pairs, pair_stats = pair_dataset(tokenizer, cfg.out_dir / "pairs.parquet", 4096, fmt="search_r1")
    assert (len(sft), len(pairs)) == (4, 4) and stats["prompt_tokens"] > stats["model_tokens"] > 0
    assert read_trajectories(cfg.out_dir / "corrections.parquet")[0].mode == "correction"
    from annotate.render import pair_record, trajectory_record  # the Argilla review's records

    corrections = pq.read_table(cfg.out_dir / "corrections.parquet").to_pylist()
    assert {r["em"] for r in corrections} == {1.0}
    assert trajectory_record(corrections[0], "em", 1.0, 300)["row_id"] == corrections[0]["id"]
    pair = pq.read_table(cfg.out_dir / "pairs.parquet").to_pylist()[0]
    assert pair_record(pair, "em", 1.0, 300)["row_id"] == pair["id"]


def merged(segments: list[dict]) -> list[dict]:
    """Adjacent segments of one kind as one (the text-level round trip cannot tell them apart)."""
    out = []
    for s in segments:
        if out and out[-1]["kind"] == s["kind"]:
            out[-1] = {"kind": s["kind"], "text": out[-1]["text"] + s["text"]}
        else:
            out.append({"kind": s["kind"], "text": s["text"]})
    return out


def test_a_rounds_corrections_export_with_the_students_prefix_out_of_the_loss(mined, tmp_path, capsys):
    from data_cards import export, formats

    cfg, *_ = mined
    args = [f"sets_dir={cfg.out_dir}", "sets=[pairs,corrections]", f"out={tmp_path / 'sft'}"]
    assert export.main([*args, "to=trl_sft"]) == 0
    rows = pq.read_table(tmp_path / "sft" / "sft_corrections.parquet").to_pylist()
    source = pq.read_table(cfg.out_dir / "corrections.parquet").to_pylist()
    assert len(rows) == len(source) == 4
    for row, correction in zip(rows, source):
        assert merged(formats.sft_segments(row)) == merged(correction["segments"])
        text, trained, at = row["completion"], "", 0
        for start, end in sorted(row["prefill_spans"] + row["observation_spans"]):
            trained, at = trained + text[at:start], end
        trained += text[at:]
        teacher = "".join(s["text"] for s in correction["segments"] if s["kind"] == "model")
        assert trained == teacher and 0 < len(teacher) < len(text)  # only the teacher's text is left to train
        student_text = "".join(text[start:end] for start, end in row["prefill_spans"])  # untrained context
        assert row["prefill_spans"][0][0] == 0 and student_text.startswith(PREFILL)
        assert "I will look it up." in student_text and "I will look it up." not in trained
    assert export.main([*args, "to=llamafactory"]) == 2
    assert "to=llamafactory cannot leave a correction's student prefix out of the loss" in capsys.readouterr().err


def test_a_rounds_sets_publish_with_their_card(mined, tmp_path, capsys):
    from huggingface_hub import DatasetCard

    from data_cards import publish

    cfg, *_ = mined
    dest = tmp_path / "copy"
    args = ["repo_id=tester/round1", f"sets_dir={cfg.out_dir}", f"curate_dir={tmp_path}", f"dest={dest}"]
    assert publish.main([*args, "sets=[pairs,corrections]"]) == 0
    card = DatasetCard((dest / "README.md").read_text())
    assert [c["config_name"] for c in card.data.to_dict()["configs"]] == ["pairs", "corrections"]
    assert "the teacher's corrections of a trained student's own mistakes" in card.text
    assert 'corrections = load_dataset("tester/round1", "corrections", split="train")' in card.text
    published = [row for f in sorted((dest / "corrections").glob("*.parquet")) for row in pq.read_table(f).to_pylist()]
    assert published == pq.read_table(cfg.out_dir / "corrections.parquet").to_pylist()
    assert publish.main(args) == 2  # the default sets are curate's: this folder has no coa.parquet
    assert f"{cfg.out_dir / 'coa.parquet'}: set not found" in capsys.readouterr().err
    assert publish.main([*args, "sets=[pairs,bogus]"]) == 2
    assert "sets must be distinct names among pairs, coa, cot, corrections" in capsys.readouterr().err


def test_an_interrupted_run_resumes_with_the_same_rows(mined, question, index_dir, model_dir, tmp_path):
    """Shards lost to a kill (and a half-written one) are generated again; every row and set comes out the same."""
    cfg, students, teachers, _ = mined
    shards = sorted((cfg.out_dir / "teacher").glob("*.parquet"))
    assert len(shards) == len(teachers) == sum(map(len, (o for _, o in CASES.values())))  # a row a turn, a shard a row
    before = {name: pq.read_table(cfg.out_dir / name) for name in ("corrections.parquet", "pairs.parquet")}
    for shard in (shards[2], shards[-1]):
        shard.unlink()
    half = cfg.out_dir / "teacher" / ".part-killed-00001.parquet.tmp-999999999"  # a dead writer's temporary
    half.write_bytes(b"PAR1 half a shard")
    again, stats = correct(cfg, students, [question])
    assert stats.rows == 2 and not half.exists()
    volatile = ("created_at", "latency_s")
    for key, row in teachers.items():
        assert {k: v for k, v in again[key].to_row().items() if k not in volatile} == {
            k: v for k, v in row.to_row().items() if k not in volatile
        }
    write_sets(cfg, students, again, [question], {"teacher": stats.rows})
    for name, table in before.items():
        after = pq.read_table(cfg.out_dir / name)
        keep = [c for c in table.column_names if c not in volatile]
        assert after.select(keep).equals(table.select(keep)), name


def test_the_rounds_are_dvc_stages_each_starting_from_the_last_rounds_model():
    from tests.pipeline.test_paths import ROOT, load_stages, stage_path, under

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["onpolicy_rounds"] == {}  # off in the default run
    assert not any(name.startswith("onpolicy") for name in load_stages(params))
    params["onpolicy_rounds"] = {
        "round1": {"policy": "runs/train/sft2"},
        "round2": {"policy": "runs/onpolicy/round1/train/sft2"},
    }
    stages = load_stages(params)
    _, deps, _ = stages["onpolicy@round2"]
    assert (
        "runs/onpolicy/round1/train/sft2" in deps
        and "runs/onpolicy/round1/train/sft2" in stages["onpolicy_train@round1"][2]
    )
    cmd = " ".join(stages["onpolicy_train@round2"][0])
    assert "model=runs/onpolicy/round1/train/sft2" in cmd and "sft2.data=[corrections.parquet]" in cmd
    assert "runs/onpolicy/round2/train/sft2" in stages["evaluate_onpolicy@round2"][1]  # each round evaluated
    for name in ("onpolicy@round1", "onpolicy_train@round1", "evaluate_onpolicy@round1"):
        assert all(under(out, stage_path(name)) or out.startswith("metrics/") for out in stages[name][2])


def test_a_round_takes_its_policy_and_folder_from_the_top_level_rounds(tmp_path, monkeypatch):
    import coa.config
    from coa.config import load_config

    params = tmp_path / "params.yaml"
    params.write_text("onpolicy_rounds: {round1: {policy: runs/train/sft2}}\nonpolicy: {limit: 5}\n")
    monkeypatch.setattr(coa.config, "PARAMS_FILE", str(params))
    cfg = load_config(OnPolicyConfig, "onpolicy", ["round=round1"])
    assert (cfg.policy, str(cfg.out_dir), cfg.limit) == ("runs/train/sft2", "runs/onpolicy/round1", 5)
    with pytest.raises(ValueError, match=r"round='round2' is not a key of rounds \(round1\)"):
        load_config(OnPolicyConfig, "onpolicy", ["round=round2"])
    with pytest.raises(ValueError, match="onpolicy.rounds: set once, at the top level"):
        params.write_text("onpolicy: {rounds: {}}\n")
        load_config(OnPolicyConfig, "onpolicy", [])


@pytest.mark.model
@pytest.mark.slow
def test_a_small_run_with_the_real_student_writes_sets_train_reads(index_dir, model_dir, tokenizer, tmp_path):
    """The untrained 135M student (hf engine, greedy) on two questions: its rows, the teacher's at each of its turns,
    sets that train.data reads; a second run generates nothing and writes the same sets. (The untrained student answers
    in a few dozen tokens without searching: answer_while_evidence_missing.)"""
    questions = load_questions(DEFAULT_QUESTIONS, limit=2)
    write_questions(tmp_path / "q.jsonl", questions)
    cfg = config(index_dir, model_dir, tmp_path / "out", tmp_path / "q.jsonl", engine="hf",
                 search={"index": str(index_dir), "max_actions": 2, "max_tokens": 256})  # fmt: skip
    metrics = run(cfg)
    assert metrics["student"]["rows"] == 2 and metrics["rows_generated"]["student"] == 2
    assert metrics["turns"] == metrics["rows_generated"]["teacher"] >= 2
    assert metrics["corrections"] == metrics["pairs"] >= 1
    sft, _ = sft_dataset(tokenizer, [cfg.out_dir / "corrections.parquet"], False, 4096, "sft2", fmt="search_r1")
    pairs, _ = pair_dataset(tokenizer, cfg.out_dir / "pairs.parquet", 4096, fmt="search_r1")
    assert len(sft) == len(pairs) == metrics["corrections"]
    first = pq.read_table(cfg.out_dir / "pairs.parquet")
    again = run(cfg)
    assert again["rows_generated"] == {"student": 0, "teacher": 0}
    assert pq.read_table(cfg.out_dir / "pairs.parquet").equals(first)
