"""The reference teacher: templated CoA / CoT trajectories from the questions' evidence annotations.

A small model on a CPU cannot write usable teacher data (docs/concepts/reference_teacher.md). Multi-hop QA sets annotate which paragraphs or sub-questions answer each question; this teacher
turns those annotations into trajectories through the same agent loop and the same real search
environment as the LLM teacher. Its reasoning text is templated and says so: rows carry
``teacher="reference"`` and a ``reference/…`` prompt id. It is a way to get grounded data without a
GPU, not a model; the LLM teacher (``teacher.base_url=…``) remains the way to scale.

Evidence (``metadata`` of a FlashRAG question row; any that is present is used)
  ``gold_paragraph_ids``       corpus ids of the gold paragraphs (FlashRAG HotpotQA)
  ``supporting_facts``         ``[[title, sent], …]`` or ``{"title": [...], "sent_id": [...]}`` (HotpotQA, 2Wiki)
  ``question_decomposition``   ``[{question, answer, evidence_id}]`` sub-questions, ``#k`` = answer k (MuSiQue);
                               ``evidence_id``: the corpus id of the step's paragraph
  ``evidences``                ``[[subject, relation, object], …]`` triples (2Wiki)

CoA policy (``tools=real``): the first search is the question; after each observation, if the text
retrieved so far states a gold answer (or, for yes/no golds, every evidence item was retrieved) it
answers with it, quoting the sentence; otherwise it reads the page holding the first fact still missing
along the question's reading plan (``synth.reference_plan``: compositions page to named page, hop by hop;
comparisons the option's page, then the page whose attribute is compared: the option's own or the one it
names, e.g. the film's director): it opens that page when a search returned it cut short
(``search.snippet_tokens``) or a page read names it (with ``open`` enabled, ``search.tools``), else searches
its title or sub-question; a composition is answered from a page at the end of its chain (a chain of three
or four hops once every hop is read); a temporal choice
("which … first, A or B?") compares the dates read on the compared pages, in code run in the sandbox with
``python`` enabled (and answers what it printed), else in its reasoning; beyond the plan it searches the
first evidence item not retrieved yet, then opens an evidence document a search cut short; with nothing
left to do, or no room left in ``search.max_tokens`` for a call and the answer after it, it answers from
what it found (the top title), and that row is scored like any other. Observations are whatever the real
searcher (and the ``open`` tool) returned.

CoT policy (``tools=forbid``, also no-tool branches): closed-book, from a simulated memory: the teacher
remembers each evidence paragraph with probability ``memory`` (seeded per question and item), answers
when what it remembers states the gold answer, and guesses otherwise. A partial memory is what makes
the CoT×CoA analysis informative: questions land in all four cells and pairs exist in both directions.

Forced branches (a search-open prefill) continue with the next evidence query; a forced ``open`` (``force-open``)
reads the evidence document a search cut short or has not returned yet.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from coa.agent import Episode, Generation, step_text
from coa.engines import Request, register
from coa.formats import FormatPreset, result_text
from coa.questions import evidence_ids
from coa.score import normalize_answer
from coa.search.snippets import ELLIPSIS
from coa.tokenize import encode
from coa.tools.open_doc import read_page
from synth.reference_plan import Plan, Reading, bare, compare, next_read, plan_of

TEACHER_NAME = "reference"
TEMPLATE_VERSION = "reference-v3"  # bump when the templates below change (goes into prompt_hash)
ROOM_TO_ANSWER = 96  # tokens the answer after a call takes at most (its quote is cut at 300 characters)
ROOM_TO_ANSWER_CODE = 48  # tokens the answer after a python call takes (what it printed)
FORCEABLE = ("search", "open")  # the tools whose forced calls (force, force-open branches) it completes
_YES_NO = {"yes", "no"}
SENTENCE = re.compile(r"(?<=[.!?])\s+")
QUOTE_LEAD = "The search results say: "  # the grounded answer's reasoning: this, a quoted sentence, the answer
TITLED_LEAD = "The result on {title} says: "  # the same with the quoted document named first (quote=titled)
ANSWER_LEAD = " So the answer is "  # between the quoted sentence and the answer (synth.reading_pairs parses it back)
QUOTES = ("sentence", "titled")


@dataclass
class ReferenceConfig:
    """The reference teacher (``teacher.kind=reference``)."""

    memory: float = field(
        default=0.5,
        metadata={
            "help": "probability that the closed-book teacher remembers each "
            "evidence paragraph (CoT and no-tool branches)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the simulated memory"})
    corpus: str = field(
        default="",
        metadata={"help": "coa.search index folder whose passages the memory recalls; empty = synth's index"},
    )

    quote: str = field(
        default="sentence",
        metadata={
            "help": "how a grounded answer's reasoning quotes its evidence: sentence (the search results say: "
            '"...") | titled (the result on TITLE says: "...": the document named before its sentence)'
        },
    )

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.memory) <= 1.0:
            raise ValueError(f"reference.memory must be within [0, 1], got {self.memory}")
        if self.quote not in QUOTES:
            raise ValueError(f"reference.quote must be one of {', '.join(QUOTES)}, got {self.quote!r}")


@dataclass(frozen=True)
class Evidence:
    """One thing the question needs: a paragraph (id and/or title) or a sub-question with its answer."""

    query: str
    title: str = ""
    doc_id: str = ""
    answer: str = ""


def _titles(supporting) -> list[str]:
    if isinstance(supporting, dict):
        supporting = supporting.get("title") or []
    titles = []
    for item in supporting or []:
        title = item[0] if isinstance(item, (list, tuple)) else item
        if isinstance(title, str) and title and title not in titles:
            titles.append(title)
    return titles


def evidence_documents(meta: dict, title_of: Callable[[str], str] | None = None) -> list[Evidence]:
    """The documents a question row's evidence names, in hop order, each once: its decomposition's
    ``evidence_id``s, its ``gold_paragraph_ids`` (corpus ids, titled by ``title_of``), then the
    ``supporting_facts`` titles no id above has (doc_id ""). ``synth.questions`` reads seeds through it too."""
    docs: list[Evidence] = []
    for doc_id in evidence_ids({"metadata": meta}):
        title = title_of(doc_id) if title_of else ""
        docs.append(Evidence(query=title or doc_id, title=title, doc_id=doc_id))
    known = {d.title for d in docs}
    return docs + [Evidence(query=t, title=t) for t in _titles(meta.get("supporting_facts")) if t not in known]


def evidence_of(question: dict, passages: "Passages | None") -> list[Evidence]:
    """The evidence items of a question row, in hop order, from whichever annotations it carries."""
    meta = question.get("metadata") or {}
    items: list[Evidence] = []
    decomposition = meta.get("question_decomposition") or []
    answers: list[str] = []
    for step in decomposition:
        sub = str(step.get("question", ""))
        for k, prior in enumerate(answers, start=1):
            sub = sub.replace(f"#{k}", prior)
        answers.append(str(step.get("answer", "")))
        if sub:
            items.append(Evidence(query=sub, answer=answers[-1]))
    items += evidence_documents(meta, passages.title if passages else None)
    if not decomposition:
        for triple in meta.get("evidences") or []:
            if isinstance(triple, (list, tuple)) and len(triple) == 3 and not any(e.answer == triple[2] for e in items):
                items.append(Evidence(query=f"{triple[0]} {triple[1]}", answer=str(triple[2])))
    return items


class Passages:
    """id → (title, text) of an index's corpus, for titles of gold ids and the simulated memory."""

    def __init__(self, index_dir: str | Path):
        from coa.search.store import DocumentStore  # heavy: coa.search loads bm25s; only memory reads passages

        self._store = DocumentStore(index_dir)

    @staticmethod
    def _split(contents: str) -> tuple[str, str]:
        head, _, text = contents.partition("\n")
        return head.strip('"'), text

    def title(self, doc_id: str) -> str:
        contents = self._store.get(doc_id)
        return self._split(contents)[0] if contents else ""

    def text(self, item: Evidence) -> str:
        contents = self._store.get(item.doc_id) if item.doc_id else None
        if contents is None:
            rows = self._store.rows_with_title(item.title)
            contents = self._store.contents[rows[-1]].as_py() if rows else None
        return self._split(contents)[1] if contents else ""


def _norm(text: str) -> str:
    return f" {normalize_answer(text)} "


def supporting_sentence(golds: list[str], texts: list[str]) -> tuple[str, str, int] | None:
    """(gold alias, first sentence stating it, index of its text) if any text states a non-yes/no gold answer."""
    for gold in golds:
        g = _norm(gold)
        if g.strip() in _YES_NO or not g.strip():
            continue
        for k, text in enumerate(texts):
            if g in _norm(text):
                for sentence in SENTENCE.split(text):
                    if g in _norm(sentence):
                        return gold, sentence.strip(), k
                return gold, text.strip(), k
    return None


def _yes_no(golds: list[str]) -> str | None:
    """The gold alias that is a bare yes/no, if any (comparison questions)."""
    return next((g for g in golds if _norm(g).strip() in _YES_NO), None)


def _remembers(seed: int, question_id: str, item: Evidence, p: float) -> bool:
    key = f"{seed}\x1f{question_id}\x1f{item.doc_id or item.title or item.query}"
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < p


def _found(item: Evidence, doc_ids: set[str], titles: set[str], text: str) -> bool:
    if item.doc_id and item.doc_id in doc_ids:
        return True
    if item.title and item.title in titles:
        return True
    return bool(item.answer) and _norm(item.answer).strip() != "" and _norm(item.answer) in _norm(text)


def titles_in(observation: str, fmt: FormatPreset) -> list[str]:
    """Document titles in an observation (parsed by the format preset, which writes them)."""
    return [title for title, _ in fmt.documents(observation)]


def opened_page(observation: dict, fmt: FormatPreset) -> tuple[str, str]:
    """(title, text) of the page an ``open`` call returned; ("", "") for a failed call or another tool."""
    text = observation["text"]
    start, end = text.find(fmt.response_open), text.rfind(fmt.response_close)
    if observation.get("tool") != "open" or observation.get("error") or start < 0 or end < start:
        return "", ""
    return read_page(text[start + len(fmt.response_open) : end])


def retrieved_documents(observations: list[dict], fmt: FormatPreset) -> list[tuple[str, str]]:
    """(title, text) of each document these observation segments returned, in order (an opened page as one)."""
    documents = []
    for obs in observations:
        title, page = opened_page(obs, fmt)
        if title:
            documents.append((title, page.strip()))
        else:
            documents += [(t, text.strip()) for t, text in fmt.documents(obs["text"]) if text.strip()]
    return documents


def retrieved(observations: list[dict], fmt: FormatPreset) -> tuple[set[str], set[str], list[str]]:
    """(document ids, titles, texts) that these observation segments returned (an opened page by its title)."""
    ids, titles = set(), set()
    for obs in observations:
        ids.update(obs.get("doc_ids") or [])
        title = opened_page(obs, fmt)[0]
        titles.update([title] if title else titles_in(obs["text"], fmt))
    return ids, titles, [text for _, text in retrieved_documents(observations, fmt)]


def missing_evidence(evidence: list[Evidence], observations: list[dict], fmt: FormatPreset) -> list[Evidence]:
    """The evidence items none of these observations returned (by id, title, or a sub-answer in their text)."""
    ids, titles, texts = retrieved(observations, fmt)
    joined = "\n".join(texts)
    return [item for item in evidence if not _found(item, ids, titles, joined)]


def gold_stated(golds: list[str], evidence: list[Evidence], observations: list[dict], fmt: FormatPreset) -> bool:
    """What the teacher answers from (``_grounded_answer``): the observations state a gold answer, or, for a
    yes/no gold, they returned every evidence item."""
    texts = retrieved(observations, fmt)[2]
    if supporting_sentence(golds, texts):
        return True
    return bool(_yes_no(golds) and evidence and not missing_evidence(evidence, observations, fmt))


def _cut_short(text: str) -> bool:
    """Whether a search returned this document's text cut to a snippet."""
    return text.rstrip().endswith(ELLIPSIS.strip())


def _quote(sentence: str, limit: int = 300) -> str:
    return '"' + " ".join(sentence.split())[:limit].rstrip() + '"'


def grounded_reasoning(hit: tuple[str, str, int], titles: list[str], quote: str = "sentence") -> str:
    """The reasoning of an answer read from the sentence ``hit`` (``supporting_sentence`` over texts titled ``titles``)."""
    gold, sentence, k = hit
    lead = TITLED_LEAD.format(title=titles[k]) if quote == "titled" else QUOTE_LEAD
    return f"{lead}{_quote(sentence)}{ANSWER_LEAD}{gold}."


class ReferencePolicy:
    """Writes one question's trajectory step by step; ``__call__`` is the agent loop's generate."""

    def __init__(
        self,
        question: dict,
        evidence: list[Evidence],
        passages: Passages | None,
        fmt: FormatPreset,
        cfg: ReferenceConfig,
        episode: Episode,
        tokenizer,
        max_actions: int,
    ):
        self.q, self.evidence, self.passages, self.fmt, self.cfg = question, evidence, passages, fmt, cfg
        self.ep, self.tokenizer, self.max_actions = episode, tokenizer, max_actions
        self.tools: tuple[str, ...] = ("search",)  # the enabled tools (each request's)
        self.plan: Plan | None = None  # built at the first step that needs it (reads the evidence pages)
        self.tokens_left: float = float("inf")  # of the trajectory's budget, set by each generate

    # ---- what is known --------------------------------------------------------------
    def _observations(self) -> list[dict]:
        return [s for s in self.ep.segments if s["kind"] == "observation"]

    def _retrieved(self) -> tuple[set[str], set[str], list[str]]:
        return retrieved(self._observations(), self.fmt)

    def _to_open(self) -> str | None:
        """The title of an evidence document that a search returned cut short and no call has opened yet."""
        observations = self._observations()
        opened = {opened_page(obs, self.fmt)[0] for obs in observations}
        wanted_ids = {e.doc_id for e in self.evidence if e.doc_id}
        wanted_titles = {e.title for e in self.evidence if e.title}
        for obs in observations:
            if (obs.get("tool") or "search") != "search":
                continue
            ids = obs.get("doc_ids") or []
            for k, (title, text) in enumerate(self.fmt.documents(obs["text"])):
                evidence = title in wanted_titles or (k < len(ids) and ids[k] in wanted_ids)
                if evidence and title not in opened and _cut_short(text):
                    return title
        return None

    def _reading(self) -> Reading:
        """What the observations so far returned, page by page."""
        reading = Reading()
        for obs in self._observations():
            title, page = opened_page(obs, self.fmt)
            if title:
                reading.add_page(title, page)
            elif (obs.get("tool") or "search") == "search":
                reading.add_result(obs.get("query") or "", self.fmt.documents(obs["text"]), _cut_short)
        return reading

    def _computed(self) -> str | None:
        """What the last ``python`` call printed, if it ran cleanly."""
        runs = [o for o in self._observations() if o.get("tool") == "python"]
        if not runs or runs[-1].get("error"):
            return None
        out = result_text(runs[-1]["text"], self.fmt)
        return out.splitlines()[0].strip() if out else None

    def _top_titles(self) -> list[str]:
        """The titles of the last observation, best first."""
        observations = self._observations()
        return titles_in(observations[-1]["text"], self.fmt) if observations else []

    def _remembered(self) -> list[tuple[Evidence, str]]:
        if not self.passages:
            return []
        recalled = [
            (e, self.passages.text(e))
            for e in self.evidence
            if _remembers(self.cfg.seed, self.q["id"], e, self.cfg.memory)
        ]
        return [(e, text) for e, text in recalled if text]

    # ---- steps ------------------------------------------------------------------------
    def _block(self, reasoning: str, first: bool) -> str:
        """A reasoning block: search_r1 opens a think block per step; autocoa thinks once, answers after."""
        f = self.fmt
        if f.answer_after_think:
            return (f"{f.think_open}\n" if first else "") + f"{reasoning}\n"
        return f"{f.think_open}\n{reasoning}\n{f.think_close}\n"

    def _answer(self, answer: str) -> str:
        f = self.fmt
        return (f"{f.think_close}\n\n" if f.answer_after_think else "") + f.answer_text(answer)

    def _next_query(self) -> str | None:
        ids, titles, texts = self._retrieved()
        joined = "\n".join(texts)
        queried = {s.get("query") for s in self._observations()}
        for item in self.evidence:
            if not _found(item, ids, titles, joined) and item.query not in queried:
                return item.query
        return None

    def _grounded_answer(self) -> tuple[str, str, bool]:
        """(reasoning, answer, grounded) from what the searches returned."""
        golds = list(self.q["golden_answers"])
        documents = retrieved_documents(self._observations(), self.fmt)
        hit = supporting_sentence(golds, [text for _, text in documents])
        if hit:
            return grounded_reasoning(hit, [title for title, _ in documents], self.cfg.quote), hit[0], True
        ids, titles, texts = self._retrieved()
        joined = "\n".join(texts)
        yes_no = _yes_no(golds)
        if yes_no and self.evidence and all(_found(e, ids, titles, joined) for e in self.evidence):
            return (
                f"The results cover {', '.join(e.title or e.query for e in self.evidence)}. Comparing them, the answer is {yes_no}.",
                yes_no,
                True,
            )
        top = self._top_titles()
        guess = top[0] if top else "unknown"
        return f"The results do not state the answer directly. The closest match I found is {guess}.", guess, False

    def _memory_answer(self) -> tuple[str, str]:
        """(reasoning, answer) closed-book: what the simulated memory (plus any observation) holds."""
        golds = list(self.q["golden_answers"])
        remembered = self._remembered()
        _, _, texts = self._retrieved()
        hit = supporting_sentence(golds, [t for _, t in remembered] + texts)
        if hit:
            return f"I recall: {_quote(hit[1])} So the answer is {hit[0]}.", hit[0]
        yes_no = _yes_no(golds)
        if yes_no and self.evidence and len(remembered) == len(self.evidence):
            names = ", ".join(e.title or e.query for e, _ in remembered)
            return f"I recall what I know about {names}. Comparing them, the answer is {yes_no}.", yes_no
        guess = "no" if yes_no else (remembered[0][0].title if remembered and remembered[0][0].title else "unknown")
        return f"I do not recall enough to be sure. My best guess is {guess}.", guess

    def _forced(self, written: str) -> str | None:
        """The tool whose call the toolkit opened at the end of the step so far (a forced branch), or None."""
        return self.fmt.forced_tool(written)

    def _open_target(self) -> str:
        """The document a forced ``open`` reads: one a search cut short, else the first evidence document no
        search has returned, else the last search's top result, else the question's first evidence."""
        ids, titles, _ = self._retrieved()
        missing = [e.title for e in self.evidence if e.title and e.title not in titles and e.doc_id not in ids]
        top = self._top_titles()
        return self._to_open() or next(iter(missing), None) or next(iter(top), None) or self.q["question"]

    def _finish_forced_call(self, tool: str) -> str:
        """The rest of a forced call of ``tool`` after its prefill (``FormatPreset.call_opening``)."""
        if tool not in FORCEABLE:
            raise ValueError(
                f"the reference teacher cannot complete a forced {tool!r} call (it writes search and open calls): "
                f"leave force-{tool} out of synth.branches, or use an LLM teacher"
            )
        return self.fmt.tool_call("open", {"doc": self._open_target()})[len(self.fmt.call_opening("open")) :]

    def next_step(self, written: str) -> str:
        """The text of the next step from its start (after the last observation); ``written`` is what the
        step already holds."""
        f, first, forced = self.fmt, not self._observations(), self._forced(written)
        if self.ep.tools == "forbid":
            reasoning, answer = self._memory_answer()
            return self._block(reasoning, first) + self._answer(answer)
        if first:
            return self._block(
                "I need facts I cannot be sure of. I will search for the question first.", True
            ) + f.search_call(self.q["question"])
        query = self._next_query()
        computed = self._computed()
        if computed and not forced:
            return self._block(f"The code compared the years: {computed}. So the answer is {computed}.", False) + (
                self._answer(computed)
            )
        planned = None if forced else self._planned_step()
        if planned:
            return planned
        reasoning, answer, grounded = self._grounded_answer()
        if grounded and not forced:
            return self._block(reasoning, False) + self._answer(answer)
        if query and self.ep.n_actions < self.max_actions:
            step = self._block(f"I still need {query}. I will search for it.", False) + f.search_call(query)
            if forced or self._fits(step):
                return step
        cut = self._to_open() if "open" in self.tools and not forced else None
        if cut:
            step = self._block(f"The result on {cut} is cut short. I will open it and read on.", False)
            step += f.tool_call("open", {"doc": cut})
            if self._fits(step):
                return step
        if forced == "search":  # a forced search with nothing left to look up: search the question again
            return self._block("I will check the question once more.", False) + f.search_call(self.q["question"])
        return self._block(reasoning, False) + self._answer(answer)

    def _fits(self, call: str, answer: int = ROOM_TO_ANSWER) -> bool:
        """Another call fits: actions are left, and the tokens left hold this call's step and the answer after it."""
        return self.ep.n_actions < self.max_actions and len(encode(self.tokenizer, call)) + answer <= self.tokens_left

    def _planned_step(self) -> str | None:
        """The step the reading plan asks for: a temporal choice compared (in code with ``python``), a
        composition answered from a page at the end of its chain (three hops or more: once every hop is read),
        a yes/no answered once every planned page is read, or the page holding the first missing fact read;
        None leaves it to the evidence-order steps."""
        if self.plan is None:
            self.plan = plan_of(self.q, self.evidence, self.passages.text if self.passages else None)
        plan, reading, golds, f = self.plan, self._reading(), list(self.q["golden_answers"]), self.fmt
        action = next_read(plan, reading, "open" in self.tools, self.q["question"])
        read_step = self._read_step(action, reading) if action else None
        if read_step is not None and not self._fits(read_step):
            action = read_step = None  # no room left to read on: answer from what was read
        compared = compare(plan, reading, golds) if action is None else None
        if compared:
            values, picked, read = compared
            name = "years" if all(isinstance(v, int) for v in values.values()) else "dates"
            code = f"{name} = {values!r}\nprint({plan.pick}({name}, key={name}.get))"
            subjects = ", ".join(dict.fromkeys(bare(s.subject) for s in plan.sides))
            step = self._block(f"I have the dates of {subjects}. I will compare them in code.", False)
            step += f.tool_call("python", {"code": code})
            if "python" in self.tools and self._fits(step, ROOM_TO_ANSWER_CODE):
                return step
            word = "earliest" if plan.pick == "min" else "latest"
            reasoning = f"I read {'; '.join(read)}. The {word} is {picked}, so the answer is {picked}."
            return self._block(reasoning, False) + self._answer(picked)
        finals = [t for t in plan.finals if t in reading.pages]
        hit = supporting_sentence(golds, [reading.pages[t] for t in finals])
        if hit and not plan.sides and (len(plan.hops) <= 2 or action is None):  # longer chains: every hop read
            return self._block(grounded_reasoning(hit, finals, self.cfg.quote), False) + self._answer(hit[0])
        yes_no = _yes_no(golds)
        read = [h.title for h in plan.hops if h.title]
        if yes_no and action is None and read and all(t in reading.pages for t in read):
            reasoning = f"I read {', '.join(dict.fromkeys(read))}. Comparing them, the answer is {yes_no}."
            return self._block(reasoning, False) + self._answer(yes_no)
        return read_step

    def _read_step(self, action: tuple[str, str, str], reading: Reading) -> str:
        """The step that makes ``action`` (``synth.reference_plan.next_read``)."""
        tool, target, wanted = action
        if tool == "search":
            return self._block(f"I still need {wanted}. I will search for it.", False) + self.fmt.search_call(target)
        if target in reading.pages:
            reasoning = f"The result on {target} is cut short. I will open it and read on."
        else:
            reasoning = f"What I read names {bare(target)}. I will open its page."
        return self._block(reasoning, False) + self.fmt.tool_call("open", {"doc": target})

    def ends_in_call(self, text: str) -> bool:
        return any(close in text for close in self.fmt.call_closes(self.tools))

    def generate(self, max_tokens: int, tools: tuple[str, ...] = ("search",)) -> Generation:
        self.tools, self.tokens_left = tools, max_tokens
        written = step_text(self.ep.segments)
        step = self.next_step(written)
        if step.startswith(written):
            out = step[len(written) :]
        else:  # the step was cut (a decision prefix): continue from the cut with the action part
            out = self._continue_cut(written)
        # the student's ids, so budgets and token columns mean what they do for an engine
        ids = encode(self.tokenizer, out)
        if len(ids) > max_tokens:  # a budget smaller than the step: stop where the budget ends, as an engine would
            ids = ids[:max_tokens]
            return Generation(self.tokenizer.decode(ids), "length", token_ids=ids, n_tokens=max_tokens)
        return Generation(out, "stop", token_ids=ids, n_tokens=len(ids), eos=not self.ends_in_call(out))

    def _continue_cut(self, written: str) -> str:
        """Continue a decision prefix, which ends where a search call would start (plus any forced tag)."""
        f = self.fmt
        query = self.q["question"] if not self._observations() else (self._next_query() or self.q["question"])
        forced = self._forced(written)
        if forced == "search":  # finish the forced call
            return f"{query}{f.inner_pad}{f.search_close}"
        if forced:
            return self._finish_forced_call(forced)
        if self.ep.tools == "forbid":
            reasoning, answer = self._memory_answer()
            return self._block("Instead of searching, I answer from memory. " + reasoning, False) + self._answer(answer)
        return f.search_call(query)


@register("reference")
class ReferenceTeacher:
    """The teacher's part as an engine (``coa.engines``): one ``ReferencePolicy`` per episode, which reads
    the episode's question and actions."""

    name = TEACHER_NAME

    def __init__(
        self,
        cfg: ReferenceConfig,
        fmt: FormatPreset,
        tokenizer,
        questions: list[dict],
        passages: Passages | None,
        max_actions: int,
    ):
        """``questions``: rows to take evidence from when an episode's question lacks it (branch jobs are
        built from decision rows, which carry no metadata)."""
        self.cfg, self.fmt, self.passages, self.max_actions = cfg, fmt, passages, max_actions
        self.tokenizer = tokenizer
        self.by_id = {q["id"]: q for q in questions}
        self.policies: dict[int, ReferencePolicy] = {}

    async def generate(self, request: Request) -> Generation:
        ep = request.episode
        policy = self.policies.get(id(ep))
        if policy is None or policy.ep is not ep:
            question = {**self.by_id.get(ep.question["id"], {}), **ep.question}
            policy = self.policies[id(ep)] = ReferencePolicy(
                question,
                evidence_of(question, self.passages),
                self.passages,
                self.fmt,
                self.cfg,
                ep,
                self.tokenizer,
                self.max_actions,
            )
        gen = policy.generate(request.max_tokens, request.tools)
        if ep.done or gen.finish_reason == "length" or not gen.token_ids or not policy.ends_in_call(gen.text):
            self.policies.pop(id(ep), None)  # the episode ends with this step
        return gen

    async def close(self) -> None:
        self.policies.clear()
