"""``python -m evaluate.run``: any model as a search agent on held-out questions, scored.

    python -m evaluate.run name=base  model=base   style=plain        # the untrained base model
    python -m evaluate.run name=react model=base   style=react        # ReAct-prompted base model
    python -m evaluate.run name=sft2  model=runs/train/sft2            # a trained checkpoint
    python -m evaluate.run name=gpt   teacher.base_url=https://api.openai.com/v1 teacher.model=gpt-4o-mini \\
        tokenizer=models/SmolLM2-135M-Instruct style=react            # a teacher through the OpenAI API
    python -m evaluate.run name=sft2 model=runs/train/sft2 engine=server  # a vLLM server on 127.0.0.1
    python -m evaluate.run name=sft2 model=runs/train/sft2 engine=hf      # transformers in-process (reference)
    python -m evaluate.run questions=[data/raw/bamboogle/bamboogle.jsonl.gz] search.index=runs/wiki18_index
    python -m evaluate.run step=report names=[base,react,sft1,sft2,sft3,rl1,rl2]   # Table 1 (Markdown)

Every model runs the same agent loop (``coa.agent``) as synthesis and RL-2, with the same search
environment (params.yaml's top-level ``search``), format preset and budget, driven here (greedy by
default) on an engine (``coa.engines``): ``engine=vllm`` (the default for checkpoints) runs ``vllm.LLM``
in-process with every question in flight at once, in the serving dtype (``dtype=auto``: bfloat16 where the
hardware has bf16 units, else float32; docs/measurements compares the engines and dtypes);
``engine=server`` serves the checkpoint with vLLM on 127.0.0.1, or uses the OpenAI-compatible server given
in ``teacher.base_url`` (the default when one is given); ``engine=hf`` runs transformers in-process.
Either way the model continues from token ids, the ids SFT trains on.

The trajectories of ``<out_root>/<name>`` carry a fingerprint of what made them (the model's weights, the
engine, the prompt, the environment, the sampling: ``coa.fingerprint``). The same command resumes; one
whose fingerprint differs (a retrained checkpoint in the same folder, another temperature) is refused
with exit 2 naming what differs, unless ``overwrite=true``. A model folder that is missing, cut or an
unfinished ``train.run`` checkpoint is refused before anything starts.

Prompt styles: ``plain`` = the preset's instruction only (the base model as the paper evaluates it);
``react`` = instruction + a worked think/search/answer demonstration + a prefilled thought tag (the
prompted loop, no training); ``trained`` (default for checkpoints) = the prompt the student was trained
with: the top-level ``prompt`` of ``params.yaml``, the one synthesis wrote the data with and SFT/RL
trained on, so every stage is evaluated on its own prompt.

Every metric is reported with its number of questions ``n``; EM also with a 95% bootstrap interval
(``em_ci95``: percentile interval of 2,000 resamples of the questions, seeded), so two rows can be
told apart or not.

Outputs in ``runs/eval/<name>/``: ``trajectories/`` (core schema), ``metrics.json`` (per dataset:
EM, F1, cover-EM, AutoCoA-lenient, mean actions, well-formed share, accuracy by number of actions,
EM and F1 intervals, and the breakdowns of ``evaluate.stats``: by question type, hops and searches, and
retrieval coverage; a metric that cannot apply to the format is null, "n/a" in the table),
``per_question.json`` (each question's scores and groups, for paired statistics across models),
``by_actions.json`` (DVC plot data) and ``accuracy_by_actions.png`` (the paper's Figure 3).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from coa.config import build, cli
from coa.engines import Checked, EngineFatal, EngineUnavailable, make_engine
from coa.environment import SearchEnvConfig
from coa.errors import BadInput, entry_point
from coa.fingerprint import claim_rows, index_identity, model_identity
from coa.formats import FORMAT, completion_text, get_format
from coa.io import write_json, write_text
from coa.judge import JudgeConfig, LLMJudge
from coa.model import base_model_dir, check_start_model, in_process_dtype
from coa.paths import file_name
from coa.prompts import PromptConfig
from coa.questions import load_questions
from coa.score import METRICS, applies, extract_answer, score_all
from coa.stats import bootstrap_ci
from coa.trajectory import read_table
from evaluate.stats import compact_metrics, dataset_breakdowns, question_rows
from synth.jobs import question_jobs
from synth.run import NOT_IN_FINGERPRINT, llm_teacher
from synth.serve import VLLMServerConfig, embedded_teacher
from synth.shards import ShardWriter, done_ids
from synth.synthesize import run_jobs
from synth.teacher import TeacherConfig

STYLES = ("plain", "react", "trained")


@dataclass
class EvalConfig:
    step: str = field(default="eval", metadata={"help": "eval (one model) | report (Table 1 from several)"})
    name: str = field(default="base", metadata={"help": "row name; outputs go to <out_root>/<name>"})
    model: str = field(default="base", metadata={"help": "'base' (embedded model) or a checkpoint folder"})
    style: str = field(
        default="", metadata={"help": "plain | react | trained; empty = plain for base, trained otherwise"}
    )
    questions: list = field(
        default_factory=lambda: ["runs/split/heldout.jsonl"],
        metadata={"help": "FlashRAG question files (one dataset each)"},
    )
    limit: int = field(default=0, metadata={"help": "questions per dataset; 0 = all"})
    search: SearchEnvConfig = field(
        default_factory=SearchEnvConfig,
        metadata={"help": "the search environment: params.yaml's top-level `search` (index, retriever, topk, budgets)"},
    )
    engine: str = field(
        default="",
        metadata={
            "help": "vllm (vllm.LLM in-process) | server (a vLLM server for the "
            "model on 127.0.0.1, or teacher.base_url) | hf (transformers "
            "in-process); empty = server with teacher.base_url, else vllm"
        },
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "weights dtype of engine=vllm: auto = bfloat16 where the hardware has bf16 units (a GPU, or a "
            "CPU with AMX / AVX512-BF16), else float32, as the vLLM server serves (synth.serve.serving_dtype); "
            "engine=hf runs float32 unless one is named"
        },
    )
    format: str = field(default=FORMAT, metadata={"help": "format preset (the one used in training)"})
    prompt: PromptConfig = field(
        default_factory=PromptConfig,
        metadata={"help": "style=trained: the prompt the student was trained with (params.yaml top-level prompt)"},
    )
    bootstrap: int = field(default=2000, metadata={"help": "resamples of the 95% bootstrap interval of EM"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy"})
    teacher: dict = field(
        default_factory=dict, metadata={"help": "synth teacher.* (base_url, model, ...) for API models"}
    )
    tokenizer: str = field(default="", metadata={"help": "chat template source for API models"})
    port: int = field(default=8110, metadata={"help": "loopback port of the vLLM engine serving the model"})
    concurrency: int = field(default=128, metadata={"help": "trajectories in flight (in-process: one batch)"})
    kv_cache_gib: float = field(
        default=4.0,
        metadata={
            "help": "engine=vllm on a CPU: the KV cache in GiB, room for the trajectories in flight (with a full "
            "cache vLLM holds requests back; docs/bench_train.md)"
        },
    )
    kv_block: int = field(
        default=0,
        metadata={
            "help": "engine=vllm: tokens per KV-cache block; the prefix cache reuses whole blocks only, so a smaller "
            "one recomputes less of each turn's shared prefix (0 = the engine's: 32 on CPU, the kernel's smallest "
            "multiple, where vLLM's own is 128; vLLM's on a GPU). bench/bench_eval.py --kv-blocks times sizes"
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "replace the trajectories of <out_root>/<name> when another model, engine, prompt, environment "
            "or sampling made them; false = refuse, naming what differs"
        },
    )
    out_root: str = field(default="runs/eval", metadata={"help": "one folder per evaluated model"})
    judge: JudgeConfig = field(
        default_factory=JudgeConfig,
        metadata={"help": "llm_judge (coa.judge): with judge.base_url, an LLM also judges every answer"},
    )
    # empty by default: a run by hand or from a test must not rewrite the committed metrics/eval_*.json; the
    # DVC stage sets metrics_dir=metrics
    metrics_dir: str = field(
        default="",
        metadata={
            "help": "folder of the compact DVC metrics file eval_<name>.json (EM, F1, searches, well-formed, the "
            "behaviour breakdowns, n; git-tracked, for `dvc metrics diff` / `dvc exp show`); empty = none"
        },
    )
    names: list = field(default_factory=list, metadata={"help": "report: rows of the table, in order"})
    report: str = field(default="runs/eval/table.md", metadata={"help": "report: the Markdown table"})

    def __post_init__(self) -> None:
        if self.step not in ("eval", "report"):
            raise ValueError(f"step must be 'eval' or 'report', got {self.step!r}")
        file_name(self.name, "name")  # <out_root>/<name>, <metrics_dir>/eval_<name>.json
        for name in self.names:
            file_name(name, "names")
        self.style = self.style or ("plain" if self.model == "base" else "trained")
        self.engine = self.engine or ("server" if self.teacher.get("base_url") else "vllm")
        if self.engine not in ("vllm", "server", "hf"):
            raise ValueError(f"engine must be 'vllm', 'server' or 'hf', got {self.engine!r}")
        if self.engine != "server" and self.teacher.get("base_url"):
            raise ValueError(f"engine={self.engine} runs the model in-process; teacher.base_url needs engine=server")
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")
        if isinstance(self.questions, str):
            self.questions = [self.questions]
        if self.limit < 0:
            raise ValueError(f"limit must be >= 0 (0 = all), got {self.limit}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.kv_cache_gib <= 0:
            raise ValueError(f"kv_cache_gib must be > 0, got {self.kv_cache_gib}")
        if self.kv_block < 0:
            raise ValueError(f"kv_block must be >= 0 (0 = the engine's), got {self.kv_block}")


def prompt_of(cfg: EvalConfig) -> dict:
    """The prompt of a style: plain = instruction only; react = + demonstration and a thought prefill;
    trained = exactly the training prompt."""
    if cfg.style == "trained":  # format, mode and tools follow the top-level settings
        return {k: v for k, v in asdict(cfg.prompt).items() if k not in ("format", "mode", "tools")}
    plain = cfg.style == "plain"
    return {"demonstrations": not plain, "prefill": "" if plain else "<think>\n"}


def score_rows(rows: list[dict]) -> list[dict]:
    scored = []
    for r in rows:
        completion = completion_text(r["segments"])
        s = {
            m: v if applies(m, r["format"]) else None  # n/a, never 0
            for m, v in score_all(completion, r["golden_answers"], r["format"]).items()
        }
        s["well_formed"] = float(get_format(r["format"]).parse(completion).well_formed)
        s["n_actions"] = r["n_actions"]
        scored.append(s)
    return scored


def judge_rows(judge: LLMJudge, rows: list[dict], scored: list[dict]) -> None:
    """Add ``llm_judge`` to each row's scores: the judge's verdict on the answer the format extracts."""
    items = [
        (r["question"], r["golden_answers"], extract_answer(completion_text(r["segments"]), r["format"])) for r in rows
    ]
    for s, verdict in zip(scored, judge.scores(items), strict=True):
        s["llm_judge"] = verdict


def aggregate(scored: list[dict], resamples: int = 2000) -> dict:
    n = len(scored)
    if not n:
        return {"n": 0}
    # a metric that cannot apply to the format (None per row) stays None: "n/a" in the table
    out = {m: None if scored[0][m] is None else round(sum(s[m] for s in scored) / n, 4) for m in METRICS}
    out["em_ci95"] = bootstrap_ci([s["em"] for s in scored], resamples)
    out["f1_ci95"] = bootstrap_ci([s["f1"] for s in scored], resamples)
    out["n"] = n
    out["mean_actions"] = round(sum(s["n_actions"] for s in scored) / n, 3)
    out["well_formed"] = round(sum(s["well_formed"] for s in scored) / n, 4)
    if "llm_judge" in scored[0]:  # judged (judge.base_url): no verdict counts as wrong, and is counted
        out["llm_judge"] = round(sum(s["llm_judge"] or 0.0 for s in scored) / n, 4)
        out["llm_judge_no_verdict"] = sum(s["llm_judge"] is None for s in scored)
    by_actions = defaultdict(list)
    for s in scored:
        by_actions[s["n_actions"]].append(s["em"])
    out["em_by_actions"] = {
        str(k): {"n": len(v), "em": round(sum(v) / len(v), 4)} for k, v in sorted(by_actions.items())
    }
    return out


def plot_by_actions(metrics: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for dataset, m in metrics.items():
        table = m.get("em_by_actions", {})
        xs = [int(k) for k in table]
        ax.plot(xs, [table[str(x)]["em"] for x in xs], marker="o", label=f"{dataset}")
        for x in xs:
            ax.annotate(
                f"n={table[str(x)]['n']}",
                (x, table[str(x)]["em"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(0, 5),
                ha="center",
            )
    ax.set_xlabel("number of search actions")
    ax.set_ylabel("exact match")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check_model(cfg: EvalConfig) -> None:
    """Refuse a model folder that is missing, cut or unfinished before anything starts (``train.run``'s own
    check: a checkpoint must carry its completion marker, any other folder whole safetensors)."""
    if cfg.model == "base":
        return
    folder = Path(cfg.model)
    if not (folder / "config.json").is_file():
        raise BadInput(
            f"model={cfg.model}: not a model folder (no config.json there); give 'base' or a "
            "checkpoint folder such as runs/train/sft2"
        )
    check_start_model(folder)


def model_folder(cfg: EvalConfig) -> Path:
    return base_model_dir() if cfg.model == "base" else Path(cfg.model)


def prompt_config(cfg: EvalConfig) -> PromptConfig:
    return PromptConfig(**{**prompt_of(cfg), "format": cfg.format, "mode": "coa", "tools": list(cfg.search.tools)})


def engine_dtype(cfg: EvalConfig) -> str:
    """The in-process engine's weights dtype: ``auto`` is the serving dtype for vLLM and float32 for hf (the
    reference engine)."""
    return in_process_dtype(cfg.dtype, cfg.engine)


def fingerprint(cfg: EvalConfig) -> dict:
    """What makes the rows of an evaluation (``coa.fingerprint``): the model by its weights (an API model by
    its name), the engine, the prompt, the search environment and the sampling."""
    api = {k: v for k, v in cfg.teacher.items() if k not in NOT_IN_FINGERPRINT}
    model = {"name": api.get("model", "")} if cfg.teacher.get("base_url") else model_identity(model_folder(cfg))
    return {
        "writer": "evaluate.run",
        "model": model,
        "engine": cfg.engine,
        "dtype": engine_dtype(cfg) if cfg.engine != "server" else "",
        "teacher": api,
        "style": cfg.style,
        "format": cfg.format,
        "prompt": asdict(prompt_config(cfg)),
        "tokenizer": cfg.tokenizer,
        "environment": {**asdict(cfg.search), **index_identity(cfg.search.index)},
        "sampling": {"temperature": cfg.temperature},
    }


@contextmanager
def model_engine(cfg: EvalConfig) -> Iterator:
    """The engine answering for the model: in-process (``vllm`` | ``hf``), a vLLM server started for the
    checkpoint on 127.0.0.1 (``server``), or the API at ``teacher.base_url``; closed or stopped after."""
    if cfg.engine != "server":
        yield make_engine(
            cfg.engine,
            model=str(model_folder(cfg)),
            temperature=cfg.temperature,
            name=cfg.name,
            dtype=engine_dtype(cfg),
            **({"kv_cache_gib": cfg.kv_cache_gib, "block_size": cfg.kv_block} if cfg.engine == "vllm" else {}),
        )
        return
    from transformers import AutoTokenizer  # heavy: only the server engine needs a tokenizer of its own

    teacher = build(TeacherConfig, cfg.teacher, "evaluate teacher")
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer or model_folder(cfg))
    if teacher.urls:
        yield llm_teacher(teacher, teacher.urls, tokenizer, cfg.temperature, 1.0)
        return
    serve = VLLMServerConfig(model="" if cfg.model == "base" else cfg.model, port=cfg.port, served_name=cfg.name)
    with embedded_teacher(serve) as base_url:
        yield llm_teacher(replace(teacher, model=cfg.name), base_url, tokenizer, cfg.temperature, 1.0)


def generate(cfg: EvalConfig, engine, questions: list[dict], out: Path) -> list[dict]:
    """The agent loop over ``questions`` into ``out``, claimed for this fingerprint (rows already there are
    kept); the rows of these questions."""
    fmt, env = get_format(cfg.format), cfg.search
    jobs = question_jobs(questions, "coa", 1, prompt_config(cfg), engine.tokenizer)
    sampling = {
        "temperature": cfg.temperature,
        "max_tokens": env.max_tokens,
        "max_actions": env.max_actions,
        "topk": env.topk,
        "seed": 0,
    }

    async def go():
        try:
            if isinstance(engine, Checked):
                await engine.check()  # a bad key or model name stops here, before any work
            return await run_jobs(
                todo,
                engine,
                searcher,
                fmt,
                env.budget,
                sampling,
                env.name,
                writer.add,
                cfg.concurrency,
                engine.tokenizer,
                progress,
                tools=tools,
            )
        finally:
            await engine.close()

    with ShardWriter(out, fingerprint=fingerprint(cfg)) as writer:
        done = done_ids(out)  # read holding the lock: no other run deletes or adds rows from here on
        todo = [j for j in jobs if j.id not in done]
        searcher = env.searcher() if todo else None
        tools = env.loop_tools(fmt, searcher, engine.tokenizer) if todo else None
        with tqdm(
            total=len(todo),
            unit="q",
            desc=f"evaluate {cfg.name}",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not todo,
        ) as progress:
            try:
                stats = asyncio.run(go()) if todo else None
            finally:
                if tools is not None:
                    tools.close()
        if stats is not None and stats.stopped:  # raised inside the writer: a folder it made and wrote no row into goes
            raise (EngineFatal if stats.fatal else EngineUnavailable)(stats.stopped)
    ids = {j.id for j in jobs}
    return [r for r in read_table(out).to_pylist() if r["id"] in ids]


def evaluate(cfg: EvalConfig) -> dict:
    check_model(cfg)
    out = Path(cfg.out_root) / cfg.name
    datasets = {
        Path(qfile).name.split(".")[0]: load_questions(qfile, limit=cfg.limit or None) for qfile in cfg.questions
    }
    for dataset in datasets:  # before any model loads: rows of another model or setting are refused here
        claim_rows(out / "trajectories" / dataset, fingerprint(cfg), "evaluate", cfg.overwrite)
    metrics, plot_rows, per_question = {}, [], []
    judge = (
        LLMJudge(replace(cfg.judge, cache=cfg.judge.cache or str(out / "llm_judge.jsonl")))
        if cfg.judge.base_url
        else None
    )
    with model_engine(cfg) as engine:
        for dataset, questions in datasets.items():
            rows = generate(cfg, engine, questions, out / "trajectories" / dataset)
            scored = score_rows(rows)
            if judge is not None:
                judge_rows(judge, rows, scored)
            per_dataset = question_rows(rows, scored, questions, dataset)
            m = {**aggregate(scored, cfg.bootstrap), **dataset_breakdowns(per_dataset, cfg.bootstrap)}
            metrics[dataset] = m
            per_question += per_dataset
            plot_rows += [
                {"dataset": dataset, "actions": int(k), "em": v["em"], "n": v["n"]}
                for k, v in m.get("em_by_actions", {}).items()
            ]
    result = {"name": cfg.name, "model": cfg.model, "style": cfg.style, "format": cfg.format, "datasets": metrics}
    write_json(out / "metrics.json", result)  # complete or absent: DVC and the report read it
    if cfg.metrics_dir:  # numbers only, small and committed: `dvc metrics diff` / `dvc exp show` compare runs
        write_json(Path(cfg.metrics_dir) / f"eval_{cfg.name}.json", compact_metrics(metrics))
    write_json(out / "by_actions.json", plot_rows)
    write_json(out / "per_question.json", per_question)  # paired statistics across models read this
    plot_by_actions(metrics, out / "accuracy_by_actions.png", f"{cfg.name}: EM by number of actions")
    return result


def report(cfg: EvalConfig) -> str:
    """Table 1 in the paper's shape: rows = models, columns = datasets (EM / lenient / F1 / actions)."""
    results = []
    for name in cfg.names:
        path = Path(cfg.out_root) / name / "metrics.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no metrics for {name!r}; run `python -m evaluate.run name={name}` first")
        results.append(json.loads(path.read_text()))
    datasets = sorted({d for r in results for d in r["datasets"]})
    lines = [
        "| model | "
        + " | ".join(f"{d} EM [95% CI] / lenient / F1 / cover-EM / actions / well-formed / n" for d in datasets)
        + " |",
        "|---|" + "---|" * len(datasets),
    ]
    for r in results:
        cells = []
        for d in datasets:
            m = r["datasets"].get(d, {})
            ci = m.get("em_ci95") or ["–", "–"]
            em = f"{m['em']:.3f} [{ci[0]}, {ci[1]}]" if "em" in m else "–"
            rest = [
                ("n/a" if m[k] is None else f"{m[k]:.3f}") if k in m else "–"
                for k in ("autocoa_lenient", "f1", "cover_em", "mean_actions", "well_formed")
            ]
            cells.append(" / ".join([em, *rest, str(m.get("n", "–"))]))
        lines.append(f"| {r['name']} ({r['style']}) | " + " | ".join(cells) + " |")
    n = {d: max(r["datasets"].get(d, {}).get("n", 0) for r in results) for d in datasets}
    lines.append("")
    lines.append("Questions per dataset: " + ", ".join(f"{d} {n[d]}" for d in datasets) + ".")
    table = "\n".join(lines) + "\n"
    write_text(cfg.report, table)
    return table


@entry_point("evaluate")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(EvalConfig, "evaluate", sys.argv[1:] if argv is None else argv, __doc__)
    if cfg.step == "report":
        print(report(cfg))
        return 0
    try:
        result = evaluate(cfg)
    except EngineFatal as e:  # a key or model the engine refuses: nothing was written for it
        print(f"evaluate: {e}", file=sys.stderr)
        return 2
    except EngineUnavailable as e:  # the engine or the retriever stopped answering: finished rows are kept
        print(f"evaluate: stopped early: {e}; re-run the same command to finish", file=sys.stderr)
        return 3
    print(json.dumps(result["datasets"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
