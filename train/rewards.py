"""GRPO rewards: small pure functions over whole trajectories (TRL reward-function signature).

The rollout passes ``trajectory``: the full completion text as the policy saw it (prefill, model text
and inserted observations); TRL's ``completions`` (decoded ids, prefill excluded) is the fallback.

* ``correctness``  answer correctness of the answer the format preset extracts: ``em`` (binary, the
  default), ``f1``, ``cover_em``, or ``autocoa_lenient`` (the AutoCoA repo's own scorer, on the whole
  text: 0 without ``</think>`` or with a search after it); or ``llm_judge`` (``judged_correctness``: an LLM's
  verdict on the question, the gold answers and the extracted answer, ``coa.judge``; no verdict scores 0).
* ``format_term``  0 for a well-formed trajectory (``FormatPreset.parse``: closed tags, an answer, no
  search after the answer), ``-penalty`` otherwise.
* ``failed_calls_term``  ``-penalty`` per tool call whose result was an error (refused: bad JSON, an unknown
  tool, bad arguments, a spent budget; or failed: python raised or hit a limit, open found nothing); off (0)
  by default.
* ``evidence_term``  ``weight`` times the share of the question's evidence passages (``coa.questions.
  evidence_ids``) that the environment returned to the rollout (``coa.trajectory.retrieved_ids``): a reward for
  the search that finds the next hop, whatever the answer; off (0) by default. A question without evidence
  annotations scores 0 on every rollout, which leaves GRPO's group advantages unchanged; so does RL-1, whose
  simulated environment returns no passages. With ``gate`` (``evidence_gate: answer``) the term is multiplied by
  the rollout's answer correctness: it pays for evidence that led to a right answer, not for searching as such.
* ``echo_term``  ``-penalty`` where the answer is, normalised, the query of one of the rollout's own searches and the
  question does not name it: the search for the bridge entity given back as the answer, one hop short (the
  student's most frequent answer after two searches, ``bench/reading_errors.py``), times one minus the answer term
  (a right answer is not penalised); off (0) by default. An answer the question names (one of two compared
  entities) is not penalised either.

The paper's reward is binary correctness where a malformed response scores 0: ``em`` + a format
penalty keeps that order (correct 1 > wrong 0 > malformed -1 by default); ``reward_metric=
autocoa_lenient format_penalty=0`` reproduces their reward exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from coa.formats import get_format
from coa.judge import NAME as LLM_JUDGE
from coa.judge import JudgeConfig, LLMJudge
from coa.score import autocoa_lenient, cover_exact_match, exact_match, f1, normalize_answer
from coa.trajectory import evidence_recall

_ANSWER_METRICS = {"em": exact_match, "f1": f1, "cover_em": cover_exact_match}
CORRECTNESS = 0  # make_rewards puts the answer term first: its column among a run's rewards
EVIDENCE_GATES = ("none", "answer")  # what evidence_term is multiplied by: 1, or the answer term


def _texts(completions: list, trajectory: list | None) -> list[str]:
    return list(trajectory) if trajectory is not None else [str(c) for c in completions]


def correctness(
    completions: list,
    golden_answers: list,
    trajectory: list | None = None,
    metric: str = "em",
    format: str = "autocoa",
    **kwargs,
) -> list[float]:
    """Answer correctness per completion.

    >>> correctness([""], [["Paris"]], trajectory=["<think>\\nFrance.\\n</think>\\n\\n\\\\boxed{Paris}"])
    [1.0]
    """
    texts = _texts(completions, trajectory)
    if metric == "autocoa_lenient":
        return [autocoa_lenient(t, g) for t, g in zip(texts, golden_answers)]
    fmt = get_format(format)
    score = _ANSWER_METRICS[metric]
    return [score(fmt.extract_answer(t), g) for t, g in zip(texts, golden_answers)]


def judged_correctness(
    completions: list,
    golden_answers: list,
    question: list,
    judge: LLMJudge,
    trajectory: list | None = None,
    format: str = "autocoa",
    **kwargs,
) -> list[float]:
    """``llm_judge``: the judge's verdict on each extracted answer (1 yes, 0 no or no verdict); ``question`` is the
    dataset's column of question texts."""
    fmt = get_format(format)
    answers = [fmt.extract_answer(t) for t in _texts(completions, trajectory)]
    return [v or 0.0 for v in judge.scores(list(zip(question, golden_answers, answers)))]


def format_term(
    completions: list, trajectory: list | None = None, penalty: float = 1.0, format: str = "autocoa", **kwargs
) -> list[float]:
    """0 if the trajectory parses as well-formed, else ``-penalty``.

    >>> format_term([""], trajectory=["<think>\\nno answer yet"])
    [-1.0]
    """
    fmt = get_format(format)
    return [0.0 if fmt.parse(t).well_formed else -penalty for t in _texts(completions, trajectory)]


def failed_calls_term(
    completions: list, failed_calls: list | None = None, penalty: float = 0.5, **kwargs
) -> list[float]:
    """``-penalty`` per call that came back with an error (the rollout's ``failed_calls``).

    >>> failed_calls_term(["", ""], failed_calls=[0, 2], penalty=0.25)
    [0.0, -0.5]
    """
    return [-penalty * n if n else 0.0 for n in (failed_calls if failed_calls is not None else [0] * len(completions))]


def evidence_term(
    completions: list,
    evidence_ids: list | None = None,
    retrieved_ids: list | None = None,
    weight: float = 0.5,
    gate: Callable[..., list[float]] | None = None,
    **kwargs,
) -> list[float]:
    """``weight`` x the share of each question's evidence ids among its rollout's retrieved ids, times ``gate``'s
    value per rollout where given (a correctness function, called with the same arguments).

    >>> evidence_term(["", "", ""], evidence_ids=[["a", "b"], ["a", "b"], []], retrieved_ids=[["b", "x"], ["a", "b"], ["x"]])
    [0.25, 0.5, 0.0]
    """
    if evidence_ids is None or retrieved_ids is None:
        return [0.0] * len(completions)
    shares = [evidence_recall(gold, got) or 0.0 for gold, got in zip(evidence_ids, retrieved_ids)]
    gates = gate(completions, **kwargs) if gate is not None else [1.0] * len(shares)
    return [weight * share * g for share, g in zip(shares, gates)]


def echo_term(
    completions: list,
    question: list | None = None,
    trajectory: list | None = None,
    penalty: float = 0.5,
    format: str = "autocoa",
    answer: Callable[..., list[float]] | None = None,
    **kwargs,
) -> list[float]:
    """``-penalty`` per rollout whose answer repeats one of its own search queries that its ``question`` (the
    dataset's column of question texts) does not name, times ``1 - answer``'s value where given (a correctness
    function, called with the same arguments): a right answer that was also searched for is not penalised.

    >>> echo_term(["", "", ""], question=["Who founded the studio that made Up?"] * 2 + ["Is Up older than Cars?"],
    ...           trajectory=["<search>Up</search><search>Pixar</search><answer>Pixar</answer>",
    ...                       "<search>Up</search><search>Pixar</search><answer>Steve Jobs</answer>",
    ...                       "<search>Up</search><search>Cars</search><answer>Cars</answer>"], format="search_r1")
    [-0.5, 0.0, 0.0]
    """
    fmt = get_format(format)
    texts = _texts(completions, trajectory)
    questions = question if question is not None else [""] * len(texts)
    right = answer(completions, trajectory=trajectory, question=question, **kwargs) if answer else [0.0] * len(texts)
    values = []
    for text, asked, score in zip(texts, questions, right):
        parsed = fmt.parse(text)
        said = normalize_answer(parsed.answer)
        named = f" {said} " in f" {normalize_answer(asked)} "
        echoes = bool(said) and not named and said in {normalize_answer(q) for q in parsed.search_queries}
        values.append(-penalty * (1.0 - score) if echoes else 0.0)
    return values


def reward_terms(
    reward_funcs: list,
    texts: list[str],
    golds: list,
    failed: list[int] | None = None,
    evidence: list | None = None,
    retrieved: list | None = None,
    questions: list | None = None,
) -> list[list[float]]:
    """Each reward function's values over rollouts scored outside training (probes), with the keyword arguments
    GRPO passes: ``failed`` calls, the questions' ``evidence`` ids, each rollout's ``retrieved`` ids and its
    question's text (``questions``)."""
    failed = list(failed) if failed is not None else [0] * len(texts)
    return [
        f(
            completions=texts,
            golden_answers=golds,
            trajectory=texts,
            failed_calls=failed,
            evidence_ids=evidence,
            retrieved_ids=retrieved,
            question=questions,
        )
        for f in reward_funcs
    ]


def make_rewards(
    metric: str,
    penalty: float,
    format: str,
    failed_call_penalty: float = 0.0,
    judge: JudgeConfig | None = None,
    evidence_reward: float = 0.0,
    evidence_gate: str = "none",
    echo_penalty: float = 0.0,
) -> list:
    """The reward functions of a run (TRL logs each under its function name); ``judge`` for ``llm_judge``;
    ``evidence_gate``: ``none`` or ``answer`` (``evidence_term`` times the answer term)."""
    if metric == LLM_JUDGE:
        funcs = [partial(judged_correctness, judge=LLMJudge(judge or JudgeConfig()), format=format)]
    else:
        funcs = [partial(correctness, metric=metric, format=format)]
    if penalty:
        funcs.append(partial(format_term, penalty=penalty, format=format))
    if failed_call_penalty:
        funcs.append(partial(failed_calls_term, penalty=failed_call_penalty))
    if evidence_reward:
        if evidence_gate not in EVIDENCE_GATES:
            raise ValueError(f"evidence_gate must be one of {', '.join(EVIDENCE_GATES)}; got {evidence_gate!r}")
        gate = funcs[CORRECTNESS] if evidence_gate == "answer" else None
        funcs.append(partial(evidence_term, weight=evidence_reward, gate=gate))
    if echo_penalty:
        funcs.append(partial(echo_term, penalty=echo_penalty, format=format, answer=funcs[CORRECTNESS]))
    return funcs
