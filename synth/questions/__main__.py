"""``python -m synth.questions``: new verified multi-hop questions from seed questions and a corpus.

    python -m synth.questions                                         # compose, embedded HotpotQA + index
    python -m synth.questions proposer=compose questions=my.jsonl search.index=runs/my_index out=runs/q
    python -m synth.questions proposer=extend teacher.base_url=http://127.0.0.1:8100/v1 teacher.model=M
    python -m synth.questions proposer=obfuscate questions=runs/questions/questions.jsonl min_hops=3 \\
        teacher.api=chat teacher.base_url=https://api.deepseek.com/v1 teacher.model=deepseek-chat \\
        teacher.api_key_env=DEEPSEEK_API_KEY out=runs/questions_obfuscated

Writes into ``out`` (default ``runs/questions``; a folder it did not write is refused unless
``overwrite=true``):
  questions.jsonl     FlashRAG rows (``synth.run questions=…`` and the reference teacher read them as they are)
  pool.jsonl          the usable seed questions followed by the new ones: a question file to split and train on
                      (``data.questions=…/pool.jsonl``; ``coa.questions split`` keeps a new question out of the
                      training pool when a seed of it is held out, and the reverse)
  metrics.json        counts (seeds, candidates, written; by hops and kind), the drop reasons of the proposer
                      and of each verifier, difficulty, wall time
  drop_reasons.png    the drop reasons, plotted
  dropped.jsonl       every dropped candidate with the verifier and reason that dropped it

The search index (``search.index``) is the corpus: evidence ids are its document ids. Exit codes: 0 done,
2 bad settings or input (one line), 3 the teacher stopped answering.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from coa.agent import Budget
from coa.config import cli
from coa.errors import BadInput, entry_point
from coa.formats import get_format
from coa.io import atomic_output, claim_folder, owned_files, write_json, write_text
from coa.model import base_model_dir, load_policy
from synth.questions import compose, llm
from synth.questions.config import LLM_PROPOSERS, QuestionsConfig
from synth.questions.record import Candidate, Corpus, read_seeds
from synth.questions.verify import Clean, NeedsEveryHop, NoMemoryShortcut, Pipeline, Solvable, Supported, Unique

TOOL = "synth.questions"  # the owner its marker names in ``out``


def load_tokenizer(cfg: QuestionsConfig):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(cfg.tokenizer or str(base_model_dir()))


def say(text: str) -> None:
    print(f"synth.questions: {text}", file=sys.stderr, flush=True)


def propose(
    cfg: QuestionsConfig, rows: list[dict], corpus: Corpus, searcher, teacher, drops: Counter
) -> list[Candidate]:
    if cfg.proposer == "compose":
        candidates = compose.propose(rows, corpus, cfg, drops)
    elif cfg.proposer == "extend":
        candidates = llm.extend(rows, corpus, searcher, teacher, cfg, drops)
    else:
        candidates = llm.obfuscate(rows, corpus, teacher, cfg, drops)
    kept = []
    for c in candidates:
        if not cfg.min_hops <= c.metadata["hops"] <= cfg.hops:
            drops["hops_out_of_range"] += 1
        else:
            kept.append(c)
    return kept


def verifiers(cfg: QuestionsConfig, corpus: Corpus, searcher, tokenizer, teacher, seeds: list[dict]) -> Pipeline:
    fmt, env = get_format(cfg.format), cfg.search
    solver = (lambda batch: teacher.solve(batch, corpus)) if teacher is not None else None
    judge = (lambda batch: teacher.judge(batch, corpus)) if teacher is not None else None
    memory = NoMemoryShortcut(
        cfg.verify,
        fmt,
        cfg.prompt,
        lambda: load_policy(cfg.verify.memory_model, cfg.verify.memory_temperature, engine=cfg.verify.memory_engine),
    )
    return Pipeline(
        [
            Supported(corpus, judge),
            NeedsEveryHop(corpus, searcher, env.topk),
            Unique(env.index, fmt, tokenizer, cfg.prompt.prefill, solver),
            Clean(cfg.verify.eval_sets, seeds, cfg.verify.near_duplicate),
            Solvable(
                searcher,
                fmt,
                tokenizer,
                cfg.prompt.prefill,
                Budget(env.max_actions, env.max_tokens, env.topk),
                cfg.verify.solver_topk,
            ),
            memory,
        ],
        cfg.verify.skip,
    )


def counts(questions: list[Candidate], key: str) -> dict:
    return {
        str(k): v for k, v in sorted(Counter(q.metadata.get(key) for q in questions).items(), key=lambda kv: str(kv[0]))
    }


def metrics(
    cfg: QuestionsConfig,
    n_seeds: int,
    n_candidates: int,
    written: list[Candidate],
    drops: Counter,
    pipeline: Pipeline,
    teacher,
    wall_s: float,
) -> dict:
    difficulty = [q.metadata["difficulty"] for q in written if "difficulty" in q.metadata]
    searches = [q.metadata["solver"]["searches"] for q in written if "solver" in q.metadata]
    return {
        "proposer": cfg.proposer,
        "questions": cfg.questions,
        "index": cfg.search.index,
        "seed": cfg.seed,
        "seeds": n_seeds,
        "candidates": n_candidates,
        "verified": len(pipeline.kept),
        "written": len(written),
        "by_hops": counts(written, "hops"),
        "by_type": counts(written, "type"),
        "proposer_drops": dict(drops.most_common()),
        "verifiers": {name: dict(c) for name, c in pipeline.counts.items()},
        "drop_reasons": dict(pipeline.reasons.most_common()),
        "difficulty": {
            "mean": round(sum(difficulty) / len(difficulty), 3) if difficulty else None,
            "histogram": {str(k): v for k, v in sorted(Counter(difficulty).items())},
        },
        "solver_searches": {str(k): v for k, v in sorted(Counter(searches).items())},
        "teacher_tokens": dict(teacher.tokens) if teacher is not None else {},
        "teacher_repairs": dict(teacher.repairs) if teacher is not None else {},
        "settings": {
            "hops": cfg.hops,
            "min_hops": cfg.min_hops,
            "max_uses": cfg.max_uses,
            "limit": cfg.limit,
            "search": asdict(cfg.search),
            "verify": asdict(cfg.verify),
        },
        "wall_s": round(wall_s, 1),
    }


def plot(path: Path, m: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"proposer: {k}", v) for k, v in m["proposer_drops"].items()] + list(m["drop_reasons"].items())
    rows.sort(key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(8, 0.35 * max(len(rows), 3) + 1.2))
    ax.barh(
        [k for k, _ in rows],
        [v for _, v in rows],
        color=["#999" if k.startswith("proposer") else "#c44" for k, _ in rows],
    )
    for i, (_, v) in enumerate(rows):
        ax.text(v, i, f" {v}", va="center", fontsize=8)
    ax.set_xlabel("candidates (or seeds) dropped")
    ax.set_title(
        f"synth.questions proposer={m['proposer']}: {m['written']} written of {m['candidates']} candidates", fontsize=10
    )
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run(cfg: QuestionsConfig) -> dict:
    """Propose, verify and write; the metrics."""
    started = time.perf_counter()
    claim_folder(cfg.out, TOOL, "overwrite=true", cfg.overwrite)  # refuse a foreign folder before any work
    drops: Counter = Counter()
    rows = read_seeds(cfg.questions, drops)
    if not rows:
        raise BadInput(f"questions={cfg.questions}: no usable seed question ({dict(drops) or 'the file is empty'})")
    if cfg.search.retriever_url and not (Path(cfg.search.index) / "index.json").exists():
        raise BadInput(
            f"search.index={cfg.search.index}: the corpus is read from a coa.search index folder (its "
            "document store), which search.retriever_url cannot stand in for"
        )
    searcher = cfg.search.searcher()
    corpus = Corpus(cfg.search.index)
    tokenizer = load_tokenizer(cfg)
    fmt = get_format(cfg.format)
    teacher = llm.Teacher(cfg, tokenizer, fmt) if cfg.proposer in LLM_PROPOSERS else None
    say(f"{len(rows)} seed questions from {cfg.questions}; proposing ({cfg.proposer})")
    candidates = propose(cfg, rows, corpus, searcher, teacher, drops)
    say(f"{len(candidates)} candidates of {cfg.min_hops}-{cfg.hops} hops; verifying")
    pipeline = verifiers(cfg, corpus, searcher, tokenizer, teacher, rows)
    verified = pipeline(candidates, say)
    written = verified[: cfg.limit] if cfg.limit else verified
    m = metrics(cfg, len(rows), len(candidates), written, drops, pipeline, teacher, time.perf_counter() - started)
    with owned_files(cfg.out, TOOL, "overwrite=true", cfg.overwrite) as out:
        new = "".join(json.dumps(q.row(), ensure_ascii=False) + "\n" for q in written)
        write_text(out / "questions.jsonl", new)
        seeds = "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in rows)  # the usable seeds
        write_text(out / "pool.jsonl", seeds + new)
        write_text(out / "dropped.jsonl", "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in pipeline.dropped))
        write_json(out / "metrics.json", m)
        plot(out / "drop_reasons.png", m)
    return m


@entry_point("synth.questions")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(QuestionsConfig, "questions", sys.argv[1:] if argv is None else argv, __doc__)
    m = run(cfg)
    hops = ", ".join(f"{k} hops: {v}" for k, v in m["by_hops"].items()) or "none"
    print(
        f"{m['written']} questions ({hops}; {', '.join(f'{k} {v}' for k, v in m['by_type'].items())}) "
        f"of {m['candidates']} candidates from {m['seeds']} seeds → {cfg.out}/questions.jsonl ({m['wall_s']} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
