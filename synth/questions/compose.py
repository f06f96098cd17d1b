"""``proposer=compose``: new multi-hop questions from seed questions and the corpus, with no LLM.

Two templates, each a question whose text is templated and labelled so (``metadata.generator`` =
"compose", ``metadata.templated`` = true, ``metadata.template``), like the reference teacher's rows:

``composition`` (MuSiQue's construction)
    The gold answer of question A is an entity (it has its own page in the corpus) that question B names,
    once, word for word. B with that entity replaced by X, plus what X is, needs A's hops and then B's:

        When did the composer of X die? (X: the answer to "Which opera premiered in Brussels in 1958?")

    The decomposition is A's steps, then B's steps renumbered, the entity in them written ``#k`` (the
    step that answers it). A composed question can be A of the next round, up to ``hops`` documents.

``comparison`` (two date-valued questions, HotpotQA's comparison kind over hidden entities)
    Two questions whose answers are dates in different years; the gold answer is the earlier date:

        Which is earlier: the answer to "When was the actor born who played Roger Murtaugh?" or the answer
        to "When was Mel Gibson born?"?

    A date-valued question is a seed whose gold answer is a date or year, a seed whose answer is a person
    whose page opens with a birth date ("When was the answer to … born?", one more step), or a corpus page
    that opens with a birth date ("When was P born?", one hop; taken from the seed's own context passages
    first). Two seeds give four hops, a seed and a page three.

On HotpotQA's 1,979 dev questions compositions are rare (an answer of one question is seldom named in
another: the set was not built to chain); comparisons give most of the volume. A set built by
composition (MuSiQue) chains far more often.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

from coa.score import normalize_answer
from synth.questions.record import YES_NO, Candidate, Corpus, bare, decomposed, digest, shift, states

TEMPLATE_VERSION = "compose-v1"
COMPOSITION = "{b} ({x}: the answer to “{a}”)"
COMPARISON = "Which is earlier: the answer to “{a}” or the answer to “{b}”?"
BORN_QUESTION = "When was {name} born?"
BORN_OF_ANSWER = "When was the answer to “{q}” born?"
PROMPT_HASH = digest(TEMPLATE_VERSION, COMPOSITION, COMPARISON, BORN_QUESTION, BORN_OF_ANSWER)
VARIABLES = ("X", "Y", "Z", "W", "V", "U", "T")

MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_MONTHS = {m: i for i, m in enumerate(MONTH[3:-1].split("|"), start=1)}
DATE = re.compile(rf"^(?:(?:(\d{{1,2}}) )?({MONTH})(?: (\d{{1,2}}))?,? )?(\d{{3,4}})$")
_DAY_DATE = rf"(?:{MONTH} \d{{1,2}}, \d{{4}}|\d{{1,2}} {MONTH} \d{{4}})"
# a page's opening: "Name (born March 3, 1950) is …" or "Name (July 7, 1911 – February 1, 2007) was …"
BORN = re.compile(rf"^[^()]{{0,80}}\((?:[^()]*?;\s*)?(?:born\s+)?({_DAY_DATE})(?:\s*[–-]\s*{_DAY_DATE})?\)")


def parse_date(text: str) -> tuple[int, int, int] | None:
    """(year, month, day) of "July 22, 1946", "22 July 1946", "January 2004" or "1865" (0 = not given)."""
    m = DATE.match(text.strip())
    if not m:
        return None
    day = m.group(1) or m.group(3)
    return int(m.group(4)), _MONTHS.get(m.group(2) or "", 0), int(day or 0)


def is_entity(answer: str, corpus: Corpus) -> bool:
    """An answer that can be a bridge: a name (capitalised, not a date or number) with its own corpus page."""
    n = normalize_answer(answer)
    return (
        len(n) >= 3
        and n not in YES_NO
        and any(c.isupper() for c in answer)
        and not re.fullmatch(r"[\d\s]+", n)
        and bool(corpus.ids_named(answer))
    )


def the_mention(text: str, name: str) -> re.Match | None:
    """The one place ``text`` names ``name`` as written (case kept, word-bounded), if it names it exactly
    once and not as part of a longer name ("Chicago" in "the Chicago American Gears" is not the city)."""
    found = list(re.finditer(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text))
    if len(found) != 1:
        return None
    m = found[0]
    before, after = text[: m.start()].split(), text[m.end() :].split()
    joined = (
        before and before[-1][:1].isupper() and not before[-1].endswith((",", ".", ":", ";", '"')) and len(before) > 1
    ) or (after and after[0][:1].isupper())
    return None if joined else m


def candidate(question: str, golds: list[str], steps: list[dict], kind: str, parts: list[dict], seed: int) -> Candidate:
    evidence = list(dict.fromkeys(s["evidence_id"] for s in steps))
    meta = {
        "evidence_ids": evidence,
        "gold_paragraph_ids": evidence,
        "hops": len(evidence),
        "question_decomposition": steps,
        "type": kind,
        "components": parts,
        "seed_ids": sorted({p["id"] for p in parts if p["kind"] == "seed"}),
        "generator": "compose",
        "templated": True,
        "template": TEMPLATE_VERSION,
        "prompt_hash": PROMPT_HASH,
        "seed": seed,
    }
    return Candidate(f"compose-{digest(question)}", question, golds, meta, "synth-compose")


@dataclass
class Seed:
    row: dict
    steps: list[dict]

    @property
    def question(self) -> str:
        return self.row["question"]

    @property
    def gold(self) -> str:
        return self.row["golden_answers"][0]


def seeds_of(rows: list[dict], corpus: Corpus, drops: Counter) -> list[Seed]:
    """Seeds with a decomposition; the others counted in ``drops`` by reason."""
    return [Seed(row, steps) for row, steps in decomposed(rows, corpus, drops)]


def compositions(seeds: list[Seed], corpus: Corpus, max_hops: int, seed: int) -> list[Candidate]:
    """Every A∘B (A any earlier question, B a seed) of at most ``max_hops`` documents, round by round."""
    named: dict[str, list[Seed]] = {}  # what B's question names, word for word
    entities = {s.gold for s in seeds if is_entity(s.gold, corpus)}
    for b in seeds:
        for name in entities:
            if name in b.question and the_mention(b.question, name):
                named.setdefault(name, []).append(b)
    out: list[Candidate] = []
    level = [(s.question, s.row["golden_answers"], s.steps, [{"kind": "seed", "id": s.row["id"]}], 0) for s in seeds]
    while level:
        following = []
        for question, golds, steps, parts, depth in level:
            gold = golds[0]
            for b in named.get(gold, []) if len(golds) == 1 else []:
                if b.row["id"] in {p["id"] for p in parts}:
                    continue
                x = VARIABLES[min(depth, len(VARIABLES) - 1)]
                b_steps = shift(b.steps, len(steps), {gold: f"#{len(steps)}"})
                joined = steps + b_steps
                if len({s["evidence_id"] for s in joined}) > max_hops:
                    continue
                m = the_mention(b.question, gold)
                if any(states(question, g) or states(b.question, g) for g in b.row["golden_answers"]):
                    continue  # a part of it states the answer
                outer = b.question[: m.start()] + x + b.question[m.end() :]
                c = candidate(
                    COMPOSITION.format(b=outer, x=x, a=question),
                    b.row["golden_answers"],
                    joined,
                    "composition",
                    parts + [{"kind": "seed", "id": b.row["id"]}],
                    seed,
                )
                c.metadata["outer"] = outer  # B with the entity replaced: needs_every_hop checks it needs X
                out.append(c)
                following.append((c.question, c.golden_answers, joined, c.metadata["components"], depth + 1))
        level = following
    return out


@dataclass
class DateFact:
    """A question whose answer is a date: its text, steps, the date as stated, its parts."""

    question: str
    steps: list[dict]
    date: str
    parts: list[dict]
    owner: str  # the seed id or page id it uses up

    @property
    def when(self) -> tuple[int, int, int]:
        return parse_date(self.date)


def born_on(corpus: Corpus, doc_id: str) -> str | None:
    m = BORN.match(corpus.text(doc_id))
    return m.group(1) if m else None


def seed_dates(seeds: list[Seed], corpus: Corpus) -> list[DateFact]:
    facts = []
    for s in seeds:
        last = s.steps[-1]["evidence_id"]
        part = [{"kind": "seed", "id": s.row["id"]}]
        if parse_date(s.gold) and states(corpus.text(last), s.gold):
            facts.append(DateFact(s.question, s.steps, s.gold, part, s.row["id"]))
        elif is_entity(s.gold, corpus):
            pages = [i for i in corpus.ids_named(s.gold) if born_on(corpus, i)]
            page = last if last in pages else (pages[0] if pages else None)
            if page:
                date = born_on(corpus, page)
                step = {"question": f"When was #{len(s.steps)} born?", "answer": date, "evidence_id": page}
                facts.append(DateFact(BORN_OF_ANSWER.format(q=s.question), s.steps + [step], date, part, s.row["id"]))
    return facts


def page_dates(seeds: list[Seed], corpus: Corpus, used: set[str]) -> dict[str, list[DateFact]]:
    """One-hop birth-date questions from the pages in each seed's own context (HotpotQA's distractors)."""
    out: dict[str, list[DateFact]] = {}
    for s in seeds:
        for doc_id in s.row["metadata"].get("context_paragraph_ids") or []:
            doc_id = str(doc_id)
            date = None if doc_id in used else born_on(corpus, doc_id)
            name = bare(corpus.title(doc_id))
            if not date or not name or states(s.question, name):
                continue
            q = BORN_QUESTION.format(name=name)
            out.setdefault(s.row["id"], []).append(
                DateFact(
                    q,
                    [{"question": q, "answer": date, "evidence_id": doc_id}],
                    date,
                    [{"kind": "passage", "id": doc_id}],
                    doc_id,
                )
            )
    return out


def comparisons(
    seeds: list[Seed],
    corpus: Corpus,
    min_hops: int,
    max_hops: int,
    max_uses: int,
    rng: random.Random,
    seed: int,
    uses: Counter,
) -> list[Candidate]:
    """Pairs of date-valued questions in different years, at most ``max_uses`` per seed (``uses`` counts
    what compositions took already), each page once."""
    facts = seed_dates(seeds, corpus)
    used: set[str] = set()
    pages = page_dates(seeds, corpus, used)
    out = []

    def add(a: DateFact, b: DateFact) -> bool:
        if a.when[0] == b.when[0] or a.owner == b.owner:
            return False
        steps = a.steps + shift(b.steps, len(a.steps))
        hops = len({s["evidence_id"] for s in steps})
        if not min_hops <= hops <= max_hops:
            return False
        first, second = (a, b) if rng.random() < 0.5 else (b, a)
        text = COMPARISON.format(a=first.question, b=second.question)
        earlier = min((a, b), key=lambda f: f.when)
        if states(text, earlier.date):  # a part of it states the answer
            return False
        golds = [earlier.date] + (
            [str(earlier.when[0])]
            if earlier.date != str(earlier.when[0]) and not states(text, str(earlier.when[0]))
            else []
        )
        c = candidate(text, golds, steps, "comparison", a.parts + b.parts, seed)
        c.metadata["compared"] = [first.date, second.date]
        out.append(c)
        for f in (a, b):
            uses[f.owner] += 1
            if f.parts[0]["kind"] == "passage":
                used.add(f.owner)
        return True

    # a page question is short: two comparisons of one seed with two pages are near duplicates, so one page
    # each (from the seed's own context, else from anywhere), and the other uses pair two seeds (four hops)
    order = list(facts)
    rng.shuffle(order)
    spare = [i for i in corpus.all_ids() if born_on(corpus, i)]
    rng.shuffle(spare)
    for a in order:
        mine = [p for p in pages.get(a.owner, []) if p.owner not in used]
        while uses[a.owner] < max_uses and not any(add(a, p) for p in mine) and spare:
            doc_id = spare.pop()
            name = bare(corpus.title(doc_id))
            if doc_id in used or not name or states(a.question, name):
                continue
            q = BORN_QUESTION.format(name=name)
            mine = [
                DateFact(
                    q,
                    [{"question": q, "answer": born_on(corpus, doc_id), "evidence_id": doc_id}],
                    born_on(corpus, doc_id),
                    [{"kind": "passage", "id": doc_id}],
                    doc_id,
                )
            ]
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            if uses[a.owner] >= max_uses:
                break
            if uses[b.owner] < max_uses:
                add(a, b)
    return out


def propose(rows: list[dict], corpus: Corpus, cfg, drops: Counter) -> list[Candidate]:
    """Compositions and comparisons of ``min_hops``..``hops`` documents, at most ``max_uses`` per seed,
    in a seeded order."""
    rng = random.Random(cfg.seed)
    seeds = seeds_of(rows, corpus, drops)
    composed = [c for c in compositions(seeds, corpus, cfg.hops, cfg.seed) if c.metadata["hops"] >= cfg.min_hops]
    rng.shuffle(composed)
    uses: Counter = Counter()
    kept = []
    for c in composed:
        if all(uses[s] < cfg.max_uses for s in c.metadata["seed_ids"]):
            kept.append(c)
            uses.update(c.metadata["seed_ids"])
        else:
            drops["seed_used_up"] += 1
    compared = comparisons(seeds, corpus, cfg.min_hops, cfg.hops, cfg.max_uses, rng, cfg.seed, uses)
    out = kept + compared
    rng.shuffle(out)
    return out
