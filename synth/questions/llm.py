"""``proposer=extend`` and ``proposer=obfuscate``: an LLM writes the question, through the engine seam.

The teacher is any OpenAI-compatible server (``teacher.base_url``), asked through the ``chat`` or
``completions`` engine (``synth.run.llm_teacher``, the same engines the trajectory teacher uses) in an
agent-loop episode that may not search (``tools=forbid``): one prompt, one reply, whose final answer is a
JSON object. A reply that holds no question, or a question with its answer inside, is dropped with a named
reason and the run goes on.

``extend``   from a seed question (its decomposition: ``record.decomposition``), retrieve a passage linked
             by an entity (a search for the current answer; the first new document that names it), and ask
             for a question whose answer needs the current evidence and that passage, as a bridge or a
             comparison. Repeat until ``hops`` documents. Each round adds one decomposition step.
``obfuscate`` rewrite each named entity of the question into a description drawn from the evidence ("a
             1994 film directed by a former child actor"), so that a search for the question's own words
             no longer finds it; the answer and decomposition stay.

Every question records the template's hash, the teacher model and the seed (``metadata.prompt_hash``,
``generator``, ``teacher``, ``seed``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter

from coa.agent import Budget, run_episode, start_episode
from coa.engines import Checked
from coa.engines.chat import extract_answer
from coa.formats import FormatPreset
from coa.score import normalize_answer
from synth.questions.record import YES_NO, Candidate, Corpus, bare, decomposed, digest, states
from synth.run import llm_teacher

EXTEND = """You write multi-hop questions for a question-answering benchmark.

Passages:
{passages}

Current question: {question}
Its answer: {answer}

The new passage is [{new}] "{title}". Write ONE new question whose answer can only be found by answering the current
question first and then reading passage [{new}]: a bridge (the answer is stated in passage [{new}], which you reach
through {answer}) or a comparison (of something passage [{new}] states with something the current evidence states).
The new question must not contain its answer, and must not name {answer}.

Reply with your reasoning, then give the final answer as {answer_markup}, where JSON is one line:
{{"question": "...", "answer": "...", "type": "bridge or comparison", "step": "the one-hop question passage [{new}] answers"}}"""
STEP_PLACEHOLDER = "the one-hop question passage ["  # the template's own words for the step (``reply_fields``)

OBFUSCATE = """You make questions harder to look up.

Passages:
{passages}

Question: {question}
Its answer: {answer}

Rewrite the question so that every named entity in it (people, works, places, organisations, dates of events) is
replaced by a description drawn from the passages, e.g. "a 1994 film directed by a former child actor". The question
must keep the same answer, must not contain the answer, and must not name any passage's title.

Reply with your reasoning, then give the final answer as {answer_markup}, where JSON is one line:
{{"question": "..."}}"""

SOLVE = """Passages:
{passages}

Using only these passages, answer the question with a short phrase.
Question: {question}

Give the final answer as {answer_markup}."""


JUDGE = """Passages:
{passages}

Question: {question}
Proposed answer: {answer}

Read together, do these passages state that the proposed answer is the answer to the question? Reply with your
reasoning, then give the final answer as {answer_markup}, with yes or no."""


def passages_block(corpus: Corpus, ids: list[str], limit: int = 1200) -> str:
    return "\n\n".join(f'[{i}] "{corpus.title(d)}"\n{corpus.text(d)[:limit]}' for i, d in enumerate(ids, start=1))


def evidence_prompts(template: str, batch: list[Candidate], corpus: Corpus, answer_markup: str) -> list[str]:
    """``template`` for each candidate: its evidence passages, question and (where the template names it) gold."""
    return [
        template.format(
            passages=passages_block(corpus, c.evidence_ids),
            question=c.question,
            answer=c.golden_answers[0],
            answer_markup=answer_markup,
        )
        for c in batch
    ]


def read_reply(completion: str, fmt: FormatPreset) -> dict | None:
    """The JSON object of a reply's final answer (or, failing that, the last object in the reply)."""
    answer = fmt.parse(completion).answer
    if answer is None:
        found = extract_answer(completion, fmt)
        answer = found[0] if found else completion
    for text in (answer, completion):
        for m in reversed(list(re.finditer(r"\{.*\}", text, re.S))):
            try:
                value = json.loads(m.group(0))
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


class Teacher:
    """Prompts in, replies out, through ``synth.run.llm_teacher`` (a fresh engine per batch)."""

    def __init__(self, cfg, tokenizer, fmt: FormatPreset):
        self.cfg, self.tok, self.fmt = cfg, tokenizer, fmt
        self.model = cfg.teacher.model
        self.tokens = Counter()
        self.repairs = Counter()  # replies used after a repair (``reply_fields``)

    def _prompt(self, text: str) -> str:
        if self.cfg.teacher.api == "chat" or not getattr(self.tok, "chat_template", None):
            return text
        return self.tok.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )

    def ask(self, prompts: list[str]) -> list[str | None]:
        """The completion text of each prompt (None where the episode ended in an engine error)."""
        if not prompts:
            return []
        cfg = self.cfg
        engine = llm_teacher(cfg.teacher, cfg.teacher.urls, self.tok, cfg.temperature, 1.0)
        budget = Budget(max_actions=0, max_tokens=cfg.max_tokens, topk=1)
        eps = [
            start_episode(self._prompt(p), self.tok, "", tools="forbid", question={"id": f"prompt-{i}", "question": p})
            for i, p in enumerate(prompts)
        ]

        async def no_search(queries, k):
            raise RuntimeError("the question teacher never searches")

        async def go() -> None:
            slots = asyncio.Semaphore(cfg.concurrency)

            async def one(ep, seed):
                async with slots:
                    await run_episode(ep, engine, no_search, self.fmt, budget, seed)

            try:
                if isinstance(engine, Checked):
                    await engine.check()
                await asyncio.gather(*(one(ep, cfg.seed + i) for i, ep in enumerate(eps)))
            finally:
                await engine.close()

        asyncio.run(go())
        self.tokens.update(prompt=sum(e.prompt_tokens for e in eps), completion=sum(e.completion_tokens for e in eps))
        return [None if ep.finish_reason in ("error", "bad_response", "empty_answer") else ep.completion for ep in eps]

    def judge(self, batch: list[Candidate], corpus: Corpus) -> list[bool | None]:
        """``supported``: does the evidence state the gold answer to the question (yes, no, or None: no verdict)."""
        replies = self.ask(evidence_prompts(JUDGE, batch, corpus, self.fmt.answer_text("yes or no")))
        return [verdict_of(r, self.fmt) for r in replies]

    def solve(self, batch: list[Candidate], corpus: Corpus) -> list[str | None]:
        """``unique``: the teacher's answer to each question, given every evidence passage."""
        replies = self.ask(evidence_prompts(SOLVE, batch, corpus, self.fmt.answer_text("YOUR ANSWER")))
        return [
            None if r is None else (self.fmt.parse(r).answer or (extract_answer(r, self.fmt) or [None])[0])
            for r in replies
        ]


def verdict_of(reply: str | None, fmt: FormatPreset) -> bool | None:
    """A judge's yes (True) or no (False); None where the reply gives neither."""
    if reply is None:
        return None
    answer = normalize_answer(fmt.parse(reply).answer or (extract_answer(reply, fmt) or [""])[0])
    return {"yes": True, "no": False}.get(answer.split(" ")[0] if answer else "")


def provenance(generator: str, template: str, teacher: Teacher, seed: int) -> dict:
    return {
        "generator": generator,
        "templated": False,
        "prompt_hash": digest(template, teacher.model),
        "teacher": teacher.model,
        "seed": seed,
    }


def checked_question(reply: dict | None, golds: list[str], drops: Counter) -> str | None:
    """The reply's question, or None with the drop counted (no question, or its answer inside it)."""
    question = reply.get("question") if isinstance(reply, dict) else None
    if not isinstance(question, str) or not question.strip():
        drops["teacher_no_question"] += 1
        return None
    if any(normalize_answer(g) not in YES_NO and states(question, g) for g in golds if isinstance(g, str)):
        drops["teacher_answer_in_question"] += 1
        return None
    return " ".join(question.split())


def start(rows: list[dict], corpus: Corpus, drops: Counter) -> list[Candidate]:
    """Seeds with a decomposition, as candidates (their own hops)."""
    out = []
    for row, steps in decomposed(rows, corpus, drops):
        evidence = list(dict.fromkeys(s["evidence_id"] for s in steps))
        meta = {
            **{k: v for k, v in row["metadata"].items() if k not in ("verification", "difficulty", "solver")},
            "evidence_ids": evidence,
            "gold_paragraph_ids": evidence,
            "hops": len(evidence),
            "question_decomposition": steps,
            "type": row["metadata"].get("type") or "bridge",
            "seed_ids": [row["id"]],
            "components": [{"kind": "seed", "id": row["id"]}],
        }
        out.append(Candidate(row["id"], row["question"], list(row["golden_answers"]), meta))
    return out


def linked(c: Candidate, corpus: Corpus, searcher, k: int = 5) -> str | None:
    """A new document linked to the current answer (its page, or one that names it)."""
    entity = c.golden_answers[0]
    if entity.strip().lower() in YES_NO:
        entity = bare(corpus.title(c.evidence_ids[-1]))
    if not entity:
        return None
    for doc in searcher.search([entity], k)[0]:
        if doc.id not in c.evidence_ids and states(doc.contents, entity):
            return doc.id
    return None


def extend(rows: list[dict], corpus: Corpus, searcher, teacher: Teacher, cfg, drops: Counter) -> list[Candidate]:
    current = start(rows, corpus, drops)
    done: list[Candidate] = []
    markup = teacher.fmt.answer_text("JSON")
    while current:
        asks = []
        for c in current:
            new = linked(c, corpus, searcher)
            if new is None:
                drops["no_linked_passage"] += 1
                continue
            ids = c.evidence_ids + [new]
            asks.append(
                (
                    c,
                    new,
                    EXTEND.format(
                        passages=passages_block(corpus, ids),
                        question=c.question,
                        answer=c.golden_answers[0],
                        new=len(ids),
                        title=corpus.title(new),
                        answer_markup=markup,
                    ),
                )
            )
        replies = teacher.ask([p for _, _, p in asks])
        following = []
        for (c, new, _), reply in zip(asks, replies):
            parsed = read_reply(reply, teacher.fmt) if reply is not None else None
            answer = parsed.get("answer") if isinstance(parsed, dict) else None
            if parsed is not None and (not isinstance(answer, str) or not answer.strip()):
                drops["teacher_no_answer"] += 1
                continue
            question = checked_question(parsed, [answer] if parsed else [], drops)
            if question is None:
                continue
            kind, step_question = reply_fields(parsed, question, teacher.repairs)
            step = {
                "question": step_question.replace(c.golden_answers[0], f"#{len(c.steps)}"),
                "answer": answer.strip(),
                "evidence_id": new,
            }
            steps = c.steps + [step]
            evidence = c.evidence_ids + [new]
            meta = {
                **c.metadata,
                "evidence_ids": evidence,
                "gold_paragraph_ids": evidence,
                "hops": len(evidence),
                "question_decomposition": steps,
                "type": kind,
                "components": c.metadata["components"] + [{"kind": "passage", "id": new}],
                **provenance("extend", EXTEND, teacher, cfg.seed),
            }
            grown = Candidate(f"extend-{digest(question)}", question, [answer.strip()], meta, "synth-extend")
            (done if grown.metadata["hops"] >= cfg.hops else following).append(grown)
            if cfg.min_hops <= grown.metadata["hops"] < cfg.hops:
                done.append(grown)
        current = following
    return done


def reply_fields(parsed: dict, question: str, repairs: Counter) -> tuple[str, str]:
    """(type, step question) of an ``extend`` reply. A small model copies the template's placeholders
    (Qwen2.5-Coder-1.5B: ``"type": "bridge or comparison"``, ``"step": "the one-hop question passage [3] answers"``):
    such a type is bridge and such a step the new question itself, each counted in ``repairs``."""
    kind = parsed.get("type")
    if kind not in ("bridge", "comparison"):
        repairs["type_not_bridge_or_comparison"] += 1
        kind = "bridge"
    step = parsed.get("step")
    if not isinstance(step, str) or not step.strip() or STEP_PLACEHOLDER in step:
        repairs["step_missing_or_placeholder"] += 1
        step = question
    return kind, " ".join(str(step).split())


def obfuscate(rows: list[dict], corpus: Corpus, teacher: Teacher, cfg, drops: Counter) -> list[Candidate]:
    seeds = start(rows, corpus, drops)
    replies = teacher.ask(evidence_prompts(OBFUSCATE, seeds, corpus, teacher.fmt.answer_text("JSON")))
    out = []
    for c, reply in zip(seeds, replies):
        question = checked_question(
            read_reply(reply, teacher.fmt) if reply is not None else None, c.golden_answers, drops
        )
        if question is None:
            continue
        titles = [bare(corpus.title(i)) for i in c.evidence_ids]
        if any(t and states(c.question, t) and states(question, t) for t in titles):
            drops["entities_not_rewritten"] += 1
            continue
        meta = {**c.metadata, "obfuscated_from": c.question, **provenance("obfuscate", OBFUSCATE, teacher, cfg.seed)}
        out.append(Candidate(f"obfuscate-{digest(question)}", question, c.golden_answers, meta, "synth-obfuscate"))
    return out
