"""The real LLM's numbers of docs/experiments/real_llm.md, from the runs' own output folders.

    python bench/real_llm.py teacher OUT.json NAME=FOLDER[,FOLDER] ...   # the teacher table
    python bench/real_llm.py judge OUT.json URL [NAME=]FOLDER ... [hand=FILE]  # llm_judge against EM, a hand check
    python bench/real_llm.py questions OUT.jsonl KEY=VALUE ...           # synth.questions, replies kept

``teacher``: for each named run (its synth.run output folders; the rows of a folder are settled with
``synth.protocol.settle`` first, as ``synth.run`` settles them since it exists, so rows written before are counted
the same way), on the questions every run answered: rows, finish reasons, protocol breaks, well-formed share, EM,
searches per question, completion tokens per second of wall time (the summaries' ``wall_s``), and the usable share
after curation (``curate.run step=score`` on the settled rows: kept and correct, per mode).
``judge``: every row's extracted answer judged by ``llm_judge`` at URL (EM 1 and empty answers settle without
asking); agreement with EM, and each disagreement for the hand check. ``hand=FILE`` (a JSON list of question,
prediction and ``hand``: right or wrong, as docs/experiments/real_llm_judge_hand_check.json): the judge's agreement
with it on the disagreements, by row and by distinct answer; a disagreement the file does not label is counted
as unlabelled.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coa.agent import start_episode  # noqa: E402
from coa.formats import completion_text, get_format  # noqa: E402
from coa.judge import JudgeConfig, LLMJudge  # noqa: E402
from coa.model import LLM_NAME  # noqa: E402
from coa.score import exact_match  # noqa: E402
from coa.trajectory import read_table, write_trajectories  # noqa: E402
from synth.protocol import settle  # noqa: E402

EVAL_SETS = "[runs/real_llm/split/heldout.jsonl,data/raw/bamboogle/bamboogle.jsonl.gz,data/raw/autocoa/all_test_data_test.parquet]"


def settled(folder: Path, out: Path) -> tuple[list[dict], Counter]:
    """The folder's rows with ``settle`` applied (written to ``out`` for curation) and its outcomes."""
    rows, outcomes = read_table(folder).to_pylist(), Counter()
    for row in rows:
        fmt = get_format(row["format"])
        ep = start_episode("", _tokenizer(), question={"id": row["question_id"]})
        ep.segments, ep.finish_reason = [dict(s) for s in row["segments"]], row["finish_reason"]
        outcome = settle(ep, fmt)
        outcomes[f"{row['mode']}/{outcome or 'none'}"] += 1
        row.update(segments=ep.segments, finish_reason=ep.finish_reason, answer=fmt.extract_answer(ep.completion))
    write_trajectories(out / "part-settled.parquet", rows)
    return rows, outcomes


_TOK = None


def _tokenizer():
    global _TOK
    if _TOK is None:
        from transformers import AutoTokenizer

        _TOK = AutoTokenizer.from_pretrained(ROOT / "models" / LLM_NAME)
    return _TOK


def teacher(out: Path, runs: dict[str, list[Path]]) -> dict:
    work = out.parent / f"{out.stem}_work"
    tables = {}
    for name, folders in runs.items():
        rows, outcomes, speed = [], Counter(), {}
        for folder in folders:
            got, seen = settled(folder, work / name / folder.name)
            rows += got
            outcomes += seen
            run = json.loads((folder / "summary.json").read_text())["run"] if (folder / "summary.json").exists() else {}
            # the summary covers its last invocation (an interrupted run resumed: the rows of that invocation)
            speed[folder.name] = {k: run.get(k) for k in ("finished", "wall_s", "completion_tokens_per_s")}
        scores = curate([work / name / f.name for f in folders], work / name / "curate")
        tables[name] = (rows, outcomes, speed, scores)
    common = set.intersection(  # the questions every run answered in every mode it ran
        *(
            {r["question_id"] for r in rows if r["mode"] == m}
            for rows, *_ in tables.values()
            for m in {r["mode"] for r in rows}
        )
    )
    report = {"questions": len(common), "runs": {}}
    for name, (rows, outcomes, speed, scores) in tables.items():
        for mode in sorted({r["mode"] for r in rows}):
            these = [r for r in rows if r["mode"] == mode and r["question_id"] in common]
            n = len(these)
            fmt = get_format(these[0]["format"])
            report["runs"][f"{name}/{mode}"] = {
                "rows": n,
                "rows_all": sum(r["mode"] == mode for r in rows),
                "finish_reasons": dict(Counter(r["finish_reason"] for r in these)),
                "protocol_all_rows": {k.split("/")[1]: v for k, v in outcomes.items() if k.startswith(f"{mode}/")},
                "well_formed": round(sum(fmt.parse(completion_text(r["segments"])).well_formed for r in these) / n, 3),
                "em": round(sum(exact_match(r["answer"], r["golden_answers"]) for r in these) / n, 3),
                "searches_per_question": round(sum(r["n_actions"] for r in these) / n, 2),
                "completion_tokens_per_row": round(sum(r["completion_tokens"] for r in these) / n, 1),
                "speed": speed,
                "usable": usable(scores, common, mode),
            }
    out.write_text(json.dumps(report, indent=1))
    return report


def curate(folders: list[Path], out: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "curate.run",
        "step=score",
        f"in=[{','.join(map(str, folders))}]",
        f"out={out}",
        f"eval_sets={EVAL_SETS}",
        "overwrite=true",
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return out / "scores.parquet"


def usable(scores: Path, common: set, mode: str) -> float:
    import polars as pl

    df = pl.read_parquet(scores).filter(pl.col("mode") == mode, pl.col("question_id").is_in(list(common)))
    return round(df.filter(pl.col("kept") & pl.col("correct")).height / max(df.height, 1), 3)


def judge(out: Path, url: str, folders: dict[str, Path], hand: Path | None = None) -> dict:
    items, meta = [], []
    for source, folder in folders.items():
        for row in read_table(folder).to_pylist():
            answer = get_format(row["format"]).extract_answer(completion_text(row["segments"]))
            items.append((row["question"], row["golden_answers"], answer))
            meta.append({"source": source, "question_id": row["question_id"]})
    judged = LLMJudge(JudgeConfig(base_url=url, model=LLM_NAME, cache=str(out.with_suffix(".cache.jsonl"))))
    verdicts = judged.scores(items)
    rows = [
        {**m, "question": q, "golden_answers": g, "prediction": p, "em": exact_match(p, g), "llm_judge": v}
        for m, (q, g, p), v in zip(meta, items, verdicts)
    ]
    answered = [r for r in rows if r["prediction"]]
    agree = [r for r in answered if (r["llm_judge"] or 0.0) == r["em"]]
    report = {
        "rows": len(rows),
        "answered": len(answered),
        "agree_with_em": len(agree),
        "judge_yes_em_0": sum(r["llm_judge"] == 1.0 and r["em"] == 0.0 for r in answered),
        "no_verdict": sum(r["llm_judge"] is None for r in answered),
        "stats": judged.stats(),
        "by_source": {
            s: {
                "answered": sum(r["source"] == s for r in answered),
                "em": sum(r["em"] for r in answered if r["source"] == s),
                "llm_judge": sum(r["llm_judge"] or 0.0 for r in answered if r["source"] == s),
            }
            for s in sorted({r["source"] for r in answered})
        },
        "disagreements": [r for r in answered if (r["llm_judge"] or 0.0) != r["em"] or r["llm_judge"] is None],
    }
    if hand:
        report["hand_check"] = hand_check(report["disagreements"], json.loads(hand.read_text()))
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return report


def hand_check(disagreements: list[dict], labels: list[dict]) -> dict:
    """How often the judge's verdict on a disagreement with EM is the hand check's, by row and by distinct answer."""
    right = {(x["question"], x["prediction"]): x["hand"] == "right" for x in labels}
    rows = [((r["question"], r["prediction"]), (r["llm_judge"] or 0.0) == 1.0) for r in disagreements]
    labelled = [(key, said) for key, said in rows if key in right]
    distinct = dict(labelled)
    return {
        "rows": len(rows),
        "unlabelled": len(rows) - len(labelled),
        "agree": sum(said == right[key] for key, said in labelled),
        "distinct": len(distinct),
        "agree_distinct": sum(said == right[key] for key, said in distinct.items()),
    }


def questions(out: Path, argv: list[str]) -> None:
    """``python -m synth.questions`` with ARGV, every teacher prompt and reply kept in OUT (JSONL) for the docs'
    examples (the run itself keeps only counts and the candidates)."""
    import synth.questions.llm as llm
    from synth.questions.__main__ import main

    asked = llm.Teacher.ask

    def ask(self, prompts: list[str]) -> list[str | None]:
        replies = asked(self, prompts)
        with open(out, "a", encoding="utf-8") as f:
            for prompt, reply in zip(prompts, replies):
                f.write(json.dumps({"prompt": prompt, "reply": reply}, ensure_ascii=False) + "\n")
        return replies

    llm.Teacher.ask = ask
    main(argv)


if __name__ == "__main__":
    kind, out = sys.argv[1], Path(sys.argv[2])
    if kind == "questions":
        questions(out, sys.argv[3:])
    elif kind == "teacher":
        runs = {a.split("=", 1)[0]: [Path(f) for f in a.split("=", 1)[1].split(",")] for a in sys.argv[3:]}
        print(json.dumps(teacher(out, runs), indent=1))
    else:
        named = [a.split("=", 1) if "=" in a else [Path(a).name, a] for a in sys.argv[4:]]
        hand = next((Path(f) for name, f in named if name == "hand"), None)
        report = judge(out, sys.argv[3], {name: Path(f) for name, f in named if name != "hand"}, hand)
        print(json.dumps({k: v for k, v in report.items() if k != "disagreements"}, indent=1))
