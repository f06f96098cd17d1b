"""The reference teacher's EM per question type: whole passages against 32-token snippets, three tools.

    python bench/reference_types.py [--repo DIR] [--budgets 3:320,5:512] [--json OUT]

Runs ``python -m synth.run mode=coa teacher.kind=reference`` (in ``--repo``: another checkout gives the
before of a change) on the hand-written corpus and questions of ``tests/synth/data`` (``--questions``,
``--corpus`` for others), each question in two annotation forms: ``full`` (2Wiki ``supporting_facts`` and
``evidences``, MuSiQue ``question_decomposition`` with ``evidence_id``s, plus ``gold_paragraph_ids``) and ``ids``
(``gold_paragraph_ids`` and ``type`` only), with ``search.tools=[search,open,python]`` at
``search.snippet_tokens`` 0 and 32, for each ``max_actions:max_tokens`` budget. Per type it reports EM and
``read``: the share of right answers whose trajectory saw every evidence page (a search result or an opened
page), i.e. right for the right reason. The index is built with ``coa.search.build_index``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coa.formats import get_format  # noqa: E402
from coa.score import exact_match  # noqa: E402
from coa.search import build_index  # noqa: E402
from coa.trajectory import read_trajectories  # noqa: E402
from synth.reference import retrieved  # noqa: E402

DATA = ROOT / "tests" / "synth" / "data"
FMT = get_format("search_r1")


def qtype(question: dict) -> str:
    meta = question["metadata"]
    return meta.get("type") or f"musique_{len(meta['question_decomposition'])}hop"


def ids_only(question: dict) -> dict:
    meta = question["metadata"]
    return {**question, "metadata": {"type": qtype(question), "gold_paragraph_ids": meta["gold_paragraph_ids"]}}


def seen_titles(t) -> set[str]:
    """Titles of the pages the trajectory saw: search results and opened pages (``synth.reference.retrieved``)."""
    return retrieved([s for s in t.segments if s["kind"] == "observation"], FMT)[1]


def synthesise(repo: Path, questions: list[dict], index: Path, out: Path, snippets: int, actions: int, tokens: int):
    qfile = out.with_suffix(".jsonl")
    qfile.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions))
    cmd = [
        sys.executable, "-m", "synth.run", "mode=coa", "teacher.kind=reference", "progress=false", "format=search_r1",
        f"questions={qfile}", f"out={out}", f"search.index={index}", f"search.snippet_tokens={snippets}",
        "search.tools=[search,open,python]", f"search.max_actions={actions}", f"search.max_tokens={tokens}",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=repo, env={**os.environ, "COA_PARAMS": "none"}, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} (in {repo}) failed:\n{done.stderr[-3000:]}")
    return {t.question_id: t for t in read_trajectories(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout whose teacher runs (default: this one)")
    ap.add_argument("--questions", type=Path, default=DATA / "types_questions.jsonl")
    ap.add_argument("--corpus", type=Path, default=DATA / "types_corpus.jsonl")
    ap.add_argument("--budgets", default="3:320,5:512", help="max_actions:max_tokens, comma-separated")
    ap.add_argument("--json", type=Path, help="write the table here too")
    args = ap.parse_args()
    questions = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    titles = {}
    for line in args.corpus.read_text().splitlines():
        row = json.loads(line)
        titles[row["id"]] = row["contents"].split("\n", 1)[0].strip('"')
    table: dict[str, dict[str, dict]] = defaultdict(dict)
    with tempfile.TemporaryDirectory() as tmp:
        index = build_index(args.corpus, Path(tmp) / "index", show_progress=False)
        for budget in args.budgets.split(","):
            actions, tokens = (int(x) for x in budget.split(":"))
            for form in ("full", "ids"):
                rows = questions if form == "full" else [ids_only(q) for q in questions]
                for snippets in (0, 32):
                    name = f"{form} {'whole' if snippets == 0 else f'{snippets}-token'} {actions}/{tokens}"
                    out = Path(tmp) / name.replace(" ", "_").replace("/", "_")
                    got = synthesise(args.repo, rows, index, out, snippets, actions, tokens)
                    per: dict[str, list] = defaultdict(list)
                    for q in questions:
                        t = got[q["id"]]
                        right = exact_match(t.answer, t.golden_answers)
                        pages = {titles[i] for i in q["metadata"]["gold_paragraph_ids"]}
                        per[qtype(q)].append((right, right and pages <= seen_titles(t), t.n_actions))
                    per["all"] = [x for k in list(per) for x in per[k]]
                    for kind, xs in per.items():
                        n = len(xs)
                        table[kind][name] = {
                            "n": n,
                            "em": round(sum(r for r, _, _ in xs) / n, 3),
                            "read": round(sum(g for _, g, _ in xs) / n, 3),
                            "calls": round(sum(c for _, _, c in xs) / n, 2),
                        }
    names = list(next(iter(table.values())))
    print("| type (n) | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for kind, cells in table.items():
        n = cells[names[0]]["n"]
        print(f"| {kind} ({n}) | " + " | ".join(f"{c['em']:.3f} / {c['read']:.3f}" for c in cells.values()) + " |")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
