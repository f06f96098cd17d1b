"""The verifiers, datatrove-style: each looks at a batch of candidates and keeps each one or drops it with a
named reason; ``Pipeline`` chains them (cheap ones first, so the costly ones see only survivors), records
every verdict in ``metadata.verification`` and counts the reasons (``metrics.json``, the plot).

    supported          every step's answer is stated in its evidence document, and the gold answer too
    needs_every_hop    the answer is not in the question's own words; no single evidence document, and no
                       document of one top-k search with the question as query, states the answer together
                       with everything the question names (the titles of evidence documents it mentions;
                       for a question that names none, most of its content words); for a comparison, no
                       single evidence document and no one top-k search states both compared values; for a
                       composition, its outer question (B with the entity replaced by X) is not answerable so
                       without X (MuSiQue's disconnected-reasoning filter: "bridge_not_needed")
    unique             given all the evidence, the solver answers the gold: the reference solver (the
                       reference teacher remembering every evidence passage) for templated questions, the
                       teacher for an LLM's (``llm.TeacherSolver``); skipped, with the reason, where neither
    clean              no part of it (its text, a seed it was built from) is an evaluation question (exact
                       match after normalising); not a duplicate, exact or near (MinHash over word 3-grams,
                       datasketch), of a seed or of a question kept before it
    solvable           the reference teacher, with real search, reaches the answer within the action budget
                       at search.topk; it also runs at each verify.solver_topk: difficulty = 1 - pass rate
    no_memory_shortcut the student answers wrong closed-book in verify.memory_k samples (pass@k: a sample whose
                       answer, or whole text where it tags none, holds a gold answer drops it); off unless
                       verify.memory=true (the 135M student takes seconds a sample on 2 shared cores)

Decontamination here is exact; the fuzzy and reordered matching of ``curate/decontam.py`` runs again on
every question text when ``curate`` builds the training sets (synth cannot import curate: one floor).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Protocol, Sequence

from datasketch import MinHash, MinHashLSH

from coa.agent import Budget, drive, start_episode
from coa.engines import make_engine
from coa.formats import FormatPreset
from coa.prompts import render_prompt
from coa.questions import load_questions
from coa.score import cover_exact_match, exact_match, normalize_answer
from synth.questions.record import YES_NO, Candidate, Corpus, bare, states
from synth.reference import Passages, ReferenceConfig

Verdict = tuple[bool | None, str]  # (True keep | False drop | None skipped, reason)
_STOP = frozenset(
    "a an the of in on at to for from by with and or is was were are be been which what who whom "
    "whose when where why how that this these those it its as than answer question earlier".split()
)


class Verifier(Protocol):
    name: str

    def __call__(self, batch: list[Candidate]) -> list[Verdict]: ...


def golds(c: Candidate) -> list[str]:
    return [g for g in c.golden_answers if normalize_answer(g)]


class Supported:
    """String match of every step's answer and the gold in the evidence; then, where ``judge`` is given (the
    LLM teacher: ``judge(batch) -> [True | False | None]``), the teacher's reading of the evidence too."""

    name = "supported"

    def __init__(self, corpus: Corpus, judge: Callable | None = None):
        self.corpus, self.judge = corpus, judge

    def one(self, c: Candidate) -> Verdict:
        if not c.steps:
            return False, "no_decomposition"
        for step in c.steps:
            if self.corpus.contents(step["evidence_id"]) is None:
                return False, "evidence_not_in_corpus"
            answer = str(step.get("answer", ""))
            if normalize_answer(answer) not in YES_NO and not states(self.corpus.text(step["evidence_id"]), answer):
                return False, "step_answer_not_in_evidence"
        if all(normalize_answer(g) in YES_NO for g in golds(c)):
            return True, "yes/no gold: not string-checked"
        texts = [self.corpus.text(i) for i in c.evidence_ids]
        if not any(states(t, g) for t in texts for g in golds(c)):
            return False, "answer_not_in_evidence"
        return True, "every step's answer and the gold are stated in the evidence"

    def __call__(self, batch):
        verdicts = [self.one(c) for c in batch]
        matched = [i for i, (kept, _) in enumerate(verdicts) if kept]
        if self.judge is None or not matched:
            return verdicts
        for i, said in zip(matched, self.judge([batch[i] for i in matched])):
            if said is None:
                verdicts[i] = (False, "judge_no_verdict")
            elif not said:
                verdicts[i] = (False, "judge_unsupported")
            else:
                verdicts[i] = (True, verdicts[i][1] + "; the teacher judges that the evidence states the gold")
        return verdicts


def named(c: Candidate, corpus: Corpus) -> list[str]:
    """What the question names: the (bare) titles of its evidence documents that it mentions."""
    out = []
    for doc_id in c.evidence_ids:
        title = bare(corpus.title(doc_id))
        if (
            title
            and states(c.question, title)
            and not any(normalize_answer(title) == normalize_answer(g) for g in golds(c))
        ):
            out.append(title)
    return out


def covers(text: str, names: list[str], question: str) -> bool:
    if names:
        return all(states(text, n) for n in names)
    words = {w for w in normalize_answer(question).split() if w not in _STOP and len(w) > 2}
    return bool(words) and sum(states(text, w) for w in words) >= 0.6 * len(words)


class NeedsEveryHop:
    name = "needs_every_hop"

    def __init__(self, corpus: Corpus, searcher, topk: int):
        self.corpus, self.searcher, self.topk = corpus, searcher, topk

    def __call__(self, batch):
        results = self.searcher.search([c.question for c in batch], self.topk) if batch else []
        outer = [c for c in batch if c.metadata.get("outer")]
        found = dict(zip((c.id for c in outer), self.searcher.search([c.metadata["outer"] for c in outer], self.topk)))
        return [self.one(c, docs, found.get(c.id, [])) for c, docs in zip(batch, results)]

    def bridge_needed(self, c: Candidate, docs) -> bool:
        """A composition's outer question (B with the entity replaced by X) must not be answerable without X:
        no evidence document, and no document of one search for it, states the answer with what it names."""
        outer = Candidate(c.id, c.metadata["outer"], c.golden_answers, c.metadata)
        names = named(outer, self.corpus)
        texts = [self.corpus.text(i) for i in c.evidence_ids] + [d.contents for d in docs]
        return not any(any(states(t, g) for g in golds(c)) and covers(t, names, outer.question) for t in texts)

    def one(self, c: Candidate, docs, outer_docs) -> Verdict:
        answers = [g for g in golds(c) if normalize_answer(g) not in YES_NO]
        if any(states(c.question, g) for g in answers):
            return False, "answer_in_question"
        if len(set(c.evidence_ids)) < 2:
            return False, "single_document"
        if not answers:
            return True, "yes/no gold: no document can state it"
        compared = c.metadata.get("compared") or []
        if c.metadata.get("type") == "comparison" and compared:  # a comparison needs every compared value
            if any(all(states(self.corpus.text(i), v) for v in compared) for i in c.evidence_ids):
                return False, "single_document_shortcut"
            if all(any(states(doc.contents, v) for doc in docs) for v in compared):
                return False, "search_shortcut"
            return True, "no one document, and no one search for the question, states both compared values"
        if c.metadata.get("outer") and not self.bridge_needed(c, outer_docs):
            return False, "bridge_not_needed"
        names = named(c, self.corpus)
        for doc_id in c.evidence_ids:
            text = self.corpus.text(doc_id)
            if any(states(text, g) for g in answers) and covers(text, names, c.question):
                return False, "single_document_shortcut"
        for doc in docs:
            text = doc.contents
            if any(states(text, g) for g in answers) and covers(text, names, c.question):
                return False, "search_shortcut"
        return True, f"no one document states the answer with {', '.join(names) or 'the question words'}"


def reference_episodes(batch: list[Candidate], tokenizer, prefill: str, tools: str):
    return [start_episode(c.question, tokenizer, prefill, tools=tools, question=c.row()) for c in batch]


class Unique:
    """The reference solver given all the evidence (templated questions); ``solver`` for the others."""

    name = "unique"

    def __init__(self, index: str, fmt: FormatPreset, tokenizer, prefill: str, solver: Callable | None = None):
        self.index, self.fmt, self.tok, self.prefill, self.solver = index, fmt, tokenizer, prefill, solver

    def __call__(self, batch):
        templated = [c for c in batch if c.metadata.get("templated")]
        others = [c for c in batch if not c.metadata.get("templated")]
        verdicts: dict[str, Verdict] = {}
        if templated:
            engine = make_engine(
                "reference",
                cfg=ReferenceConfig(memory=1.0),
                fmt=self.fmt,
                tokenizer=self.tok,
                questions=[],
                passages=Passages(self.index),
                max_actions=0,
            )
            eps = drive(
                reference_episodes(templated, self.tok, self.prefill, "forbid"),
                engine,
                None,
                self.fmt,
                Budget(max_actions=0, max_tokens=4096, topk=1),
            )
            for c, ep in zip(templated, eps):
                answer = self.fmt.parse(ep.completion).answer
                verdicts[c.id] = (
                    (True, "the reference solver, given every evidence passage, answers the gold")
                    if exact_match(answer, c.golden_answers)
                    else (False, "solver_disagrees")
                )
        if others and self.solver is None:
            verdicts |= {
                c.id: (None, "skipped: no solver for an LLM's question (give teacher.base_url)") for c in others
            }
        elif others:
            for c, answer in zip(others, self.solver(others)):
                verdicts[c.id] = (
                    (True, "the teacher, given every evidence passage, answers the gold")
                    if cover_exact_match(answer, c.golden_answers)
                    else (False, "teacher_disagrees")
                )
        return [verdicts[c.id] for c in batch]


def normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


class Clean:
    name = "clean"

    def __init__(self, eval_sets: Sequence[str], seeds: list[dict], threshold: float, perms: int = 128):
        self.evals: dict[str, str] = {}
        for path in eval_sets:
            for q in load_questions(path):
                self.evals.setdefault(normal(q["question"]), str(path))
        self.seeds = {q["id"]: q["question"] for q in seeds}
        self.seed_texts = {normal(q) for q in self.seeds.values()}
        self.threshold, self.perms = threshold, perms
        self.lsh = MinHashLSH(threshold=threshold, num_perm=perms)
        self.kept: dict[str, MinHash] = {}
        for i, text in enumerate(self.seeds.values()):
            self._add(f"seed:{i}", text)

    def _minhash(self, text: str) -> MinHash:
        words = normal(text).split()
        m = MinHash(num_perm=self.perms, seed=1)
        for gram in {" ".join(words[i : i + 3]) for i in range(max(len(words) - 2, 1))}:
            m.update(gram.encode())
        return m

    def _add(self, key: str, text: str) -> None:
        m = self._minhash(text)
        if key not in self.kept:
            self.lsh.insert(key, m)
            self.kept[key] = m

    def one(self, c: Candidate, exact: set[str]) -> Verdict:
        text = normal(c.question)
        if text in self.evals:
            return False, "contaminated"
        parts = [self.seeds.get(p) for p in c.metadata.get("seed_ids") or []] + [s["question"] for s in c.steps]
        if any(p and normal(p) in self.evals for p in parts):
            return False, "part_in_eval_set"
        if text in exact:
            return False, "duplicate_of_seed" if text in self.seed_texts else "duplicate"
        m = self._minhash(c.question)
        near = [k for k in self.lsh.query(m) if self.kept[k].jaccard(m) >= self.threshold]
        if near:
            return False, "near_duplicate_of_seed" if near[0].startswith("seed:") else "near_duplicate"
        exact.add(text)
        self._add(c.id, c.question)
        return True, "no evaluation question among its parts; no duplicate"

    def __call__(self, batch):
        exact = set(self.seed_texts)
        return [self.one(c, exact) for c in batch]


class Solvable:
    """The reference teacher with real search at each top-k: solvable at ``topk``, difficulty from all."""

    name = "solvable"

    def __init__(self, searcher, fmt: FormatPreset, tokenizer, prefill: str, budget: Budget, topks: list[int]):
        self.searcher, self.fmt, self.tok, self.prefill, self.budget = searcher, fmt, tokenizer, prefill, budget
        self.topks = sorted(set(topks) | {budget.topk})

    def __call__(self, batch):
        runs = {}
        for k in self.topks:
            budget = Budget(self.budget.max_actions, self.budget.max_tokens, k)
            engine = make_engine(
                "reference",
                cfg=ReferenceConfig(memory=0.0),
                fmt=self.fmt,
                tokenizer=self.tok,
                questions=[],
                passages=None,
                max_actions=budget.max_actions,
            )
            runs[k] = drive(
                reference_episodes(batch, self.tok, self.prefill, "real"), engine, self.searcher, self.fmt, budget
            )
        out = []
        for i, c in enumerate(batch):
            passed = {
                k: bool(exact_match(self.fmt.parse(runs[k][i].completion).answer, c.golden_answers)) for k in self.topks
            }
            ep = runs[self.budget.topk][i]
            rate = sum(passed.values()) / len(passed)
            c.metadata["difficulty"] = round(1 - rate, 3)
            c.metadata["solver"] = {
                "teacher": "reference",
                "topk": self.topks,
                "passed": [passed[k] for k in self.topks],
                "pass_rate": round(rate, 3),
                "searches": ep.n_actions,
                "max_actions": self.budget.max_actions,
            }
            if passed[self.budget.topk]:
                out.append(
                    (True, f"the reference teacher answers it in {ep.n_actions} searches at top-{self.budget.topk}")
                )
            elif ep.finish_reason in ("max_actions", "max_tokens") or ep.n_actions >= self.budget.max_actions:
                out.append((False, "budget_exhausted"))  # it still had evidence to look for
            else:
                out.append((False, "answer_not_reached"))  # it found nothing more to search and answered wrong
        return out


class NoMemoryShortcut:
    name = "no_memory_shortcut"

    def __init__(self, cfg, fmt: FormatPreset, prompt, load: Callable):
        self.cfg, self.fmt, self.prompt, self.load = cfg, fmt, prompt, load

    def __call__(self, batch):
        if not self.cfg.memory:
            return [(None, "skipped: verify.memory=false")] * len(batch)
        engine, tok = self.load()
        k = self.cfg.memory_k
        eps = [
            start_episode(
                render_prompt(tok, c.question, self.prompt), tok, self.prompt.prefill, tools="forbid", question=c.row()
            )
            for c in batch
            for _ in range(k)
        ]
        drive(eps, engine, None, self.fmt, Budget(0, self.cfg.memory_max_tokens, 1), seeds=list(range(len(eps))))
        out = []
        for i, c in enumerate(batch):
            # the small student seldom closes an answer tag closed-book ("The answer is Paris."): where it
            # writes none, its whole text counts (a lenient reading, so a memorised answer is not missed)
            answers = [self.fmt.parse(ep.completion).answer or ep.completion for ep in eps[i * k : (i + 1) * k]]
            hit = sum(bool(cover_exact_match(a, c.golden_answers)) for a in answers)
            out.append(
                (False, "student_answers_closed_book")
                if hit
                else (True, f"the student answers wrong closed-book in {k} of {k} samples")
            )
        return out


class Pipeline:
    """Runs the verifiers in order on the survivors; ``counts`` per verifier, ``reasons`` of every drop."""

    def __init__(self, verifiers: list[Verifier], skip: Sequence[str] = ()):
        self.verifiers, self.skip = verifiers, set(skip)
        self.counts = {v.name: Counter() for v in verifiers}
        self.reasons: Counter = Counter()
        self.dropped: list[dict] = []
        self.kept: list[Candidate] = []

    def __call__(self, batch: list[Candidate], progress: Callable[[str], None] = lambda s: None) -> list[Candidate]:
        for v in self.verifiers:
            if v.name in self.skip:
                verdicts: list[Verdict] = [(None, "skipped: verify.skip")] * len(batch)
            else:
                progress(f"{v.name}: {len(batch)} candidates")
                verdicts = v(batch) if batch else []
            kept = []
            for c, (passed, reason) in zip(batch, verdicts):
                c.verdict(v.name, passed, reason)
                self.counts[v.name]["checked" if passed is not None else "skipped"] += 1
                if passed is False:
                    self.counts[v.name]["dropped"] += 1
                    self.reasons[f"{v.name}: {reason}"] += 1
                    self.dropped.append({**c.row(), "dropped_by": v.name, "reason": reason})
                else:
                    kept.append(c)
            batch = kept
        self.kept = batch
        return batch
