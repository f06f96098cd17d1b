"""``llm_judge``: an LLM says whether a predicted answer answers the question, beside the string metrics.

Strict EM under-counts right answers in other words ("D. Ross Lederman" for gold "David Ross Lederman"), most of
all for small students; peers (ASearcher, rLLM, Agent Distillation) report an LLM judge beside it. The judge
sees the question, the gold answers and the prediction in one fixed prompt (``JUDGE_PROMPT``; its hash is in
every cache key), is asked greedily for at most a few tokens, and its verdict is parsed strictly
(``parse_verdict``): the reply, without case, surrounding space and closing punctuation, must be exactly
``yes`` (1.0) or ``no`` (0.0); anything else is no verdict (None, counted as ``no_verdict``; scores that
average it count it as 0). Some scores settle without asking (``settled``): a missing or empty prediction is 0, an
exact match (EM 1) is 1, a yes/no question is settled by a leading yes or no, and a prediction that only repeats
words of the question without matching a gold answer, or (``judge.overlap``) shares too few words with every gold
answer, is 0: the judge decides the rest of what EM calls wrong. A 1.5B judge said yes to "Nevada county" for "The
22nd AVN Awards took place in what Nevada county?", to "Virgilia" for a yes/no question, to "and", to "the House of
Windsor" for the Mountbatten family, and no to "No" for gold "no" (docs/experiments/real_llm.md, its hand check).

Verdicts are cached per (judge model, prompt, question, prediction) in memory and, with ``judge.cache``, in a
JSONL file that later runs read back: the same answer is never judged twice (RL samples repeat answers).

    judge = LLMJudge(JudgeConfig(base_url="http://127.0.0.1:8171/v1", model="Qwen2.5-Coder-1.5B-Instruct"))
    judge.scores([("Who wrote X?", ["Ann Lee"], "Lee")])   # [1.0] or [0.0] or [None]

Any OpenAI-compatible chat server (``/v1/chat/completions``) through ``coa.engines.pool.Endpoints``: the same
retries, fail-over and error mapping as the chat teacher. ``evaluate.run judge.base_url=…`` reports it
(``llm_judge`` in metrics.json and per question); ``rl1/rl2.reward_metric=llm_judge`` rewards with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from coa.engines.pool import Endpoints, first_choice
from coa.score import exact_match, normalize_answer

NAME = "llm_judge"
# fixed. Chosen on the 58 answers a first, few-shot wording judged right and EM wrong, hand-labelled (18 right): the
# few-shot prompts said yes to 43-58 of them, this plain one to 20 (13 right); asking "is it different?" instead
# said no to almost every right one (docs/experiments/real_llm.md)
JUDGE_PROMPT = """Question: {question}
Gold answer: {golds}
Predicted answer: {prediction}

Is the predicted answer the same as the gold answer? Other wording, abbreviations and extra detail are fine; naming \
a different person, thing, place, number or date is wrong. Reply with one word: yes or no."""
PROMPT_HASH = hashlib.sha1(JUDGE_PROMPT.encode()).hexdigest()[:12]
VERDICTS = {"yes": 1.0, "no": 0.0}
YES_NO = {"yes", "no"}
FILLER = frozenset("and or of in on at to for with by from as is are was were be it its".split())  # no answer alone
CLOSING = re.compile(r"[\s.!。]+$")


@dataclass
class JudgeConfig:
    """The answer judge (``llm_judge``): a chat model behind an OpenAI-compatible server."""

    base_url: str = field(
        default="", metadata={"help": "OpenAI-compatible base URL (…/v1) of the judge; empty = no llm_judge"}
    )
    model: str = field(default="Qwen2.5-Coder-1.5B-Instruct", metadata={"help": "model name at that server"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "environment variable holding the key"})
    timeout_s: float = field(default=120.0, metadata={"help": "per-request timeout (> 0)"})
    retries: int = field(default=2, metadata={"help": "retries of timeouts, connection errors, 429 and 5xx (>= 0)"})
    concurrency: int = field(default=16, metadata={"help": "judgements in flight (>= 1)"})
    cache: str = field(
        default="", metadata={"help": "JSONL file of verdicts, read back and appended to; empty = in memory only"}
    )
    overlap: float | None = field(
        default=0.5,
        metadata={
            "help": "ask the judge only when a gold answer and the prediction share more than this share of either's "
            "content words, else 0 without asking (the 1.5B judge said yes to other names); null: always ask, for a "
            "judge that reads abbreviations and synonyms"
        },
    )

    def __post_init__(self) -> None:
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge.base_url: {self.base_url!r} is not an http(s) URL, e.g. http://127.0.0.1:8171/v1")
        if self.overlap is not None and not 0 <= self.overlap < 1:
            raise ValueError(f"judge.overlap: must be in [0, 1) or null; got {self.overlap}")
        if self.timeout_s <= 0 or self.retries < 0 or self.concurrency < 1:
            raise ValueError(
                f"judge: timeout_s must be > 0, retries >= 0 and concurrency >= 1; got {self.timeout_s}, "
                f"{self.retries}, {self.concurrency}"
            )


def answer_words(text: str) -> list[str]:
    """SQuAD-normalised words, hyphens splitting words ("Buzzati-Traverso" shares "buzzati" with "Dino Buzzati")."""
    return normalize_answer(re.sub(r"[-‐–—]", " ", text)).split()


def content_overlap(words: Sequence[str], gold: Sequence[str]) -> float:
    """The larger of the shares of the prediction's and of the gold's content words that the other holds."""
    mine, theirs = set(words) - FILLER, set(gold) - FILLER
    shared = len(mine & theirs)
    return max(shared / len(mine), shared / len(theirs)) if mine and theirs else 0.0


def judge_prompt(question: str, golds: Sequence[str], prediction: str) -> str:
    return JUDGE_PROMPT.format(question=question, golds=" | ".join(golds), prediction=prediction)


def parse_verdict(reply: str | None) -> float | None:
    """1.0 for exactly "yes", 0.0 for exactly "no" (any case, closing punctuation and space aside), else None.

    >>> parse_verdict("Yes."), parse_verdict(" no"), parse_verdict("Yes, it is."), parse_verdict("No answer")
    (1.0, 0.0, None, None)
    """
    return VERDICTS.get(CLOSING.sub("", reply or "").strip().lower())


class LLMJudge:
    """Verdicts of one judge model, cached per (model, prompt, question, prediction)."""

    def __init__(self, cfg: JudgeConfig):
        if not cfg.base_url:
            raise ValueError("llm_judge needs judge.base_url (an OpenAI-compatible chat server)")
        self.cfg = cfg
        self.cache: dict[str, float | None] = {}
        self.asked = self.cached = self.no_verdict = 0
        if cfg.cache and Path(cfg.cache).is_file():
            for number, line in enumerate(Path(cfg.cache).read_text().splitlines(), start=1):
                try:
                    entry = json.loads(line)
                    self.cache[entry["key"]] = entry["verdict"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(f"{cfg.cache}: line {number} is not a verdict written by llm_judge") from None

    def key(self, question: str, prediction: str) -> str:
        text = "\x1f".join([self.cfg.model, PROMPT_HASH, question.strip(), prediction.strip()])
        return hashlib.sha1(text.encode()).hexdigest()

    def scores(self, items: Sequence[tuple[str, Sequence[str], str | None]]) -> list[float | None]:
        """The verdict of each (question, gold answers, prediction): 1.0, 0.0, or None (no verdict)."""
        return asyncio.run(self.ascores(items))

    async def ascores(self, items: Sequence[tuple[str, Sequence[str], str | None]]) -> list[float | None]:
        todo = {}
        for question, golds, prediction in items:
            if self.settled(question, golds, prediction, self.cfg.overlap) is None:
                key = self.key(question, prediction)
                if key in self.cache:
                    self.cached += 1
                else:
                    todo.setdefault(key, judge_prompt(question, list(golds), prediction.strip()))
        if todo:
            await self._ask(todo)
        return [
            self.cache[self.key(q, p)] if (done := self.settled(q, g, p, self.cfg.overlap)) is None else done
            for q, g, p in items
        ]

    @staticmethod
    def settled(
        question: str, golds: Sequence[str], prediction: str | None, overlap: float | None = 0.5
    ) -> float | None:
        """The score without asking (None = ask the judge): 0 for no prediction or one without a content word, 1 for
        an exact match; for a yes/no gold, the prediction's first word when it is yes or no, and 0 for at most three
        words, all of the question (a thing the question names); for any other gold, 0 for a bare yes or no, and 0
        for a prediction that only repeats the question's words with at most half of them in any gold answer
        ("Nevada county" for "Clark County"; "D. Ross Lederman" for "David Ross Lederman" is asked); with
        ``overlap``, 0 for a prediction that shares with every gold answer at most that share of the prediction's
        content words and of the gold's ("the House of Windsor" for "Mountbatten family", "Rutton University" for
        "Rutgers University")."""
        if not prediction or not prediction.strip():
            return 0.0
        if exact_match(prediction, list(golds)):
            return 1.0
        words = answer_words(prediction)
        if not set(words) - FILLER:
            return 0.0
        in_question = set(words) <= set(answer_words(question))
        gold_words = [answer_words(gold) for gold in golds]
        if gold_words and all(gold in (["yes"], ["no"]) for gold in gold_words):
            if words[0] in YES_NO:
                return float([words[0]] in gold_words)
            return 0.0 if in_question and len(words) <= 3 else None  # a thing the question names, not yes or no
        if words in (["yes"], ["no"]):
            return 0.0
        shared = max((len(set(words) & set(gold)) for gold in gold_words), default=0)
        if in_question and shared <= len(set(words)) / 2:
            return 0.0
        if overlap is not None and max(content_overlap(words, gold) for gold in gold_words) <= overlap:
            return 0.0
        return None

    async def _ask(self, prompts: dict[str, str]) -> None:
        cfg = self.cfg
        endpoints = Endpoints(cfg.base_url, cfg.model, cfg.api_key_env, cfg.timeout_s, cfg.retries)
        slots = asyncio.Semaphore(cfg.concurrency)

        async def one(key: str, prompt: str) -> None:
            async with slots:
                reply = await endpoints.call(
                    lambda client: client.chat.completions.create(
                        model=cfg.model,
                        messages=[{"role": "user", "content": prompt}],
                        temperature=0.0,
                        max_tokens=4,
                    )
                )
            verdict = parse_verdict(first_choice(reply).message.content)
            self.asked += 1
            self.no_verdict += verdict is None
            self.cache[key] = verdict
            if cfg.cache:
                with open(cfg.cache, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"key": key, "verdict": verdict}) + "\n")

        try:
            await asyncio.gather(*(one(k, p) for k, p in prompts.items()))
        finally:
            await endpoints.close()

    def stats(self) -> dict:
        return {"asked": self.asked, "cached": self.cached, "no_verdict": self.no_verdict, "prompt_hash": PROMPT_HASH}
