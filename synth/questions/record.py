"""What the question synthesiser passes between its steps: one record type, the corpus, the seeds.

``Candidate`` is datatrove's one record: a question row (FlashRAG ``id``/``question``/``golden_answers``)
plus the ``metadata`` every step reads or adds to (evidence ids, decomposition, kind, verification). A
decomposition step is MuSiQue's ``{question, answer, evidence_id}``: ``#k`` in a later step's question
stands for step k's answer (``synth.reference.evidence_of`` substitutes it), and each step's answer is
stated in its evidence document.

Seeds are read row by row: a row without gold answers (or otherwise unusable) is dropped with a named
reason and the run goes on. A seed's decomposition comes from its annotations: a MuSiQue
``question_decomposition`` as it is, or two evidence documents ordered as a bridge (the first document
names the second one's title, the second states the gold answer). The documents are read as the reference
teacher reads them (``synth.reference.evidence_documents``): ``gold_paragraph_ids`` (corpus ids) or HotpotQA
``supporting_facts`` titles (→ corpus ids through the index's ``DocumentStore``).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from coa.questions import _normalise, question_rows, unique_questions
from coa.score import normalize_answer
from coa.search.store import DocumentStore, title_of
from synth.reference import evidence_documents

YES_NO = ("yes", "no")
_PAREN = re.compile(r"\s*\([^)]*\)\s*$")
SENTENCE = re.compile(r"(?<=[.!?])\s+")


_DASHES = re.compile("[\u2010-\u2015]")  # en and em dashes separate words ("1929–1993"); SQuAD's rule keeps them


def norm(text: str) -> str:
    """Normalised with spaces at both ends, so ``norm(a) in norm(b)`` matches whole words only."""
    return f" {normalize_answer(_DASHES.sub(' ', text))} "


def states(text: str, answer: str) -> bool:
    """Whether ``text`` states ``answer`` (normalised, whole words; an empty answer is stated nowhere)."""
    a = norm(answer).strip()
    return bool(a) and f" {a} " in norm(text)


def bare(title: str) -> str:
    """A title without its disambiguation: ``Monster (2014 film)`` → ``Monster``."""
    return _PAREN.sub("", title).strip()


def digest(*parts: str, n: int = 12) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:n]


@dataclass
class Candidate:
    """One proposed question. ``metadata`` holds what the question file carries (see the package docstring)."""

    id: str
    question: str
    golden_answers: list[str]
    metadata: dict = field(default_factory=dict)
    dataset: str = "synth"

    @property
    def steps(self) -> list[dict]:
        return self.metadata.get("question_decomposition") or []

    @property
    def evidence_ids(self) -> list[str]:
        return self.metadata.get("evidence_ids") or []

    def verdict(self, name: str, passed: bool | None, reason: str) -> None:
        """Record one verifier's result (None: skipped) in ``metadata.verification``."""
        self.metadata.setdefault("verification", {})[name] = {"passed": passed, "reason": reason}

    def row(self) -> dict:
        """The FlashRAG question row (``coa.questions.load_questions`` reads it back)."""
        return {
            "id": self.id,
            "question": self.question,
            "golden_answers": list(self.golden_answers),
            "dataset": self.dataset,
            "metadata": self.metadata,
        }


class Corpus:
    """The documents of the search index: id → title and text, title → ids (``coa.search.DocumentStore``)."""

    def __init__(self, index_dir: str | Path):
        self.store = DocumentStore(index_dir)
        self._bare: dict[str, list[str]] | None = None

    def contents(self, doc_id: str) -> str | None:
        return self.store.get(doc_id)

    def title(self, doc_id: str) -> str:
        contents = self.store.get(doc_id)
        return title_of(contents) if contents and self.titled(contents) else ""

    def text(self, doc_id: str) -> str:
        contents = self.store.get(doc_id) or ""
        return contents.split("\n", 1)[1] if self.titled(contents) else contents

    @staticmethod
    def titled(contents: str) -> bool:
        """FlashRAG's ``"Title"\\ntext`` form (a corpus without titles has no quoted first line)."""
        head, sep, _ = contents.partition("\n")
        return bool(sep) and len(head) > 2 and head.startswith('"') and head.endswith('"')

    def has_titles(self, sample: int = 200) -> bool:
        n = min(sample, len(self.store))
        return n > 0 and any(self.titled(c) for c in self.store.contents.slice(0, n).to_pylist())

    def ids_with_title(self, title: str) -> list[str]:
        """Ids of the documents titled ``title``."""
        return [self.store.ids[r].as_py() for r in self.store.rows_with_title(title)]

    def ids_named(self, name: str) -> list[str]:
        """Ids of the documents whose title, without its disambiguation, is ``name`` (case aside): the pages
        of that entity ("The American (2010 film)" is no page of "American")."""
        if self._bare is None:
            self._bare = {}
            for doc_id, contents in zip(self.store.ids.to_pylist(), self.store.contents.to_pylist()):
                if self.titled(contents):
                    self._bare.setdefault(bare(title_of(contents)).casefold(), []).append(doc_id)
        return self._bare.get(name.strip().casefold(), [])

    def all_ids(self) -> list[str]:
        return self.store.ids.to_pylist()


def read_seeds(path: str | Path, drops: Counter) -> list[dict]:
    """FlashRAG question rows of ``path``; an unusable row is counted in ``drops`` by reason and skipped. Two
    different questions under one id are refused, as every question reader refuses them."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"questions={path}: no such question file")
    name = path.name.split(".")[0].split("_")[0]
    rows = []
    for where, row in question_rows(path):
        try:
            rows.append(_normalise(row, where, name))
        except ValueError as e:
            drops["seed_without_gold_answer" if "golden_answers" in str(e) else "seed_unreadable"] += 1
    return unique_questions(path, rows)


def decomposition(seed: dict, corpus: Corpus) -> tuple[list[dict] | None, str]:
    """(MuSiQue-style steps, "") of a seed from its annotations, or (None, drop reason)."""
    meta, gold = seed["metadata"], seed["golden_answers"][0]
    given = meta.get("question_decomposition")
    if given:
        steps = [
            {
                "question": str(s.get("question", "")),
                "answer": str(s.get("answer", "")),
                "evidence_id": str(s.get("evidence_id", s.get("paragraph_support_idx", ""))),
            }
            for s in given
        ]
        if any(corpus.contents(s["evidence_id"]) is None for s in steps):
            return None, "evidence_not_in_corpus"
        return steps, ""
    docs = evidence_documents(meta, corpus.title)
    if len(docs) != 2:
        return None, "seed_not_two_documents"
    if not corpus.has_titles():
        return None, "corpus_without_titles"
    if any(d.doc_id and not d.title for d in docs):  # an id the corpus does not hold (or holds untitled)
        return None, "evidence_not_in_corpus"
    ids = {d.title: d.doc_id or next(iter(corpus.ids_with_title(d.title)), None) for d in docs}
    if None in ids.values():
        return None, "evidence_title_not_in_corpus"
    titles = list(ids)
    if len(titles) != 2:  # two paragraphs of one page
        return None, "seed_not_two_documents"
    if normalize_answer(gold) in YES_NO:
        return None, "seed_yes_no"
    q = seed["question"]
    orders = [
        (a, b)
        for a, b in (titles, titles[::-1])
        if states(corpus.text(ids[b]), gold) and states(corpus.text(ids[a]), bare(b))
    ]
    if len(orders) == 2:  # both ways work: the first document is the one the question names
        orders = [o for o in orders if states(q, bare(o[0]))] or orders[:1]
    if not orders:
        return None, "seed_not_a_bridge"
    first, second = orders[0]
    # short templated sub-questions: the reference teacher searches them (twice their tokens per step)
    steps = [
        {
            "question": f'Which entity named in "{bare(first)}" leads on?',
            "answer": bare(second),
            "evidence_id": ids[first],
        },
        {"question": 'What does "#1" say?', "answer": gold, "evidence_id": ids[second]},
    ]
    return steps, ""


def shift(steps: list[dict], by: int, replace: dict[str, str] | None = None) -> list[dict]:
    """Steps renumbered to follow ``by`` earlier ones (``#k`` → ``#k+by``); ``replace`` swaps literal text
    (an entity for the ``#k`` of the step that answers it) in each question."""
    out = []
    for s in steps:
        question = re.sub(r"#(\d+)", lambda m: f"#{int(m.group(1)) + by}", s["question"])
        for text, ref in (replace or {}).items():
            question = re.sub(rf"(?<!\w){re.escape(text)}(?!\w)", ref, question)
        out.append({**s, "question": question})
    return out


def decomposed(rows: list[dict], corpus: Corpus, drops: Counter) -> list[tuple[dict, list[dict]]]:
    """(row, its decomposition) of the rows that have one; the others counted in ``drops`` by reason."""
    out = []
    for row in rows:
        steps, why = decomposition(row, corpus)
        if steps is None:
            drops[why] += 1
        else:
            out.append((row, steps))
    return out
