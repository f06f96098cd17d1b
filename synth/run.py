"""``python -m synth.run``: a teacher writes CoT / CoA trajectories and branches, with real search.

    python -m synth.run mode=coa limit=20 teacher.kind=reference    # templated from evidence annotations
    python -m synth.run mode=coa limit=20 n=2 teacher.kind=llm      # the embedded 135M teacher on vLLM CPU
    python -m synth.run mode=cot questions=data/raw/bamboogle/bamboogle.jsonl.gz out=runs/synth/bamboo
    python -m synth.run mode=coa teacher.base_url=http://gpu-box:8000/v1 teacher.model=M tokenizer=M_DIR
    python -m synth.run mode=coa search.retriever_url=http://127.0.0.1:8000   # a coa.search / Search-R1 server
    python -m synth.run mode=coa teacher.api=chat teacher.base_url=https://api.deepseek.com/v1 \
        teacher.model=deepseek-reasoner teacher.api_key_env=DEEPSEEK_API_KEY    # a chat API, native tool calls
    python -m synth.run mode=coa teacher.base_url=[http://a:8000/v1,http://b:8000/v1] teacher.max_total_tokens=5000000
    python -m synth.run mode=branch decisions=runs/curate/decisions.parquet n=2 branches=[forbid,force]

Defaults: questions = the embedded HotpotQA dev set (``coa.questions.DEFAULT_QUESTIONS``); the search
environment = params.yaml's top-level ``search`` (``search.index`` = ``runs/index``, built from the
embedded corpus if missing, ~3 s); out = ``runs/synth/<mode>``;
teacher = ``teacher.kind``: ``reference`` (default) writes templated trajectories from the questions' evidence
annotations with the same loop and real search (``synth.reference``); ``llm`` is the embedded
SmolLM2-135M-Instruct on vLLM CPU, started on 127.0.0.1 (or reused if already serving on ``serve.port``) and
stopped at the end, or any server at ``teacher.base_url``. Prompts are rendered with the chat template of
``tokenizer`` (default: the served model's folder): set it when the teacher is another model.

Budgets (``teacher.max_total_tokens``, ``teacher.max_cost_usd``) count the rows already in ``out``; when one
is reached no new trajectory starts, the summary says why (exit 3), and a re-run with a larger one resumes.
Re-running the same command resumes: rows already in ``out`` (same question, mode, sample, branch)
are skipped, so change ``out`` when you change the sampling or the prompt. Exit codes: 0 done,
2 bad configuration or input (a key or model the teacher refuses included: nothing is written for it),
3 stopped early (teacher or retriever gone, or unreachable or answering garbage from the start; a budget
reached: one line on stderr; finished rows are kept, and a run that wrote none leaves no folder),
130 interrupted (Ctrl-C; finished rows are kept). ``python -m synth.run --help`` lists every key;
``--print-config`` prints the resolved settings; ``check=true`` validates them, says which teacher would run
and where, and starts nothing. ``teacher.base_url``, ``teacher.api`` or ``teacher.model`` on the command line
pick an LLM teacher (``teacher.kind`` follows them: ``synth.config.kind_follows``).

From Python (e.g. curation): ``branch(decision_rows, cfg)`` returns the branch rows as a table.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import ExitStack
from dataclasses import asdict, fields, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from coa.config import cli
from coa.engines import Checked, EngineFatal, EngineUnavailable, Reporting, make_engine
from coa.errors import debugging, entry_point, one_line
from coa.fingerprint import claim_rows, index_identity, model_identity
from coa.formats import get_format
from coa.io import write_json
from coa.questions import DEFAULT_QUESTIONS, load_questions
from coa.trajectory import read_table, write_trajectories
from synth.config import SynthConfig, check_report, kind_follows
from synth.jobs import Job, branch_jobs, question_jobs, read_decisions
from synth.reference import TEACHER_NAME, TEMPLATE_VERSION, Passages
from synth.serve import embedded_teacher, model_dir
from synth.shards import ShardWriter, done_rows
from synth.summary import dataset_summary, format_summary, run_summary
from synth.synthesize import ENGINE_ERRORS, RunStats, run_jobs
from synth.teacher import TeacherConfig

EXIT_OK, EXIT_BAD_INPUT, EXIT_STOPPED, EXIT_INTERRUPTED = 0, 2, 3, 130


def default_of(name: str):
    return next(f.default for f in fields(SynthConfig) if f.name == name)


def load_tokenizer(cfg: SynthConfig):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(cfg.tokenizer or str(model_dir(cfg.serve)))


def build_jobs(cfg: SynthConfig) -> list[Job]:
    if cfg.mode == "branch":
        if not cfg.decisions:
            raise ValueError("mode=branch needs decisions=PATH (a parquet of decision rows, mode 'decision')")
        rows = read_decisions(cfg.decisions)[cfg.offset :]
        rows = rows[: cfg.limit] if cfg.limit else rows
        return branch_jobs(rows, cfg.n, cfg.branches, get_format(cfg.format), cfg.teacher.kind, load_tokenizer(cfg))
    path = cfg.questions or DEFAULT_QUESTIONS
    questions = load_questions(path, limit=cfg.offset + cfg.limit if cfg.limit else None)[cfg.offset :]
    return question_jobs(questions, cfg.mode, cfg.n, cfg.prompt, load_tokenizer(cfg), cfg.teacher.kind)


def reference_teacher(cfg: SynthConfig, tokenizer):
    corpus = cfg.reference.corpus or cfg.search.index
    passages = Passages(corpus) if (Path(corpus) / "index.json").exists() else None
    if passages is None and cfg.reference.memory > 0:
        raise FileNotFoundError(
            f"reference.corpus={corpus}: the reference teacher's memory needs a coa.search index "
            "folder (set reference.corpus=… or search.index=…)"
        )
    # question jobs carry their metadata; branch jobs come from decision rows and look it up here
    questions = load_questions(cfg.questions or DEFAULT_QUESTIONS) if cfg.mode == "branch" else []
    return make_engine(
        "reference",
        cfg=cfg.reference,
        fmt=get_format(cfg.format),
        tokenizer=tokenizer,
        questions=questions,
        passages=passages,
        max_actions=cfg.search.max_actions,
    )


def llm_teacher(t: TeacherConfig, base_url: str | list, tokenizer, temperature: float, top_p: float):
    """The ``completions`` or ``chat`` engine (``t.api``) over every URL of ``base_url``."""
    common = dict(
        base_url=base_url,
        model=t.model,
        tokenizer=tokenizer,
        api_key_env=t.api_key_env,
        timeout_s=t.timeout_s,
        retries=t.retries,
        temperature=temperature,
        top_p=top_p,
        backoff_s=t.backoff_s,
    )
    if t.api == "chat":
        return make_engine(
            "chat",
            tools=t.tools,
            tool_name=t.tool_name,
            tool_arg=t.tool_arg,
            tool_choice=t.tool_choice,
            send_reasoning=t.send_reasoning,
            stream=t.stream,
            answer_pattern=t.answer_pattern,
            strict_tools=t.strict_tools,
            **common,
        )
    return make_engine("completions", token_prompts=t.token_prompts, **common)


def generate(
    cfg: SynthConfig, todo: list[Job], writer: ShardWriter, engine=None, spent: tuple[int, int] = (0, 0)
) -> RunStats:
    """Run ``todo`` on ``engine``, or on the configured teacher (the embedded one is started here and
    stopped after). ``spent``: (prompt, completion) tokens of the output's earlier rows, which count
    against the teacher's budget."""
    env = cfg.search
    searcher = None if all(j.tools == "forbid" for j in todo) else env.searcher()
    tokenizer = engine.tokenizer if engine is not None else load_tokenizer(cfg)
    tools = env.loop_tools(get_format(cfg.format), searcher, tokenizer) if searcher is not None else None
    with ExitStack() as stack:
        if tools is not None:
            stack.callback(tools.close)
        reference, teacher = cfg.teacher.kind == "reference", cfg.teacher
        if engine is not None or reference or teacher.urls:
            base_url = teacher.urls
        else:
            base_url = stack.enter_context(embedded_teacher(cfg.serve))
            teacher = replace(teacher, model=cfg.serve.served_name)  # the name the embedded engine serves under
        progress = None
        if cfg.progress:
            from tqdm import tqdm

            progress = stack.enter_context(
                tqdm(total=len(todo), unit="traj", desc=f"synth {cfg.mode}", file=sys.stderr, dynamic_ncols=True)
            )
        if engine is None:
            engine = (
                reference_teacher(cfg, tokenizer)
                if reference
                else llm_teacher(teacher, base_url, tokenizer, cfg.temperature, cfg.top_p)
            )

        async def go() -> RunStats:
            try:
                if isinstance(engine, Checked):
                    await engine.check()  # a bad key or model name stops here, before any work
                stats = await run_jobs(
                    todo,
                    engine,
                    searcher,
                    get_format(cfg.format),
                    env.budget,
                    {**cfg.sampling, "seed": cfg.seed},
                    env.name if searcher else "",
                    writer.add,
                    cfg.concurrency,
                    tokenizer,
                    progress,
                    over_budget=None if reference else budget_check(cfg.teacher, spent),
                    tools=tools,
                    teacher=True,
                )
                if isinstance(engine, Reporting):  # per-endpoint requests, tokens, errors, latencies
                    stats.engine = engine.stats()
                return stats
            except EngineFatal as e:
                return RunStats(stopped=str(e), fatal=True)
            except EngineUnavailable as e:  # check(): unreachable, 5xx, hanging or garbage at start
                return RunStats(stopped=str(e), unavailable=True)
            finally:
                await engine.close()

        return asyncio.run(go())


def budget_check(teacher, spent: tuple[int, int]):
    """``stats -> reason`` once the output's tokens (earlier rows' and this run's) reach the teacher's budget."""
    if not (teacher.max_total_tokens or teacher.max_cost_usd):
        return None
    return lambda stats: teacher.over_budget(spent[0] + stats.prompt_tokens, spent[1] + stats.completion_tokens)


# teacher settings that change how requests are sent or paid for, never what a row holds
NOT_IN_FINGERPRINT = (
    "base_url",
    "api_key_env",
    "timeout_s",
    "retries",
    "backoff_s",
    "stream",
    "price_prompt",
    "price_completion",
    "max_cost_usd",
    "max_total_tokens",
)


def fingerprint(cfg: SynthConfig) -> dict:
    """What makes this configuration's rows (``coa.fingerprint``): the teacher (the embedded model by its
    weights), the prompt, the search environment and the sampling."""
    if cfg.teacher.kind == "reference":
        teacher = {"kind": "reference", "templates": TEMPLATE_VERSION, **asdict(cfg.reference)}
    else:
        teacher = {k: v for k, v in asdict(cfg.teacher).items() if k not in NOT_IN_FINGERPRINT}
        if not cfg.teacher.urls:  # the embedded engine: its weights and serving settings
            teacher |= {
                "model": model_identity(model_dir(cfg.serve)),
                "dtype": cfg.serve.dtype,
                "max_model_len": cfg.serve.max_model_len,
            }
    return {
        "writer": "synth.run",
        "teacher": teacher,
        "mode": cfg.mode,
        "format": cfg.format,
        "prompt": asdict(cfg.prompt),
        "tokenizer": cfg.tokenizer,
        "environment": {**asdict(cfg.search), **index_identity(cfg.search.index)},
        "sampling": {"temperature": cfg.temperature, "top_p": cfg.top_p, "seed": cfg.seed},
        "branches": {"decisions": cfg.decisions} if cfg.mode == "branch" else {},
    }


def execute(cfg: SynthConfig, jobs: list[Job], engine=None) -> dict:
    """Run the jobs not yet in ``cfg.out_dir`` (on ``engine``, default the configured teacher); write
    shards and ``summary.json``; return the summary. The output's rows must share this configuration's
    fingerprint (``coa.fingerprint.claim_rows``)."""
    if len({j.id for j in jobs}) != len(jobs):
        raise ValueError("two jobs share a row key (question id, mode, sample, branch id)")
    out = Path(cfg.out_dir)
    rows_fingerprint = fingerprint(cfg)
    claim_rows(out, rows_fingerprint, "synth", cfg.overwrite)
    with ShardWriter(out, cfg.rows_per_shard, cfg.flush_s, rows_fingerprint) as writer:
        done = done_rows(out)  # read holding the lock: no other run deletes or adds rows from here on
        # rows an engine failure ended are generated again (retry_errors), replacing the old ones
        retry = {i for i, reason in done.items() if reason in ENGINE_ERRORS} if cfg.retry_errors else set()
        todo = [j for j in jobs if j.id not in done or j.id in retry]
        # a budget covers the whole output: the earlier rows' tokens count (read only when there is a budget)
        spent = spent_tokens(out) if cfg.teacher.max_total_tokens or cfg.teacher.max_cost_usd else (0, 0)
        retried = writer.drop({j.id for j in todo} & retry) if retry else 0
        stats = generate(cfg, todo, writer, engine, spent) if todo else RunStats()
        # raised inside the writer: a folder this run made and wrote no row into is removed again
        if stats.fatal:  # a configuration error (key, model): no summary, no empty shard; fix and re-run
            raise EngineFatal(stats.stopped)
        if stats.unavailable and not stats.rows:  # nothing done: one line, exit 3 (the summary would say nothing)
            raise EngineUnavailable(stats.stopped)
    if not any(out.glob("*.parquet")):  # no jobs at all: an empty shard tells the next stage "no rows"
        write_trajectories(out / "part-empty.parquet", [])
    ids = pa.array(sorted({j.id for j in jobs}), type=pa.string())  # typed: there may be no jobs
    table = read_table(out)
    table = table.filter(pc.is_in(table["id"], value_set=ids))
    summary = {
        "mode": cfg.mode,
        "out": str(out),
        "teacher": engine.name if engine is not None else teacher_name(cfg),
        "dataset": dataset_summary(table),
        "run": run_summary(stats, cfg.teacher, len(ids), len(jobs) - len(todo), spent, retried),
    }
    write_json(out / "summary.json", summary)
    return summary


def spent_tokens(out: Path) -> tuple[int, int]:
    """(prompt, completion) tokens of the rows already in ``out``: budgets cover the whole output."""
    if not out.exists() or not any(out.glob("*.parquet")):
        return 0, 0
    table = read_table(out)
    return (pc.sum(table["prompt_tokens"]).as_py() or 0), (pc.sum(table["completion_tokens"]).as_py() or 0)


def teacher_name(cfg: SynthConfig) -> str:
    """The name the summary gives the teacher (the embedded engine serves under ``serve.served_name``)."""
    if cfg.teacher.kind == "reference":
        return TEACHER_NAME
    return cfg.teacher.model if cfg.teacher.urls else cfg.serve.served_name


def run(cfg: SynthConfig, engine=None) -> dict:
    return execute(cfg, build_jobs(cfg), engine)


def branch(decisions: list[dict] | pa.Table, cfg: SynthConfig) -> pa.Table:
    """Continue decision prefixes (``forbid``/``force`` per ``cfg.branches``, ``cfg.n`` samples each);
    return the branch rows (``TRAJECTORY_SCHEMA``). Rows are also written to ``cfg.out_dir``, so a
    repeated call resumes instead of generating again."""
    jobs = branch_jobs(decisions, cfg.n, cfg.branches, get_format(cfg.format), cfg.teacher.kind, load_tokenizer(cfg))
    execute(cfg, jobs)
    table = read_table(cfg.out_dir)
    return table.filter(pc.is_in(table["id"], value_set=pa.array([j.id for j in jobs], type=pa.string())))


def what_is_kept(out_dir: str | Path) -> str:
    """What an interrupted run leaves: a folder it made and wrote no row into is gone (``ShardWriter``)."""
    if Path(out_dir).is_dir():
        return f"finished rows are kept in {out_dir}; re-run the same command to finish"
    return "no row was finished; nothing is kept"


@entry_point("synth")
def main(argv: list[str] | None = None) -> int:
    argv = kind_follows(sys.argv[1:] if argv is None else argv)
    cfg = cli(SynthConfig, "synth", argv, __doc__)
    if cfg.check:  # every setting is valid (cli); say what would run, start nothing
        print(check_report(cfg))
        return EXIT_OK
    try:
        jobs = build_jobs(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"synth: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        summary = execute(cfg, jobs)
    except (EngineFatal, EngineUnavailable) as e:  # one line: 2 = a setting to fix, 3 = the teacher stopped
        if debugging():
            raise
        print(one_line("synth", e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"synth: interrupted; {what_is_kept(cfg.out_dir)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_summary(summary))
    if summary["run"]["stopped"]:  # the report above on stdout; the failure, as every failure, on stderr
        stopped = f"stopped early: {summary['run']['stopped']}; finished rows are kept in {cfg.out_dir}"
        print(one_line("synth", f"{stopped}; re-run the same command to finish"), file=sys.stderr)
        return EXIT_STOPPED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
