"""``python -m synth.onpolicy``: on-policy error mining (DAgger), the teacher's corrections at the student's own states.

    python -m synth.onpolicy policy=runs/train/sft2 limit=50 out=runs/onpolicy/try     # one round by hand
    python -m synth.onpolicy round=round1          # a round of params.yaml's onpolicy_rounds (dvc stage onpolicy@round1)
    python -m synth.onpolicy policy=runs/train/sft2 teacher.base_url=http://gpu-box:8000/v1 teacher.model=M  # LLM teacher

1. The student (``policy``, in-process: ``engine=vllm`` or ``hf``) answers the training questions with real search:
   ``out/student`` (trajectory shards).
2. At each of its turns the teacher continues exactly that prefix to the end: ``out/teacher`` (one row per turn, mode
   ``correction``). The reference teacher reads the prefix's observations and writes its next step
   (``ReferencePolicy.next_step``); an LLM teacher continues the assistant message through its completions or chat engine,
   as it continues a branch (``teacher.*``, ``serve.*`` as in ``synth.run``).
3. ``synth.corrections`` names where the two differ in what matters and writes ``corrections.parquet`` (trajectory
   schema: SFT-2), ``pairs.parquet`` (``PAIR_SCHEMA``: SFT-1), ``decisions.parquet`` (every turn: both steps, the outcome,
   any drop reason) and ``metrics.json`` (the student's EM and searches, outcomes and errors by reason).

Steps 1 and 2 write shard folders as ``synth.run`` does (one writer per folder, fingerprinted, rows keyed): after a kill
the same command resumes where they stopped; step 3 is recomputed from them. Exit codes: 0 done, 2 bad input, 3 the
engine stopped (finished rows kept; re-run to resume). Rounds as DVC stages: docs/how-to/onpolicy.md.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from coa import paths
from coa.config import cli
from coa.engines import EngineFatal, EngineUnavailable
from coa.environment import SearchEnvConfig
from coa.errors import entry_point
from coa.fingerprint import claim_rows, index_identity, model_identity
from coa.formats import FORMAT, get_format
from coa.io import atomic_output, write_json
from coa.model import load_policy
from coa.prompts import PromptConfig
from coa.questions import load_questions
from coa.score import exact_match, f1
from coa.trajectory import PAIR_SCHEMA, TRAJECTORY_SCHEMA, Trajectory, read_table, to_table
from synth.config import SynthConfig, SynthTeacherConfig
from synth.corrections import REASONS, counts, mine, turn_starts
from synth.jobs import Job, question_jobs, teacher_prompt
from synth.reference import Passages, ReferenceConfig, evidence_of
from synth.run import fingerprint as teacher_fingerprint
from synth.run import EXIT_INTERRUPTED, generate, what_is_kept
from synth.serve import VLLMServerConfig
from synth.shards import ShardWriter, done_ids
from synth.synthesize import RunStats

ENGINES = ("vllm", "hf")


@dataclass
class OnPolicyConfig:
    """Settings of ``python -m synth.onpolicy`` (``params.yaml`` section ``onpolicy``).

    what     round, rounds, policy, questions, offset, limit, n, reasons
    student  engine, temperature, top_p, seed (format, prompt and search: the top-level ones)
    teacher  teacher.*, reference.*, serve.*, teacher_temperature
    running  out, overwrite, concurrency, rows_per_shard, flush_s, progress
    """

    round: str = field(default="", metadata={"help": "a key of `rounds`: its policy, and out=runs/onpolicy/<round>"})
    rounds: dict = field(
        default_factory=dict,
        metadata={
            "help": "the DAgger rounds, {name: {policy: CHECKPOINT}}: params.yaml's top-level `onpolicy_rounds` (dvc.yaml "
            "makes stages onpolicy@NAME and onpolicy_train@NAME of each); {} = off, the default run has none",
            "shared": "onpolicy_rounds",  # top level: adding a round changes no earlier round's params
        },
    )
    policy: str = field(default="", metadata={"help": "the student checkpoint folder; empty = rounds[round].policy"})
    questions: str = field(
        default=f"{paths.curate('sets')}/rl_questions.jsonl",
        metadata={"help": "training questions with evidence annotations (the reference teacher reads them)"},
    )
    offset: int = field(default=0, metadata={"help": "skip the first N questions"})
    limit: int = field(default=200, metadata={"help": "at most N questions; 0 = all"})
    n: int = field(default=1, metadata={"help": "student rollouts per question"})
    reasons: list[str] = field(
        default_factory=lambda: list(REASONS),
        metadata={"help": "the named errors that become corrections and pairs; the others are counted (not_kept)"},
    )

    engine: str = field(default="vllm", metadata={"help": "the student's in-process engine: vllm | hf"})
    temperature: float = field(default=0.0, metadata={"help": "the student's sampling temperature (0: greedy)"})
    top_p: float = field(default=1.0, metadata={"help": "the student's nucleus sampling"})
    seed: int = field(default=0, metadata={"help": "base seed of the student's and the teacher's rows"})

    format: str = field(default=FORMAT, metadata={"help": "format preset: autocoa | search_r1"})
    prompt: PromptConfig = field(default_factory=PromptConfig, metadata={"help": "the student's prompt (as synth's)"})
    search: SearchEnvConfig = field(
        default_factory=SearchEnvConfig, metadata={"help": "the search environment: params.yaml's top-level `search`"}
    )

    teacher: SynthTeacherConfig = field(
        default_factory=SynthTeacherConfig,
        metadata={"help": "the teacher, as synth's: kind=reference, or kind=llm (an OpenAI-compatible server)"},
    )
    reference: ReferenceConfig = field(default_factory=ReferenceConfig, metadata={"help": "the reference teacher"})
    serve: VLLMServerConfig = field(
        default_factory=VLLMServerConfig, metadata={"help": "the embedded LLM teacher (teacher.kind=llm, no base_url)"}
    )
    teacher_temperature: float = field(default=0.7, metadata={"help": "an LLM teacher's sampling temperature"})

    out: str = field(default="", metadata={"help": "output folder; empty = runs/onpolicy/<round>"})
    overwrite: bool = field(
        default=False, metadata={"help": "replace rows in `out` made by another policy, teacher or setting"}
    )
    concurrency: int = field(default=16, metadata={"help": "trajectories in flight"})
    rows_per_shard: int = field(default=64, metadata={"help": "write a shard after this many finished rows"})
    flush_s: float = field(default=30.0, metadata={"help": "... or after this many seconds, whichever first"})
    progress: bool = field(default=True, metadata={"help": "show progress bars (stderr)"})

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        for name, spec in self.rounds.items():
            if not isinstance(spec, dict) or not spec.get("policy"):
                raise ValueError(f"rounds.{name}: expected {{policy: CHECKPOINT}}, got {spec!r}")
        if unknown := sorted(set(self.reasons) - set(REASONS)):
            raise ValueError(f"reasons: unknown {', '.join(unknown)} (known: {', '.join(REASONS)})")
        if self.round and self.round not in self.rounds:
            known = ", ".join(self.rounds) or "none: onpolicy_rounds is {}"
            raise ValueError(f"round={self.round!r} is not a key of rounds ({known})")
        if self.round and not self.policy:
            self.policy = self.rounds[self.round]["policy"]
        # synth's checks (n, limit, offset, concurrency, temperatures, tools) on the two synth configs it runs
        self.synth_config("student", self.temperature)
        self.synth_config("teacher", self.teacher_temperature)

    @property
    def out_dir(self) -> Path:
        if not self.out and not self.round:
            raise ValueError("onpolicy: give out=FOLDER (or round=NAME, which writes runs/onpolicy/NAME)")
        return Path(self.out or paths.onpolicy(self.round))

    def synth_config(self, role: str, temperature: float) -> SynthConfig:
        """The ``synth.run`` settings of one role's rows (``student`` or ``teacher``; ``write_rows`` names their folder):
        prompts rendered with the student's tokenizer, the same search environment."""
        return SynthConfig(
            mode="coa",
            questions=self.questions,
            offset=self.offset,
            limit=self.limit,
            n=self.n,
            search=self.search,
            format=self.format,
            prompt=self.prompt,
            temperature=temperature,
            top_p=self.top_p if role == "student" else 1.0,
            seed=self.seed,
            teacher=self.teacher,
            reference=self.reference,
            serve=self.serve,
            tokenizer=self.policy,
            concurrency=self.concurrency,
            rows_per_shard=self.rows_per_shard,
            flush_s=self.flush_s,
            progress=self.progress,
        )


def student_fingerprint(cfg: OnPolicyConfig) -> dict:
    """What makes the student's rows: its weights, engine, sampling, prompt and environment."""
    return {
        "writer": "synth.onpolicy",
        "role": "student",
        "policy": model_identity(cfg.policy),
        "engine": cfg.engine,
        "sampling": {"temperature": cfg.temperature, "top_p": cfg.top_p, "seed": cfg.seed},
        "format": cfg.format,
        "prompt": asdict(cfg.synth_config("student", cfg.temperature).prompt),
        "environment": {**asdict(cfg.search), **index_identity(cfg.search.index)},
    }


def write_rows(
    out: Path,
    synth_cfg: SynthConfig,
    jobs: list[Job],
    fingerprint: dict,
    overwrite: bool,
    engine: Callable | None = None,
) -> RunStats:
    """Run the jobs not yet in ``out`` (resuming; ``synth.run``'s shard writer) on ``engine()`` (None: the teacher of
    ``synth_cfg``) and return their stats. The engine starts only when a job is left."""
    claim_rows(out, fingerprint, "onpolicy", overwrite)
    with ShardWriter(out, synth_cfg.rows_per_shard, synth_cfg.flush_s, fingerprint) as writer:
        done = done_ids(out)  # read holding the lock: no other run adds or drops rows from here on
        todo = [j for j in jobs if j.id not in done]
        stats = generate(synth_cfg, todo, writer, engine and engine()) if todo else RunStats()
    if stats.fatal:
        raise EngineFatal(stats.stopped)
    if stats.stopped:  # the finished rows are kept: a re-run resumes
        raise EngineUnavailable(stats.stopped)
    return stats


def rows_of(folder: Path, jobs: list[Job]) -> list[Trajectory]:
    """The rows of ``jobs`` in ``folder``, in job order."""
    table = read_table(folder) if folder.exists() else TRAJECTORY_SCHEMA.empty_table()
    by_id = {
        r["id"]: r for r in table.filter(pc.is_in(table["id"], pa.array([j.id for j in jobs], pa.string()))).to_pylist()
    }
    return [Trajectory.from_row(by_id[j.id]) for j in jobs if j.id in by_id]


def teacher_jobs(students: list[Trajectory], questions: dict[str, dict], teacher_kind: str) -> list[Job]:
    """One job per student turn: the teacher continues the student's prefix up to that turn."""
    jobs = []
    for row in students:
        pid, phash = teacher_prompt(row.prompt_id, row.prompt_hash, teacher_kind)
        for start in turn_starts(row.segments):
            jobs.append(
                Job(
                    questions[row.question_id],
                    "correction",
                    row.sample,
                    row.prompt,
                    "real",
                    prefix=list(row.segments[:start]),
                    branch_id=f"{row.id}:{start}",
                    parent_id=row.id,
                    decision_index=start,
                    prompt_id=pid,
                    prompt_hash=phash,
                )
            )
    return jobs


def student_summary(students: list[Trajectory]) -> dict:
    """The student's EM and searches: overall, and on its rows with two or more searches."""
    multi = [t for t in students if t.n_actions >= 2]

    def em(rows: list[Trajectory]) -> float | None:
        return round(sum(exact_match(t.answer, t.golden_answers) for t in rows) / len(rows), 4) if rows else None

    return {
        "rows": len(students),
        "em": em(students),
        "searches_per_row": round(sum(t.n_actions for t in students) / len(students), 4) if students else None,
        "rows_two_or_more_searches": len(multi),
        "em_two_or_more_searches": em(multi),
    }


def write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)


def rollout(cfg: OnPolicyConfig, questions: list[dict]) -> tuple[list[Trajectory], RunStats]:
    """Step 1: the student's rows (``out/student``), generated where missing."""
    from transformers import AutoTokenizer  # heavy: only a run renders prompts

    student_cfg = cfg.synth_config("student", cfg.temperature)
    tokenizer = AutoTokenizer.from_pretrained(cfg.policy)
    jobs = question_jobs(questions, "coa", cfg.n, student_cfg.prompt, tokenizer)

    def student():  # loaded only when a rollout is left (a resumed run may have none)
        return load_policy(cfg.policy, cfg.temperature, engine=cfg.engine)[0]

    stats = write_rows(cfg.out_dir / "student", student_cfg, jobs, student_fingerprint(cfg), cfg.overwrite, student)
    return rows_of(cfg.out_dir / "student", jobs), stats


def correct(
    cfg: OnPolicyConfig, students: list[Trajectory], questions: list[dict]
) -> tuple[dict[tuple[str, int], Trajectory], RunStats]:
    """Step 2: the teacher's row at each (student row id, turn start) (``out/teacher``), generated where missing."""
    teacher_cfg = cfg.synth_config("teacher", cfg.teacher_temperature)
    fingerprint = {
        **teacher_fingerprint(teacher_cfg),
        "writer": "synth.onpolicy",
        "role": "teacher",
        "student": student_fingerprint(cfg),
    }
    jobs = teacher_jobs(students, {q["id"]: q for q in questions}, cfg.teacher.kind)
    stats = write_rows(cfg.out_dir / "teacher", teacher_cfg, jobs, fingerprint, cfg.overwrite)
    return {(t.parent_id, t.decision_index): t for t in rows_of(cfg.out_dir / "teacher", jobs)}, stats


def write_sets(
    cfg: OnPolicyConfig, students: list[Trajectory], teachers: dict, questions: list[dict], generated: dict
) -> dict:
    """Step 3: corrections, pairs, decisions and metrics (rewritten whole from the rows)."""
    out = cfg.out_dir
    index = cfg.reference.corpus or cfg.search.index
    passages = Passages(index) if (Path(index) / "index.json").exists() else None
    evidence = {q["id"]: evidence_of(q, passages) for q in questions}
    corrections, pairs, decisions = mine(students, teachers, evidence, get_format(cfg.format), tuple(cfg.reasons))
    table = to_table(corrections)
    extra = {  # beside the schema, as curate's sets carry their scores: why the row exists, and its answer's scores
        "reason": pa.array([c["reason"] for c in corrections], pa.string()),
        "em": pa.array([exact_match(c["answer"], c["golden_answers"]) for c in corrections], pa.float64()),
        "f1": pa.array([f1(c["answer"], c["golden_answers"]) for c in corrections], pa.float64()),
    }
    for name, column in extra.items():
        table = table.append_column(name, column)
    write_parquet(out / "corrections.parquet", table)
    write_parquet(out / "pairs.parquet", pa.Table.from_pylist(pairs, schema=PAIR_SCHEMA))
    write_parquet(out / "decisions.parquet", pa.Table.from_pylist(decisions, schema=DECISION_SCHEMA))
    metrics = {
        "policy": cfg.policy,
        "teacher": cfg.teacher.kind,
        "questions": len(questions),
        "student": student_summary(students),
        **counts(decisions),
        "pairs": len(pairs),
        "pairs_by_direction": {
            d: sum(p["direction"] == d for p in pairs) for d in sorted({p["direction"] for p in pairs})
        },
        "rows_generated": generated,
    }
    write_json(out / "metrics.json", metrics, indent=2)
    return metrics


def run(cfg: OnPolicyConfig) -> dict:
    """Roll the student out, let the teacher continue each of its turns, write the mined sets; return the metrics."""
    if not cfg.policy:
        raise ValueError(
            "onpolicy: give policy=CHECKPOINT (a trained student) or round=NAME (a key of onpolicy_rounds)"
        )
    questions = load_questions(cfg.questions, limit=cfg.offset + cfg.limit if cfg.limit else None)[cfg.offset :]
    students, student_stats = rollout(cfg, questions)
    teachers, teacher_stats = correct(cfg, students, questions)
    return write_sets(
        cfg, students, teachers, questions, {"student": student_stats.rows, "teacher": teacher_stats.rows}
    )


DECISION_SCHEMA = pa.schema(
    [
        ("student_id", pa.string()),
        ("question_id", pa.string()),
        ("turn", pa.int32()),
        ("decision_index", pa.int32()),
        ("student_step", pa.string()),
        ("teacher_step", pa.string()),
        ("outcome", pa.string()),
        ("dropped", pa.string()),
        ("correction_id", pa.string()),
        ("pair_id", pa.string()),
    ]
)


@entry_point("onpolicy")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(OnPolicyConfig, "onpolicy", sys.argv[1:] if argv is None else argv, __doc__)
    try:
        metrics = run(cfg)
    except KeyboardInterrupt:
        print(f"onpolicy: interrupted; {what_is_kept(cfg.out_dir)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    errors = {r: e["written"] for r, e in metrics["errors"].items()}
    print(
        f"onpolicy: {metrics['student']['rows']} student rows (EM {metrics['student']['em']}), {metrics['turns']} turns, "
        f"{metrics['corrections']} corrections and {metrics['pairs']} pairs {errors} → {cfg.out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
