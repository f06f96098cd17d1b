"""The reference teacher's reading plan: which page holds each fact a question needs, in hop order.

Built once per question from its evidence annotations and the evidence pages' text (the corpus), so the
teacher reads what the question asks about and not only what the annotation lists:

- **compositions** (bridge, compositional, inference; MuSiQue chains of 2-4 hops): the page the question
  names states the next page's name, which states the next, …, and the last states the gold answer. A
  decomposition gives the chain directly (its sub-answers, and its ``evidence_id`` pages when present).
- **choice comparisons** ("Which film has the director born first, X or Y?"): each option's page, then the
  page of the entity whose attribute is compared: the option itself, or the evidence page its own page names
  (the film's director, the person's mother); a temporal one compares the dates read on those pages.

``next_read`` then names the action that reads the first missing fact: open its page when a search cut it
short (or when a page already read names it), search for it when nothing has returned it, and never a page
already read whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from coa.score import normalize_answer

_CHOICE = re.compile(r",\s*(?:the\s+)?(.+?)\s+or\s+(?:the\s+)?(.+?)\s*\?\s*$", re.IGNORECASE)
# which of two a temporal comparison asks for: the earlier (min) or the later (max) date
_EARLIER = re.compile(r"\b(first|earlier|earliest|older|oldest|before)\b", re.IGNORECASE)
_LATER = re.compile(r"\b(later|latest|last|younger|youngest|newer|newest|more recent|most recent)\b", re.IGNORECASE)
# which date of a page: a death date, a birth date, else the first date it states (a film's, a band's year)
_DIED = re.compile(r"\b(died|die|dies|death)\b", re.IGNORECASE)
_BORN = re.compile(r"\b(born|birth|older|oldest|younger|youngest)\b", re.IGNORECASE)
_MONTHS = "january|february|march|april|may|june|july|august|september|october|november|december"
_MONTH_NO = {m: k for k, m in enumerate(_MONTHS.split("|"), start=1)}
_DATE = re.compile(
    rf"\b(?:(?P<d1>\d{{1,2}})\s+(?P<m1>{_MONTHS})\s+(?P<y1>\d{{4}})"
    rf"|(?P<m2>{_MONTHS})\s+(?P<d2>\d{{1,2}}),?\s+(?P<y2>\d{{4}})"
    r"|(?P<y3>1[0-9]{3}|20[0-9]{2}))\b",
    re.IGNORECASE,
)
_DEATH_MARK = re.compile(r"\b(?:died|death|passed away)\b|–|—", re.IGNORECASE)
_BIRTH_MARK = re.compile(r"\bborn\b", re.IGNORECASE)
_NEAR = 16  # characters from "born" to the date it introduces ("born on 3 May 1901")
_PAREN = re.compile(r"\s*\([^)]*\)\s*$")


def _norm(text: str) -> str:
    return f" {normalize_answer(text)} "


def states(text: str, fact: str) -> bool:
    """Whether ``text`` states ``fact`` (normalised, whole words; an empty fact is stated nowhere)."""
    return bool(normalize_answer(fact)) and _norm(fact) in _norm(text)


def bare(title: str) -> str:
    """A title without its disambiguation: ``Monster (2014 film)`` → ``Monster``."""
    return _PAREN.sub("", title).strip()


@dataclass(frozen=True)
class Date:
    iso: str  # "1920-05-03", or "1920" when the text gives the year only
    span: str  # as the text writes it

    @property
    def year(self) -> int:
        return int(self.iso[:4])


def date_in(text: str, kind: str) -> Date | None:
    """The date of ``kind`` a page states: "died" the first date after a death mark (died, death, the dash of
    "(1882 – 1957)"), "born" the date right after "born" (else the first), "" the first date at all."""
    mark = {"died": _DEATH_MARK, "born": _BIRTH_MARK}.get(kind)
    found = mark.search(text) if mark else None
    if kind == "died" and not found:
        return None
    dates = _DATE.finditer(text, found.end() if found else 0)
    m = next(dates, None)
    if kind == "born" and found and (m is None or m.start() - found.end() > _NEAR):  # "Born in Utrecht, he … in 1946"
        m = next(_DATE.finditer(text), None)
    if m is None:
        return None
    year, month, day = m["y1"] or m["y2"] or m["y3"], m["m1"] or m["m2"], m["d1"] or m["d2"]
    return Date(f"{year}-{_MONTH_NO[month.lower()]:02d}-{int(day):02d}" if month else year, m.group(0))


@dataclass(frozen=True)
class Hop:
    """One page to read and what it must state: the next page's name, a sub-answer, the gold, a date
    ("" = returning the page is enough). A hop without a page title is a sub-question to search."""

    query: str
    title: str = ""
    fact: str = ""


@dataclass(frozen=True)
class Side:
    """One option of a choice comparison and the page whose attribute is compared for it."""

    option: str
    page: str  # the option's own page
    subject: str  # the option's page, or the evidence page it names (its director, mother, …)


@dataclass(frozen=True)
class Plan:
    hops: tuple[Hop, ...] = ()
    finals: tuple[str, ...] = ()  # pages that state the gold at the end of a chain: a quote from them answers
    sides: tuple[Side, ...] = ()
    pick: str = ""  # "min" / "max": a temporal choice comparison
    kind: str = ""  # which date it compares (``date_in``)


@dataclass
class Reading:
    """What a trajectory has read so far."""

    pages: dict[str, str] = field(default_factory=dict)  # title → text (a page read whole wins over a snippet)
    whole: set[str] = field(default_factory=set)  # titles read whole: opened, or returned uncut
    opened: set[str] = field(default_factory=set)
    results: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)  # query → [(title, cut)]

    def add_page(self, title: str, text: str) -> None:
        self.pages[title] = text
        self.whole.add(title)
        self.opened.add(title)

    def add_result(self, query: str, docs: list[tuple[str, str]], cut: Callable[[str], bool]) -> None:
        listed = self.results.setdefault(query, [])
        for title, text in docs:
            listed.append((title, cut(text)))
            if title not in self.whole:
                self.pages[title] = text
                if not cut(text):
                    self.whole.add(title)

    def states(self, fact: str) -> bool:
        return any(states(text, fact) for text in self.pages.values())


def _position(question: str, title: str) -> int:
    q, name = _norm(question), _norm(bare(title))
    return q.find(name) if name.strip() and name in q else -1


def _option_page(option: str, titles: list[str]) -> str | None:
    key = _norm(option)
    exact = [t for t in titles if key in (_norm(t), _norm(bare(t)))]
    loose = [t for t in titles if key.strip() and (key in _norm(t) or _norm(bare(t)) in key)]
    return next(iter(exact or loose), None)


def _decomposition_hops(meta: dict, subs: list, titles_by_id: dict[str, str]) -> list[Hop]:
    """MuSiQue-style steps: each sub-question (``#k`` already filled in), its answer, its page when the step
    names one (``evidence_id``: a corpus id; ``paragraph_support_idx``: an index into ``metadata.paragraphs``)."""
    paragraphs = meta.get("paragraphs") or []
    hops = []
    for step, sub in zip(meta.get("question_decomposition") or [], subs):
        title = titles_by_id.get(str(step.get("evidence_id", "")), "")
        idx = step.get("paragraph_support_idx")
        if not title and isinstance(idx, int) and 0 <= idx < len(paragraphs) and isinstance(paragraphs[idx], dict):
            title = str(paragraphs[idx].get("title", ""))
        hops.append(Hop(query=sub.query, title=title, fact=sub.answer))
    return hops


def plan_of(question: dict, evidence: list, text_of: Callable | None) -> Plan:
    """The plan of a question row from its evidence items (``synth.reference.evidence_of``) and
    ``text_of(item)``, the page's text in the corpus; an empty plan when there are no pages to read."""
    meta, q = question.get("metadata") or {}, question["question"]
    golds = [g for g in question["golden_answers"] if normalize_answer(g) not in ("yes", "no")]
    pages = {e.title: e for e in evidence if e.title}
    if meta.get("question_decomposition"):
        subs = [e for e in evidence if e.answer and not e.title and not e.doc_id]
        hops = _decomposition_hops(meta, subs, {e.doc_id: e.title for e in pages.values() if e.doc_id})
        last = hops[-1].title if hops else ""
        return Plan(hops=tuple(hops), finals=(last,) if last else ())
    if not pages or text_of is None:
        return Plan()
    texts = {title: text_of(e) or "" for title, e in pages.items()}

    def named_by(title: str, among: list[str]) -> str | None:
        return next((t for t in among if t != title and states(texts[title], bare(t))), None)

    def fact_of(title: str, kind: str | None) -> str:
        if kind is not None:
            date = date_in(texts[title], kind)
            return date.span if date else ""
        return next((g for g in golds if states(texts[title], g)), "")

    choice = _CHOICE.search(q)
    options = [o.strip() for o in choice.groups()] if choice else []
    option_pages = [_option_page(o, list(pages)) for o in options]
    if options and None not in option_pages and len(set(option_pages)) == len(options):
        pick = "min" if _EARLIER.search(q) else "max" if _LATER.search(q) else ""
        kind = ("died" if _DIED.search(q) else "born" if _BORN.search(q) else "") if pick else None
        others = [t for t in pages if t not in option_pages]
        sides = [Side(o, p, named_by(p, others) or p) for o, p in zip(options, option_pages)]
        links = [Hop(s.page, s.page, fact=bare(s.subject)) for s in sides if s.subject != s.page]
        subjects = [Hop(s.subject, s.subject, fact=fact_of(s.subject, kind) if pick else "") for s in sides]
        rest = [Hop(t, t) for t in pages if t not in {h.title for h in links + subjects}]
        return Plan(hops=tuple(links + subjects + rest), sides=tuple(sides), pick=pick, kind=kind or "")
    # a chain from each page the question names (else each page no other names), page to named page
    named = sorted((t for t in pages if _position(q, t) >= 0), key=lambda t: _position(q, t))
    starts = named or [t for t in pages if not any(named_by(o, [t]) for o in pages)] or list(pages)[:1]
    hops, finals, seen = [], [], set()
    for start in [*starts, *pages]:
        title = start
        while title and title not in seen:
            seen.add(title)
            nxt = named_by(title, [t for t in pages if t not in seen and t not in starts])
            fact = bare(nxt) if nxt else fact_of(title, None)
            if not nxt and fact:
                finals.append(title)
            hops.append(Hop(title, title, fact=fact))
            title = nxt
    return Plan(hops=tuple(hops), finals=tuple(finals))


def _stated(hop: Hop, reading: Reading) -> bool:
    if hop.title:
        text = reading.pages.get(hop.title)
        return text is not None and (not hop.fact or states(text, hop.fact))
    return reading.states(hop.fact) if hop.fact else hop.query in reading.results


def _read_action(hop: Hop, reading: Reading, can_open: bool, question: str) -> tuple[str, str] | None:
    """(tool, argument) that reads what ``hop`` misses, or None when nothing more can be read for it."""
    if hop.title and hop.title in reading.pages:  # returned, cut before the fact: read the rest
        return ("open", hop.title) if can_open and hop.title not in reading.whole else None
    if hop.title and can_open and (states(question, bare(hop.title)) or reading.states(bare(hop.title))):
        return "open", hop.title  # a page the question or a page read names: open it by its title
    if hop.query not in reading.results:
        return "search", hop.query
    if hop.title:
        return ("open", hop.title) if can_open else None
    cut = [t for t, was_cut in reading.results[hop.query] if was_cut and t not in reading.whole]
    return ("open", cut[0]) if can_open and cut else None


def next_read(plan: Plan, reading: Reading, can_open: bool, question: str) -> tuple[str, str, str] | None:
    """(tool, argument, what it looks for) of the first hop whose fact is still missing, or None."""
    for hop in plan.hops:
        if _stated(hop, reading):
            continue
        action = _read_action(hop, reading, can_open, question)
        if action:
            return *action, hop.title or hop.query
    return None


def compare(plan: Plan, reading: Reading, golds: list[str]) -> tuple[dict, str, list[str]] | None:
    """({option: year or ISO date}, the option picked, what was read for each) of a temporal choice once each
    subject's date is read, when the dates pick a gold option; None otherwise."""
    if not plan.pick:
        return None
    dates = {}
    for side in plan.sides:
        date = date_in(reading.pages.get(side.subject, ""), plan.kind)
        if date is None:
            return None
        dates[side.option] = date
    years = {o: d.year for o, d in dates.items()}
    isos = {o: d.iso for o, d in dates.items()}
    if len(set(years.values())) == len(years):
        values = years
    elif all(len(v) == 10 for v in isos.values()) and len(set(isos.values())) == len(isos):
        values = isos  # two in one year: the full dates tell them apart (ISO strings sort as dates)
    else:
        return None
    picked = (min if plan.pick == "min" else max)(values, key=values.get)
    if not any(_norm(g) == _norm(picked) for g in golds):
        return None
    read = [
        f"{s.option}: {dates[s.option].span}"
        if s.subject == s.page
        else f"{s.option}: {bare(s.subject)}, {dates[s.option].span}"
        for s in plan.sides
    ]
    return values, picked, read
