"""``python -m synth.questions``: composed questions on the embedded HotpotQA set and the real BM25 index,
each verifier on hand-built cases with known answers, ``extend`` and ``obfuscate`` through the engine seam
against ``FakeReasoningAPI`` (a stand-in for a chat API, scripted to write questions), the reference teacher
solving what compose wrote, and bad input (a corpus without titles, seeds without gold answers, a teacher
that writes no question or one holding its answer)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from collections import Counter

import pytest

from coa.agent import Budget
from coa.config import build
from coa.formats import get_format
from coa.questions import DEFAULT_QUESTIONS, load_questions, write_questions
from coa.score import exact_match
from coa.search import build_index
from coa.trajectory import read_trajectories
from synth.config import SynthConfig
from synth.questions import compose
from synth.questions.__main__ import TOOL, main, run
from synth.questions.config import QuestionsConfig, VerifyConfig
from synth.questions.record import Candidate, Corpus, bare, read_seeds, states
from synth.questions.verify import Clean, NeedsEveryHop, NoMemoryShortcut, Pipeline, Solvable, Supported, Unique
from synth.reference import evidence_of
from synth.run import run as synth_run
from tests.fixtures.chat_api import FakeReasoningAPI

FMT = get_format("search_r1")
PREFILL = "<think>\n"


REAL_EXTEND_REPLY = Path(__file__).resolve().parents[1] / "fixtures/real_llm/extend_reply.json"


def config(index_dir, out, **over) -> QuestionsConfig:
    base = dict(
        search={"index": str(index_dir), "topk": 3, "max_actions": 3, "max_tokens": 320},
        format="search_r1",
        prompt={"demonstrations": False, "prefill": PREFILL},
        out=str(out),
    )
    return build(QuestionsConfig, base | over, "test")


@pytest.fixture(scope="module")
def corpus(index_dir):
    return Corpus(index_dir)


@pytest.fixture(scope="module")
def composed(corpus):
    drops: Counter = Counter()
    rows = read_seeds(DEFAULT_QUESTIONS, drops)
    cfg = build(QuestionsConfig, {}, "test")
    return compose.propose(rows, corpus, cfg, drops), drops


def cand(question, golds, steps, kind="composition", **meta) -> Candidate:
    evidence = list(dict.fromkeys(s["evidence_id"] for s in steps))
    return Candidate(
        "c-" + str(abs(hash(question)) % 10**8),
        question,
        golds,
        {
            "evidence_ids": evidence,
            "gold_paragraph_ids": evidence,
            "hops": len(evidence),
            "question_decomposition": steps,
            "type": kind,
            "templated": True,
            **meta,
        },
    )


def step(question, answer, evidence_id):
    return {"question": question, "answer": answer, "evidence_id": evidence_id}


# ---- compose on the embedded questions ---------------------------------------------------------


def test_compose_writes_valid_chains_whose_steps_are_stated_in_their_evidence(composed, corpus):
    candidates, drops = composed
    assert len(candidates) > 300 and drops["seed_not_a_bridge"] > 0  # comparison seeds have no bridge order
    kinds = Counter(c.metadata["type"] for c in candidates)
    assert set(kinds) == {"composition", "comparison"} and kinds["composition"] >= 5
    for c in candidates:
        m = c.metadata
        assert 3 <= m["hops"] <= 4 and m["hops"] == len(m["evidence_ids"]) == len(set(m["evidence_ids"]))
        assert m["generator"] == "compose" and m["templated"] and m["prompt_hash"] == compose.PROMPT_HASH
        assert {s["evidence_id"] for s in c.steps} == set(m["evidence_ids"])
        for k, s in enumerate(c.steps, start=1):
            assert corpus.contents(s["evidence_id"]) is not None
            assert states(corpus.text(s["evidence_id"]), s["answer"]), (c.id, k, s)
            assert all(int(ref) < k for ref in re.findall(r"#(\d+)", s["question"]))  # refers back only
        assert not any(states(c.question, g) for g in c.golden_answers)
        if m["type"] == "comparison":  # the gold is the earlier of the two dates
            first, second = (compose.parse_date(d) for d in m["compared"])
            assert first[0] != second[0]
            assert c.golden_answers[0] == m["compared"][0 if first < second else 1]
        else:  # the last step answers the gold; the entity of B is #k of the step that answers it
            assert c.steps[-1]["answer"] == c.golden_answers[0]
            x = m["outer"].split()[0] if m["outer"].startswith("X") else "X"
            assert x in m["outer"] and "#" in " ".join(s["question"] for s in c.steps)


def test_the_reference_teacher_reads_composed_decompositions(composed, corpus):
    candidates, _ = composed
    chain = next(c for c in candidates if c.metadata["type"] == "composition")
    items = evidence_of(chain.row(), None)
    n = len(chain.steps)
    assert [e.answer for e in items[:n]] == [s["answer"] for s in chain.steps]
    assert not any(re.search(r"#\d", e.query) for e in items)  # every #k was substituted
    assert [e.doc_id for e in items[n:]] == chain.evidence_ids  # gold_paragraph_ids: what its memory recalls


# ---- each verifier on hand-built cases -------------------------------------------------------

GOLOVIN = "Which Italian-American composer and librettist wrote the English language opera, Maria Golovin?"


def test_supported(corpus):
    ok = cand(
        GOLOVIN,
        ["Gian Carlo Menotti"],
        [step("q1", "Gian Carlo Menotti", "hp8"), step("q2", "Gian Carlo Menotti", "hp2")],
    )
    wrong = cand(
        GOLOVIN, ["Gian Carlo Menotti"], [step("q1", "Puccini", "hp8"), step("q2", "Gian Carlo Menotti", "hp2")]
    )
    missing = cand(
        GOLOVIN, ["Gian Carlo Menotti"], [step("q1", "Gian Carlo Menotti", "no-such-id"), step("q2", "x", "hp2")]
    )
    unstated = cand(
        GOLOVIN, ["Giacomo Puccini"], [step("q1", "Gian Carlo Menotti", "hp8"), step("q2", "Gian Carlo Menotti", "hp2")]
    )
    verdicts = Supported(corpus)([ok, wrong, missing, unstated])
    assert [v[0] for v in verdicts] == [True, False, False, False]
    assert [v[1] for v in verdicts[1:]] == [
        "step_answer_not_in_evidence",
        "evidence_not_in_corpus",
        "answer_not_in_evidence",
    ]
    # with a judge (the LLM teacher) it reads only what the string match kept, and its no drops
    asked = []

    def judge(batch):
        asked.extend(batch)
        return [False, True, None][: len(batch)]

    other = cand(GOLOVIN + " ", ["Gian Carlo Menotti"], ok.steps)
    third = cand(GOLOVIN + "  ", ["Gian Carlo Menotti"], ok.steps)
    judged = Supported(corpus, judge)([ok, wrong, other, third])
    assert asked == [ok, other, third]
    assert judged[0] == (False, "judge_unsupported") and judged[1] == verdicts[1] and judged[3][1] == "judge_no_verdict"
    assert judged[2][0] is True and judged[2][1].endswith("the teacher judges that the evidence states the gold")


def test_a_judge_reply_is_yes_no_or_no_verdict():
    from coa.formats import get_format
    from synth.questions.llm import verdict_of

    fmt = get_format("search_r1")
    replies = ["I read them.\n<answer>Yes</answer>", "<answer>no, it does not</answer>", "<answer>maybe</answer>", None]
    assert [verdict_of(r, fmt) for r in replies] == [True, False, None, None]


def test_needs_every_hop(corpus, searcher):
    check = NeedsEveryHop(corpus, searcher, 3)
    # a single-hop question dressed as two hops: Maria Golovin's page names the opera and its composer
    dressed = cand(
        GOLOVIN,
        ["Gian Carlo Menotti"],
        [step("Who wrote Maria Golovin?", "Gian Carlo Menotti", "hp8"), step("#1", "Gian Carlo Menotti", "hp2")],
    )
    # a question whose answer is in its own words
    leaking = cand(
        "When was Gian Carlo Menotti, who wrote Maria Golovin, born?",
        ["Gian Carlo Menotti"],
        [step("a", "Gian Carlo Menotti", "hp8"), step("b", "Gian Carlo Menotti", "hp2")],
    )
    one_doc = cand("Who wrote the opera?", ["Gian Carlo Menotti"], [step("a", "Gian Carlo Menotti", "hp8")])
    # a comparison whose two dates one document states (Menotti's page: born 1911, died 2007)
    both = cand(
        "Which is earlier: the answer to “When was the composer of Maria Golovin born?” or the answer to "
        "“When did he die?”?",
        ["July 7, 1911"],
        [step("a", "July 7, 1911", "hp2"), step("b", "Gian Carlo Menotti", "hp8")],
        kind="comparison",
        compared=["July 7, 1911", "February 1, 2007"],
    )
    verdicts = check([dressed, leaking, one_doc, both])
    assert verdicts == [
        (False, "single_document_shortcut"),
        (False, "answer_in_question"),
        (False, "single_document"),
        (False, "single_document_shortcut"),
    ]


def test_needs_every_hop_drops_a_composition_whose_bridge_is_not_needed(composed, corpus, searcher):
    candidates, _ = composed
    # Emily Bergl's page names the series set in Chicago: "X = the city of the band that recorded Renegade" adds nothing
    bergl = next(c for c in candidates if c.question.startswith("What series was Emily Bergl in"))
    assert NeedsEveryHop(corpus, searcher, 3)([bergl]) == [(False, "bridge_not_needed")]
    kept = [c for c in candidates if c.metadata["type"] == "composition" and c is not bergl]
    assert any(v[0] for v in NeedsEveryHop(corpus, searcher, 3)(kept))


def test_unique(index_dir, corpus, tokenizer):
    ok = cand(
        GOLOVIN + " (templated)",
        ["Gian Carlo Menotti"],
        [step("a", "Gian Carlo Menotti", "hp8"), step("b", "Gian Carlo Menotti", "hp2")],
    )
    off = cand(
        "Who wrote it?",
        ["Giacomo Puccini"],
        [step("a", "Gian Carlo Menotti", "hp8"), step("b", "Gian Carlo Menotti", "hp2")],
    )
    llm = cand("An LLM's question?", ["Gian Carlo Menotti"], [step("a", "Gian Carlo Menotti", "hp8")])
    llm.metadata["templated"] = False
    verdicts = Unique(str(index_dir), FMT, tokenizer, PREFILL)([ok, off, llm])
    assert verdicts[0][0] is True and verdicts[1] == (False, "solver_disagrees")
    assert verdicts[2] == (None, "skipped: no solver for an LLM's question (give teacher.base_url)")
    told = Unique(str(index_dir), FMT, tokenizer, PREFILL, solver=lambda batch: ["gian carlo menotti"])([llm])
    assert told[0][0] is True


def test_clean(tmp_path):
    evals = tmp_path / "eval.jsonl"
    write_questions(
        evals, [{"id": "e1", "question": "Who wrote the opera Maria Golovin?", "golden_answers": ["Menotti"]}]
    )
    seeds = [
        {"id": "s1", "question": "Who wrote the opera Maria Golovin?"},
        {"id": "s2", "question": "In which city was the composer of Amahl and the Night Visitors born?"},
    ]
    long = (
        "Which is earlier: the answer to “When was the conductor of the first performance of the opera born?” "
        "or the answer to “When was the librettist of the radio opera The Old Maid and the Thief born?”?"
    )
    batch = [
        cand("WHO wrote the opera 'Maria Golovin'?", ["x"], [step("a", "x", "hp8")]),
        cand("Where did X live? (X: the answer to “...”)", ["x"], [step("a", "x", "hp8")], seed_ids=["s1"]),
        cand(long, ["x"], [step("a", "x", "hp8")]),
        cand(long, ["y"], [step("a", "y", "hp2")]),
        cand(long.replace("first performance", "first staging"), ["x"], [step("a", "x", "hp8")]),
        cand("In which city was the composer of Amahl and the Night Visitors born ?", ["x"], [step("a", "x", "hp8")]),
    ]
    assert Clean([str(evals)], seeds, threshold=0.7)(batch) == [
        (False, "contaminated"),
        (False, "part_in_eval_set"),
        (True, "no evaluation question among its parts; no duplicate"),
        (False, "duplicate"),
        (False, "near_duplicate"),
        (False, "duplicate_of_seed"),
    ]


def test_solvable_gives_difficulty_and_the_right_number_of_searches(composed, searcher, tokenizer, corpus):
    candidates, _ = composed
    chains = [c for c in candidates if c.metadata["type"] == "composition"]
    kept = [c for c, v in zip(chains, NeedsEveryHop(corpus, searcher, 3)(chains)) if v[0]]
    budget = Budget(max_actions=5, max_tokens=1024, topk=3)
    verdicts = Solvable(searcher, FMT, tokenizer, PREFILL, budget, [1, 3, 5])(kept)
    solved = [c for c, v in zip(kept, verdicts) if v[0]]
    assert solved, verdicts
    for c in solved:
        s = c.metadata["solver"]
        assert s["topk"] == [1, 3, 5] and c.metadata["difficulty"] == round(1 - s["pass_rate"], 3)
        # a composition the needs-every-hop check kept takes more than the question's own search, and
        # never more searches than it has hops
        assert 2 <= s["searches"] <= c.metadata["hops"], (c.question, s)
    unsolvable = cand("Which film of 1999 did nobody make?", ["Qwzx Vrrb"], [step("a", "Qwzx Vrrb", "hp8")])
    (verdict,) = Solvable(searcher, FMT, tokenizer, PREFILL, budget, [3])([unsolvable])
    assert verdict == (False, "answer_not_reached")


def test_no_memory_shortcut_is_skipped_unless_asked():
    check = NoMemoryShortcut(VerifyConfig(), FMT, None, load=lambda: pytest.fail("the student must not load"))
    assert check([cand("q?", ["a"], [step("a", "a", "hp8")])]) == [(None, "skipped: verify.memory=false")]


@pytest.mark.model
@pytest.mark.slow
def test_no_memory_shortcut_drops_what_the_student_knows_closed_book(index_dir, tmp_path):
    from coa.model import load_policy

    cfg = config(
        index_dir, tmp_path, verify={"memory": True, "memory_k": 1, "memory_temperature": 0.0, "memory_max_tokens": 32}
    )
    check = NoMemoryShortcut(cfg.verify, FMT, cfg.prompt, lambda: load_policy("base", 0.0))
    known = cand("What is the capital city of France?", ["Paris"], [step("a", "Paris", "hp8")])
    unknown = cand(
        "Which is earlier: the answer to “When was the aviator born?” or the answer to “When was the "
        "cover artist of Multiverse born?”?",
        ["1872"],
        [step("a", "1872", "hp8")],
    )
    assert check([known, unknown]) == [
        (False, "student_answers_closed_book"),
        (True, "the student answers wrong closed-book in 1 of 1 samples"),
    ]


def test_pipeline_records_every_verdict_and_counts_the_reasons(corpus, searcher):
    good = cand(
        "Who wrote the opera the blind recluse Donato appears in, and what nationality?",
        ["Italian"],
        [step("a", "Gian Carlo Menotti", "hp8"), step("b", "Italian", "hp2")],
    )
    bad = cand(GOLOVIN, ["Gian Carlo Menotti"], [step("a", "Puccini", "hp8"), step("b", "Gian Carlo Menotti", "hp2")])
    pipe = Pipeline([Supported(corpus), NeedsEveryHop(corpus, searcher, 3)], skip=["needs_every_hop"])
    assert pipe([good, bad]) == [good]
    assert good.metadata["verification"]["needs_every_hop"] == {"passed": None, "reason": "skipped: verify.skip"}
    assert pipe.reasons == Counter({"supported: step_answer_not_in_evidence": 1})
    assert pipe.dropped[0]["id"] == bad.id and pipe.dropped[0]["reason"] == "step_answer_not_in_evidence"


# ---- the whole command ----------------------------------------------------------------------


@pytest.mark.slow
def test_compose_on_the_embedded_data_writes_300_verified_questions(index_dir, tmp_path, tokenizer):
    m = run(config(index_dir, tmp_path / "q"))
    assert m["written"] >= 300 and set(m["by_hops"]) <= {"3", "4"}, m
    rows = load_questions(tmp_path / "q/questions.jsonl")  # what synth.run reads
    assert len(rows) == m["written"] and all(r["metadata"]["hops"] >= 3 for r in rows)
    for r in rows:
        v = r["metadata"]["verification"]
        assert [name for name, x in v.items() if x["passed"] is False] == []
        assert v["no_memory_shortcut"] == {"passed": None, "reason": "skipped: verify.memory=false"}
    assert m["drop_reasons"] and (tmp_path / "q/drop_reasons.png").stat().st_size > 1000
    assert json.loads((tmp_path / "q/metrics.json").read_text())["written"] == m["written"]


@pytest.mark.slow
def test_a_small_run_writes_a_question_file_synth_run_takes(index_dir, tmp_path, tokenizer):
    seeds = load_questions(DEFAULT_QUESTIONS, limit=400)
    write_questions(tmp_path / "seeds.jsonl", seeds)
    assert (
        main(
            [
                f"questions={tmp_path / 'seeds.jsonl'}",
                f"search.index={index_dir}",
                f"out={tmp_path / 'q'}",
                "format=search_r1",
                "prompt.demonstrations=false",
                "limit=6",
                "search.max_actions=5",
                "search.max_tokens=1024",
            ]
        )
        == 0
    )
    m = json.loads((tmp_path / "q/metrics.json").read_text())
    assert m["written"] == 6 and m["verified"] >= 6 and m["proposer_drops"]["seed_not_a_bridge"] > 0
    owner = json.loads((tmp_path / "q/.autocoa-owner.json").read_text())
    assert owner["tool"] == TOOL and set(owner["files"]) == {
        "questions.jsonl",
        "metrics.json",
        "drop_reasons.png",
        "dropped.jsonl",
        "pool.jsonl",
    }
    # pool.jsonl: every seed, then the new questions (a file to split and train on)
    new = load_questions(tmp_path / "q/questions.jsonl")
    assert [q["id"] for q in load_questions(tmp_path / "q/pool.jsonl")] == [q["id"] for q in seeds + new]
    # synth.run and the reference teacher take the file like any question file
    synth = build(
        SynthConfig,
        dict(
            mode="coa",
            format="search_r1",
            questions=str(tmp_path / "q/questions.jsonl"),
            out=str(tmp_path / "coa"),
            teacher={"kind": "reference"},
            progress=False,
            search={"index": str(index_dir), "max_actions": 5, "max_tokens": 1024},
            prompt={"demonstrations": False, "prefill": PREFILL},
        ),
        "test",
    )
    synth_run(synth)
    rows = read_trajectories(tmp_path / "coa")
    assert len(rows) == 6 and sum(exact_match(t.answer, t.golden_answers) for t in rows) >= 5
    assert all(t.n_actions >= 1 for t in rows)

    # the data card says how the questions were made and what each verifier dropped
    from data_cards.card import _questions
    from data_cards.run_facts import RunFacts, question_sets

    params = {"question_sets": {"q": {"seeds": "seeds.jsonl"}, "missing": {}}, "data": {"questions": "x/q/pool.jsonl"}}
    sets = question_sets(tmp_path, params)
    assert list(sets) == ["q"] and sets["q"] == m  # a set params names but nobody made is left out
    facts = RunFacts({}, {}, {}, [], {}, params, {}, "", question_sets=sets)
    section = _questions(facts)
    assert f"{m['seeds']:,} seeds → {m['candidates']:,} candidates → {m['verified']:,} verified, 6 written" in section
    assert "The training questions of this run are its pool" in section
    seeds_only = RunFacts(
        {}, {}, {}, [], {}, params | {"split": {"train_synthesised": False}}, {}, "", question_sets=sets
    )
    assert "trained on the seeds alone (`split.train_synthesised=false`)" in _questions(seeds_only)
    assert f"| proposer: seed_not_a_bridge | {m['proposer_drops']['seed_not_a_bridge']} |" in section
    assert all(f"| {reason} | {n} |" in section for reason, n in m["drop_reasons"].items())


# ---- bad input ---------------------------------------------------------------------------------


def test_seeds_without_gold_answers_are_dropped_by_name(index_dir, tmp_path, capsys, tokenizer):
    seeds = load_questions(DEFAULT_QUESTIONS, limit=60)
    lines = [json.dumps(q) for q in seeds] + [
        json.dumps({"id": "nogold", "question": "What?"}),
        json.dumps({"id": "empty", "question": "Who?", "golden_answers": []}),
    ]
    (tmp_path / "seeds.jsonl").write_text("\n".join(lines) + "\n")
    assert (
        main(
            [
                f"questions={tmp_path / 'seeds.jsonl'}",
                f"search.index={index_dir}",
                f"out={tmp_path / 'q'}",
                "min_hops=2",
                "hops=4",
            ]
        )
        == 0
    )
    m = json.loads((tmp_path / "q/metrics.json").read_text())
    assert m["proposer_drops"]["seed_without_gold_answer"] == 2 and m["seeds"] == 60
    (tmp_path / "none.jsonl").write_text(json.dumps({"id": "x", "question": "What?"}) + "\n")
    assert main([f"questions={tmp_path / 'none.jsonl'}", f"search.index={index_dir}", f"out={tmp_path / 'q2'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"synth.questions: questions={tmp_path / 'none.jsonl'}: no usable seed question "
        "({'seed_without_gold_answer': 1})"
    )


def test_a_corpus_without_titles_is_a_named_drop_reason(tmp_path, tokenizer):
    corpus = tmp_path / "plain.jsonl"
    docs = [
        {"id": f"d{i}", "contents": f"Passage {i} says Gian Carlo Menotti wrote Maria Golovin in 1958."}
        for i in range(5)
    ]
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    build_index(corpus, tmp_path / "index", show_progress=False)
    seeds = load_questions(DEFAULT_QUESTIONS, limit=20)
    for q in seeds:
        q["metadata"].pop("gold_paragraph_ids", None)
    write_questions(tmp_path / "seeds.jsonl", seeds)
    assert (
        main([f"questions={tmp_path / 'seeds.jsonl'}", f"search.index={tmp_path / 'index'}", f"out={tmp_path / 'q'}"])
        == 0
    )
    m = json.loads((tmp_path / "q/metrics.json").read_text())
    assert m["written"] == 0 and m["proposer_drops"].get("corpus_without_titles", 0) > 0, m["proposer_drops"]


def test_bad_settings_and_a_foreign_folder_are_one_line_errors(index_dir, tmp_path, capsys):
    assert main(["proposer=invent"]) == 2
    assert capsys.readouterr().err.strip() == (
        "questions: proposer must be one of compose, extend, obfuscate, got 'invent'"
    )
    assert main(["proposer=extend"]) == 2
    assert "proposer=extend needs an LLM: teacher.base_url=" in capsys.readouterr().err
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs/notes.txt").write_text("mine")
    assert (
        main(
            [
                f"search.index={index_dir}",
                f"out={tmp_path / 'theirs'}",
                "limit=1",
                f"questions={DEFAULT_QUESTIONS}",
                "verify.skip=[solvable]",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("synth.questions: ") and "did not write it" in err and "overwrite=true" in err
    assert (tmp_path / "theirs/notes.txt").read_text() == "mine"


# ---- extend and obfuscate through the engine seam (FakeReasoningAPI, scripted) ------------------


def extend_script(mode: str):
    """A stand-in question writer: a bridge whose answer is the new passage's title (or a bad reply)."""

    def write(prompt: str) -> str:
        if "Proposed answer:" in prompt:  # the supported check's judge
            return "Final answer: " + ("no" if mode == "judge_no" else "yes")
        m = re.search(r'The new passage is \[(\d+)\] "([^"]+)"', prompt)
        if m is None:  # the unique check asks it to answer from the passages: the last one's title
            titles = re.findall(r'^\[\d+\] "([^"]+)"', prompt, re.M)
            return "Final answer: " + re.sub(r"\s*\([^)]*\)$", "", titles[-1])
        current = re.search(r"Current question: (.*)", prompt).group(1)
        if mode == "empty":
            return ""
        if mode == "no_question":
            return 'Final answer: {"answer": "x"}'
        answer = re.sub(r"\s*\([^)]*\)$", "", m.group(2))
        question = (
            f"What is {answer}, the passage linked to this: {current}"
            if mode == "leak"
            else f"Which page does the answer to this lead to: {current}"
        )
        reply = {"question": question, "answer": answer, "type": "bridge", "step": "What page is linked from #1?"}
        return "I read the passages.\n\nFinal answer: " + json.dumps(reply)

    return write


def llm_config(index_dir, out, api, proposer, **over):
    settings = dict(
        proposer=proposer, teacher={"base_url": api.url, "model": api.model, "retries": 0}, min_hops=2, hops=3
    )
    return config(index_dir, out, **(settings | over))


@pytest.fixture(scope="module")
def bridge_seeds(tmp_path_factory, corpus):
    rows = load_questions(DEFAULT_QUESTIONS, limit=60)
    seeds = []  # bridge seeds whose question names its first document's title (obfuscate rewrites it)
    for s in compose.seeds_of(rows, corpus, Counter()):
        if states(s.question, bare(corpus.title(s.steps[0]["evidence_id"]))) and len(seeds) < 4:
            seeds.append(s.row)
    path = tmp_path_factory.mktemp("seeds") / "seeds.jsonl"
    write_questions(path, seeds)
    return path, seeds


@pytest.mark.parametrize("api_kind", ["chat", "completions"])
def test_extend_adds_a_hop_through_the_engine_seam(index_dir, tmp_path, bridge_seeds, api_kind, tokenizer):
    path, seeds = bridge_seeds
    with FakeReasoningAPI(script=extend_script("ok")) as api:
        cfg = llm_config(
            index_dir, tmp_path / "q", api, "extend", questions=str(path), verify={"skip": ["solvable", "clean"]}
        )
        cfg.teacher.api = api_kind
        m = run(cfg)
    assert len(api.requests) >= len(seeds)  # one prompt per seed, through the engine
    rows = [json.loads(line) for line in (tmp_path / "q/questions.jsonl").read_text().splitlines()]
    made = rows + [json.loads(line) for line in (tmp_path / "q/dropped.jsonl").read_text().splitlines()]
    assert m["candidates"] >= 2 and len(made) == m["candidates"], m["proposer_drops"]
    for r in made:
        meta = r["metadata"]
        assert meta["generator"] == "extend" and meta["teacher"] == api.model and meta["hops"] == 3
        assert meta["prompt_hash"] and meta["seed"] == 0 and not meta["templated"]
        last = meta["question_decomposition"][-1]
        assert last["evidence_id"] == meta["evidence_ids"][-1] and last["answer"] == r["golden_answers"][0]
        assert meta["components"][-1] == {"kind": "passage", "id": last["evidence_id"]}
    assert rows and all(r["metadata"]["verification"]["unique"]["passed"] is not None for r in rows)
    assert all("the teacher judges" in r["metadata"]["verification"]["supported"]["reason"] for r in rows)
    judged = [p for p in api.requests if "Proposed answer:" in json.dumps(p)]
    assert len(judged) >= len(rows)  # the judge asked through the same engine


def test_a_teacher_judging_the_evidence_unsupported_drops_the_question(index_dir, tmp_path, bridge_seeds, tokenizer):
    path, seeds = bridge_seeds
    with FakeReasoningAPI(script=extend_script("judge_no")) as api:
        m = run(llm_config(index_dir, tmp_path / "q", api, "extend", questions=str(path)))
    assert m["candidates"] >= 2 and m["written"] == 0
    assert m["drop_reasons"] == {"supported: judge_unsupported": m["candidates"]}, m["drop_reasons"]


@pytest.mark.parametrize(
    "mode, reason",
    [("empty", "teacher_no_question"), ("no_question", "teacher_no_question"), ("leak", "teacher_answer_in_question")],
)
def test_a_teacher_without_a_usable_question_is_a_named_drop(
    index_dir, tmp_path, bridge_seeds, mode, reason, tokenizer
):
    path, seeds = bridge_seeds
    with FakeReasoningAPI(script=extend_script(mode)) as api:
        m = run(llm_config(index_dir, tmp_path / "q", api, "extend", questions=str(path)))
    assert m["candidates"] == 0 and m["proposer_drops"][reason] >= 2, m["proposer_drops"]
    assert set(m["proposer_drops"]) <= {reason, "no_linked_passage"}


def obfuscate_script(rewrite: bool):
    def write(prompt: str) -> str:
        if "Proposed answer:" in prompt:  # the supported check's judge
            return "Final answer: yes"
        question = re.search(r"\nQuestion: (.*)", prompt).group(1)
        if rewrite:
            for title in re.findall(r'^\[\d+\] "([^"]+)"', prompt, re.M):
                question = question.replace(re.sub(r"\s*\([^)]*\)$", "", title), "a work the passages describe")
        return "Final answer: " + json.dumps({"question": question})

    return write


@pytest.mark.parametrize("rewrite", [True, False])
def test_obfuscate_rewrites_named_entities_through_the_engine_seam(
    index_dir, tmp_path, bridge_seeds, rewrite, tokenizer
):
    path, seeds = bridge_seeds
    with FakeReasoningAPI(script=obfuscate_script(rewrite)) as api:
        m = run(
            llm_config(
                index_dir,
                tmp_path / "q",
                api,
                "obfuscate",
                questions=str(path),
                hops=2,
                verify={"skip": ["solvable", "clean", "needs_every_hop"]},
            )
        )
    if not rewrite:  # the question still names its evidence titles
        assert m["candidates"] == 0 and m["proposer_drops"]["entities_not_rewritten"] == len(seeds)
        return
    rows = [json.loads(line) for line in (tmp_path / "q/questions.jsonl").read_text().splitlines()]
    dropped = [json.loads(line) for line in (tmp_path / "q/dropped.jsonl").read_text().splitlines()]
    by_seed = {s["id"]: s for s in seeds}
    for r in rows + dropped:
        meta = r["metadata"]
        seed = by_seed[meta["seed_ids"][0]]
        assert meta["generator"] == "obfuscate" and meta["obfuscated_from"] == seed["question"]
        assert r["golden_answers"] == seed["golden_answers"] and "a work the passages describe" in r["question"]
    assert len(rows) + len(dropped) == m["candidates"] > 0


def test_a_real_extend_reply_echoing_the_template_is_repaired_and_counted(index_dir, tmp_path, tokenizer):
    """Qwen2.5-Coder-1.5B-Instruct's own reply (tests/fixtures/real_llm/extend_reply.json) copied the template's
    placeholders for type and step: the candidate is a bridge whose last step is its own question, and
    metrics.json counts both repairs."""
    real = json.loads(REAL_EXTEND_REPLY.read_text())
    seeds = tmp_path / "seeds.jsonl"
    write_questions(seeds, [real["seed"]])
    with FakeReasoningAPI(
        script=lambda prompt: real["reply"] if "Current question:" in prompt else "Final answer: yes"
    ) as api:
        cfg = llm_config(
            index_dir,
            tmp_path / "q",
            api,
            "extend",
            questions=str(seeds),
            verify={"skip": ["supported", "needs_every_hop", "unique", "clean", "solvable"]},
        )
        m = run(cfg)
    assert m["teacher_repairs"] == {"type_not_bridge_or_comparison": 1, "step_missing_or_placeholder": 1}
    (row,) = [json.loads(line) for line in (tmp_path / "q/questions.jsonl").read_text().splitlines()]
    assert row["question"] == "What year was Nina Simone born?" and row["metadata"]["type"] == "bridge"
    assert row["metadata"]["question_decomposition"][-1]["question"] == row["question"]
