"""``synth.questions`` reads a seed's evidence in every form the reference teacher reads, through the one
function both use (``synth.reference.evidence_documents``): HotpotQA ``supporting_facts`` titles, FlashRAG
``gold_paragraph_ids`` (corpus ids, no titles), and a decomposition's ``evidence_id``s. Each form on a small
titled corpus of our own with a real BM25 index: the same bridge seed must decompose into the same two steps."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from coa.search import build_index
from synth.questions import compose
from synth.questions.record import Corpus, decomposition, read_seeds
from synth.reference import Passages, evidence_of

PAGES = {
    "d1": ("Moonlight Harbor", "Moonlight Harbor is a 1961 drama film directed by Peter Gray."),
    "d2": ("Peter Gray", "Peter Gray (March 3, 1920 – May 1, 1990) was a film director born in Dunmore."),
    "d3": ("Dunmore", "Dunmore is a small town on the river Arden."),
    "d4": ("Arden Bridge", "Arden Bridge is a stone bridge built in 1820."),
    "d5": ("Sea Road", "Sea Road is a 1958 comedy film."),
}
QUESTION = "Where was the director of Moonlight Harbor born?"
FORMS = {
    "supporting_facts": {"type": "bridge", "supporting_facts": [["Moonlight Harbor", 0], ["Peter Gray", 0]]},
    # the probe's form: corpus ids only, a 2Wiki-like type (all such seeds were dropped as seed_not_two_documents)
    "gold_paragraph_ids": {"type": "compositional", "gold_paragraph_ids": ["d1", "d2"]},
    "evidence_id": {
        "question_decomposition": [
            {"question": "Who directed Moonlight Harbor?", "answer": "Peter Gray", "evidence_id": "d1"},
            {"question": "Where was #1 born?", "answer": "Dunmore", "evidence_id": "d2"},
        ]
    },
}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evidence")
    docs = [{"id": i, "contents": f'"{title}"\n{text}'} for i, (title, text) in PAGES.items()]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return build_index(folder / "corpus.jsonl", folder / "index", show_progress=False)


def seed(form: str) -> dict:
    return {"id": form, "question": QUESTION, "golden_answers": ["Dunmore"], "metadata": FORMS[form]}


@pytest.mark.parametrize("form", list(FORMS))
def test_each_evidence_form_gives_the_seed_its_two_documents(index, form):
    steps, why = decomposition(seed(form), Corpus(index))
    assert why == "" and [s["evidence_id"] for s in steps] == ["d1", "d2"]
    assert steps[-1]["answer"] == "Dunmore"
    # the reference teacher reads the same documents from the same row (titles from the index)
    docs = [(e.doc_id, e.title) for e in evidence_of(seed(form), Passages(index)) if e.title or e.doc_id]
    expected_ids = ["", ""] if form == "supporting_facts" else ["d1", "d2"]
    assert docs == list(zip(expected_ids, ["Moonlight Harbor", "Peter Gray"]))


def test_synth_questions_keeps_gold_paragraph_id_seeds(index, tmp_path):
    """The probe: a question file whose rows carry only ``gold_paragraph_ids`` lost every seed."""
    rows = [seed("gold_paragraph_ids") | {"id": f"q{k}"} for k in range(3)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    drops: Counter = Counter()
    seeds = compose.seeds_of(read_seeds(tmp_path / "q.jsonl", drops), Corpus(index), drops)
    assert not drops and [s.row["id"] for s in seeds] == ["q0", "q1", "q2"]


def test_an_evidence_id_the_corpus_lacks_is_a_named_drop(index):
    row = seed("gold_paragraph_ids")
    row["metadata"] = {"gold_paragraph_ids": ["d1", "missing"]}
    assert decomposition(row, Corpus(index)) == (None, "evidence_not_in_corpus")
    row["metadata"] = {"gold_paragraph_ids": ["d1", "d2", "d3"]}
    assert decomposition(row, Corpus(index)) == (None, "seed_not_two_documents")
