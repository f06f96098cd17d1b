"""Realistic trajectories without a teacher: real questions, real retrieved passages, real tags.

Used by the tests and the benchmark where no synthesis output exists. Each CoA row is what the agent
loop would record for a model that thinks, searches the real index (its observations are the exact
strings the environment writes), reasons over a retrieved passage and answers with the gold answer or
a wrong one; each CoT row thinks and answers without searching. Nothing here is scored: the answers
are chosen, so tests know what each metric must say.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

from coa.formats import get_format
from coa.prompts import PromptConfig, render_prompt, user_message
from coa.trajectory import Trajectory, segment

_OPENERS = ("I need to find out", "Let me work out", "The question asks", "First I should check")
_LINKS = ("According to the result,", "The passage says", "From this,", "This shows that")


def _pick(key: str, n: int) -> int:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % n


def _prompt(question: str, mode: str, fmt: str, tokenizer) -> str:
    cfg = PromptConfig(format=fmt, mode=mode)
    return render_prompt(tokenizer, question, cfg) if tokenizer is not None else user_message(question, cfg)


def _first_sentence(text: str) -> str:
    head = text.split(". ")[0].strip()
    return head if head.endswith(".") else head + "."


def coa_trajectory(q: dict, searcher, n_actions: int, answer: str, *, sample: int = 0, fmt: str = "autocoa",
                   tokenizer=None, k: int = 3) -> Trajectory:
    """A CoA trajectory with ``n_actions`` real searches (question first, then retrieved titles)."""
    f = get_format(fmt)
    opener = _OPENERS[_pick(q["id"] + str(sample), len(_OPENERS))]
    segs, text = [], f"{f.think_open}\n{opener} {q['question'][0].lower()}{q['question'][1:]}\n"
    query = q["question"].rstrip("?")
    for i in range(n_actions):
        docs = searcher.search([query], k)[0]
        segs.append(segment("model", text + f.search_call(query)))
        segs.append(segment("observation", f.observation(docs), query=query, doc_ids=[d.id for d in docs]))
        link = _LINKS[_pick(q["id"] + str(i), len(_LINKS))]
        text = f"{link} {_first_sentence(docs[0].text)}\n" if docs else "Nothing useful came back.\n"
        query = docs[min(i + 1, len(docs) - 1)].title if docs else query
    text += f"So the answer is {answer}.\n{f.think_close}\n{f.answer_text(answer)}"
    segs.append(segment("model", text))
    return Trajectory(question_id=q["id"], question=q["question"], golden_answers=q["golden_answers"],
                      dataset=q.get("dataset", ""), prompt=_prompt(q["question"], "coa", fmt, tokenizer),
                      segments=segs, mode="coa", sample=sample, format=fmt, answer=answer,
                      n_actions=n_actions, finish_reason="answer", teacher="fixture",
                      prompt_id=f"{fmt}/coa+demo", retriever=f"bm25:k={k}")


def cot_trajectory(q: dict, answer: str, *, sample: int = 0, fmt: str = "autocoa", tokenizer=None) -> Trajectory:
    f = get_format(fmt)
    opener = _OPENERS[_pick(q["id"] + "cot" + str(sample), len(_OPENERS))]
    text = (f"{f.think_open}\n{opener} {q['question'][0].lower()}{q['question'][1:]}\n"
            f"From what I remember, the answer is {answer}.\n{f.think_close}\n{f.answer_text(answer)}")
    return Trajectory(question_id=q["id"], question=q["question"], golden_answers=q["golden_answers"],
                      dataset=q.get("dataset", ""), prompt=_prompt(q["question"], "cot", fmt, tokenizer),
                      segments=[segment("model", text)], mode="cot", sample=sample, format=fmt, answer=answer,
                      finish_reason="answer", teacher="fixture", prompt_id=f"{fmt}/cot+demo")


def realistic_trajectories(questions: Sequence[dict], searcher, *, samples: int = 2, wrong_every: int = 3,
                           fmt: str = "autocoa", tokenizer=None) -> list[Trajectory]:
    """CoT and CoA rows for each question; every ``wrong_every``-th row answers another question's gold."""
    rows: list[Trajectory] = []
    for qi, q in enumerate(questions):
        for s in range(samples):
            for mode in ("cot", "coa"):
                wrong = _pick(f"{q['id']}{mode}{s}", wrong_every) == 0
                answer = questions[(qi + 1) % len(questions)]["golden_answers"][0] if wrong else q["golden_answers"][0]
                if mode == "cot":
                    rows.append(cot_trajectory(q, answer, sample=s, fmt=fmt, tokenizer=tokenizer))
                else:
                    n = _pick(f"{q['id']}n{s}", 4)  # 0..3 actions
                    rows.append(coa_trajectory(q, searcher, n, answer, sample=s, fmt=fmt, tokenizer=tokenizer))
    return rows


def contrasting_answer(decision: dict, kind: str) -> str:
    """A branch answer per decision row: force right / forbid wrong, the reverse, or both right (by id), so
    pairs come out in both directions and some points have no contrast."""
    gold, case = decision["golden_answers"][0], int(decision["id"], 16) % 3
    if case == 0:
        return gold if kind == "force" else "Nobody in particular"
    if case == 1:
        return gold if kind == "forbid" else "Nobody in particular"
    return gold


def branch_trajectories(decisions: Sequence[dict], searcher, answer_of, *, k: int = 3) -> list[Trajectory]:
    """Both branches of each decision row, as synthesis would write them: the prefix segments unchanged,
    then a new segment. ``answer_of(decision, kind)`` says what the branch answers (kind: forbid | force)."""
    rows = []
    for d in decisions:
        f = get_format(d["format"])
        prefix = [dict(s) for s in d["segments"]]
        for kind in ("forbid", "force"):
            answer = answer_of(d, kind)
            if kind == "force":
                query = d["question"].rstrip("?")
                docs = searcher.search([query], k)[0]
                cont = [segment("model", f.search_call(query)),
                        segment("observation", f.observation(docs), query=query, doc_ids=[x.id for x in docs]),
                        segment("model", f"{_LINKS[0]} {_first_sentence(docs[0].text) if docs else ''}\n"
                                         f"{f.think_close}\n{f.answer_text(answer)}")]
            else:
                cont = [segment("model", f"Without searching, I believe it is {answer}.\n{f.think_close}\n"
                                         f"{f.answer_text(answer)}")]
            rows.append(Trajectory(
                question_id=d["question_id"], question=d["question"], golden_answers=d["golden_answers"],
                dataset=d.get("dataset", ""), prompt=d["prompt"], segments=prefix + cont, mode="branch",
                branch_id=f"{d['parent_id']}:{d['decision_index']}:{kind}", parent_id=d["parent_id"],
                decision_index=d["decision_index"], format=d["format"], answer=answer,
                n_actions=sum(s["kind"] == "observation" for s in prefix + cont), finish_reason="answer",
                teacher="fixture"))
    return rows
