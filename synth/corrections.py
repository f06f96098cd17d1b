"""On-policy error mining's judgement: where a student's step differs from the teacher's in what matters, and the rows
that teach the teacher's step there (``synth.onpolicy`` runs both policies; this module only reads their rows).

A student trajectory's turns start at each of its steps: its first model segment after the prompt (and any prefill), and
after each observation. The teacher continued each turn's prefix to the end (a row in the trajectory schema, mode
``correction``, ``parent_id`` the student's row, ``decision_index`` the prefix length). At each turn ``judge`` compares the
two next steps against what the prefix's observations hold of the question's evidence (``synth.reference.evidence_of``):

  wrong_tool                              both call a tool, not the same one
  query_misses_evidence                   evidence is missing, both search, and the student's results hold none of it
  wrong_answer_with_gold_in_observations  the student answers wrong although the observations state the gold
  answer_while_evidence_missing           the student answers wrong while evidence is missing; the teacher calls a tool

A right answer is never an error; other turns are ``agree`` (the same action) or ``differs`` (another, unnamed difference).
At each named error it writes (a) a correction: the student's prefix token for token, its model segments turned into
``prefill`` (context, never trained) with their ids, then the teacher's continuation to the end (model segments trained,
observations masked in SFT-2); (b) a pair at that point (``PAIR_SCHEMA``): the teacher's step ≻ the student's step, the
prefix shared. Where the teacher's continuation ends wrong the point is dropped (``teacher_wrong``), as curation drops
wrong rows: a correction must not teach a wrong answer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from coa.formats import FormatPreset, completion_text
from coa.score import exact_match
from coa.trajectory import Trajectory, row_id
from synth.reference import Evidence, gold_stated, missing_evidence

REASONS = (
    "query_misses_evidence",
    "answer_while_evidence_missing",
    "wrong_answer_with_gold_in_observations",
    "wrong_tool",
)
OTHER_OUTCOMES = ("agree", "differs", "right_answer")  # turns that are no named error
DROPS = ("teacher_wrong", "teacher_no_step", "not_kept")  # named errors that give no rows (not_kept: not in `keep`)
ENDS_TURN = ("answer", "eos")  # finish reasons after which the student's last step ended the turn (EOS)


@dataclass(frozen=True)
class Step:
    """One step of a policy: its text up to the observation that answers its call, or to the end."""

    text: str
    tool: str | None = None  # the tool it called; None: it ended the trajectory
    query: str | None = None  # a search's query
    args: str | None = None  # the call's arguments (JSON)
    answer: str | None = None  # the answer of a final step (None: none parsed)
    observation: dict | None = None  # the observation that answered its call

    def describe(self) -> str:
        if self.tool is None:
            return f"answer: {self.answer}" if self.answer is not None else "end without answer"
        return f"{self.tool}: {self.query if self.query is not None else self.args}"


def turn_starts(segments: list[dict]) -> list[int]:
    """Prefix lengths at which the policy took a step: its first model segment at the start and after each observation.

    >>> turn_starts([{"kind": "prefill"}, {"kind": "model"}, {"kind": "observation"}, {"kind": "model"}])
    [1, 3]
    """
    starts, fresh = [], True
    for i, seg in enumerate(segments):
        if seg["kind"] == "observation":
            fresh = True
        elif seg["kind"] == "model" and fresh:
            starts.append(i)
            fresh = False
    return starts


def step_at(segments: list[dict], start: int, fmt: FormatPreset) -> Step:
    """The step that starts at segment ``start``."""
    end = next((i for i in range(start, len(segments)) if segments[i]["kind"] == "observation"), len(segments))
    text = completion_text(segments[start:end])
    if end < len(segments):
        obs = segments[end]
        return Step(text, obs.get("tool") or "search", obs.get("query"), obs.get("args"), observation=obs)
    return Step(text, answer=fmt.extract_answer(text))


def judge(student: Step, teacher: Step, golds: list[str], evidence: list[Evidence], prefix: list[dict], fmt) -> str:
    """The named error of the student's step after ``prefix`` (``REASONS``), else ``agree``, ``differs`` or
    ``right_answer``."""
    observations = [s for s in prefix if s["kind"] == "observation"]
    missing = missing_evidence(evidence, observations, fmt)
    if student.tool is None:
        if exact_match(student.answer, golds):
            return "right_answer"
        if gold_stated(golds, evidence, observations, fmt):
            return "wrong_answer_with_gold_in_observations"
        if missing and teacher.tool is not None:
            return "answer_while_evidence_missing"
    elif teacher.tool is not None:
        if student.tool != teacher.tool:
            return "wrong_tool"
        results = [student.observation] if student.observation else []  # none: the loop ended before running it
        unfound = missing_evidence(missing, results, fmt)
        if student.tool == "search" and missing and student.query != teacher.query and len(unfound) == len(missing):
            return "query_misses_evidence"
    same = (student.tool, student.query, student.args, student.answer) == (
        teacher.tool,
        teacher.query,
        teacher.args,
        teacher.answer,
    )
    return "agree" if same else "differs"


def direction(student: Step, teacher: Step) -> str:
    """The pair's direction (``PAIR_SCHEMA``): act (the teacher calls, the student answered), no_act (the reverse),
    tool (both call: the teacher's call is chosen), answer (both answer: the teacher's answer is chosen)."""
    if teacher.tool is not None:
        return "tool" if student.tool is not None else "act"
    return "no_act" if student.tool is not None else "answer"


def correction_row(student: Trajectory, teacher: Trajectory, start: int, reason: str) -> dict:
    """The student's prefix (its model segments as ``prefill``, ids kept) + the teacher's continuation, as a row."""
    prefix = [dict(s, kind="prefill") if s["kind"] == "model" else dict(s) for s in student.segments[:start]]
    return {**teacher.to_row(), "segments": prefix + list(teacher.segments[start:]), "reason": reason}


def pair_row(student: Trajectory, teacher: Trajectory, start: int, fmt: FormatPreset) -> dict:
    """The teacher's step ≻ the student's step after the student's prefix (``PAIR_SCHEMA``)."""
    prefix = [dict(s) for s in student.segments[:start]]
    mine, theirs = step_at(student.segments, start, fmt), step_at(teacher.segments, start, fmt)
    return {
        "id": row_id(student.question_id, "pair", 0, f"{student.id}:{start}:onpolicy"),
        "question_id": student.question_id,
        "question": student.question,
        "golden_answers": list(student.golden_answers),
        "format": student.format,
        "prompt": student.prompt + completion_text(prefix),
        "chat_prompt": student.prompt,
        "prefix": prefix,
        "chosen": theirs.text,
        "rejected": mine.text,
        "chosen_ends_turn": theirs.tool is None,
        "rejected_ends_turn": mine.tool is None and student.finish_reason in ENDS_TURN,
        "direction": direction(mine, theirs),
        "decision_index": start,
        "chosen_id": teacher.id,
        "rejected_id": student.id,
        "chosen_score": exact_match(teacher.answer, teacher.golden_answers),
        "rejected_score": exact_match(student.answer, student.golden_answers),
    }


def mine(
    students: list[Trajectory],
    teachers: dict[tuple[str, int], Trajectory],
    evidence: dict[str, list[Evidence]],
    fmt: FormatPreset,
    keep: tuple[str, ...] = REASONS,
) -> tuple[list[dict], list[dict], list[dict]]:
    """(corrections, pairs, decisions) of the student rows, given the teacher's row at each (student id, turn start)
    and each question's evidence. ``decisions``: one row per turn, with both steps, the outcome and any drop reason;
    a named error not in ``keep`` is counted and dropped (``not_kept``)."""
    corrections, pairs, decisions = [], [], []
    for student in students:
        golds = list(student.golden_answers)
        for turn, start in enumerate(turn_starts(student.segments)):
            teacher = teachers.get((student.id, start))
            mine_step = step_at(student.segments, start, fmt)
            theirs = step_at(teacher.segments, start, fmt) if teacher is not None else Step("")
            outcome = judge(mine_step, theirs, golds, evidence[student.question_id], student.segments[:start], fmt)
            dropped = ""
            if outcome in REASONS:
                if outcome not in keep:
                    dropped = "not_kept"
                elif teacher is None or not theirs.text:
                    dropped = "teacher_no_step"
                elif not exact_match(teacher.answer, golds):
                    dropped = "teacher_wrong"
                else:
                    corrections.append(correction_row(student, teacher, start, outcome))
                    pairs.append(pair_row(student, teacher, start, fmt))
            decisions.append(
                {
                    "student_id": student.id,
                    "question_id": student.question_id,
                    "turn": turn,
                    "decision_index": start,
                    "student_step": mine_step.describe(),
                    "teacher_step": theirs.describe() if theirs.text else "",
                    "outcome": outcome,
                    "dropped": dropped,
                    "correction_id": corrections[-1]["id"] if outcome in REASONS and not dropped else "",
                    "pair_id": pairs[-1]["id"] if outcome in REASONS and not dropped else "",
                }
            )
    return corrections, pairs, decisions


def counts(decisions: list[dict]) -> dict:
    """Turns by outcome, named errors by reason (found, written, dropped by why)."""
    named = [d for d in decisions if d["outcome"] in REASONS]
    return {
        "turns": len(decisions),
        "outcomes": dict(sorted(Counter(d["outcome"] for d in decisions).items())),
        "errors": {
            reason: {
                "found": sum(d["outcome"] == reason for d in named),
                "written": sum(d["outcome"] == reason and not d["dropped"] for d in named),
                "dropped": dict(
                    sorted(Counter(d["dropped"] for d in named if d["outcome"] == reason and d["dropped"]).items())
                ),
            }
            for reason in REASONS
        },
        "dropped": dict(sorted(Counter(d["dropped"] for d in named if d["dropped"]).items())),
        "corrections": sum(not d["dropped"] for d in named),
    }
