"""A small real curation run for the review tests and the benchmark, with no teacher and no server.

Real HotpotQA questions, real passages from the real BM25 index (``curate.fixtures``), then the real
curate steps: score → analyze → branches → pairs → sets. ``build`` returns the folder holding
``score/``, ``pairs/`` and ``sets/`` (``sets/{coa,cot,pairs}.parquet``), which is what ``annotate.run``
reads and what ``curate sets`` re-runs with a review table.
"""
from __future__ import annotations

from pathlib import Path

from coa.trajectory import read_trajectories, write_trajectories
from curate import analyze, pairs, score, sets
from curate.config import CurateConfig
from curate.fixtures import branch_trajectories, contrasting_answer, realistic_trajectories

ROOT = Path(__file__).resolve().parents[1]
EVAL_SETS = [str(ROOT / "data/raw/bamboogle/bamboogle.jsonl.gz"), str(ROOT / "data/raw/autocoa/all_test_data_test.parquet")]
SET_SIZES = {"n_pairs": 100000, "n_coa": 100000, "n_cot": 100000, "max_per_question": 0, "eval_questions": 4}


def config(out: Path, **kw) -> CurateConfig:
    kw.setdefault("eval_sets", EVAL_SETS)
    return CurateConfig(out=str(out), **kw)


def run_sets(root: Path, out: Path, review: str = "") -> dict:
    """``curate sets`` over ``root``'s score and pairs steps, everything that qualifies."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "asked for 100000 rows": we ask for all on purpose
        return sets.run(config(out, step="sets", input=[str(root / "score")], pairs=str(root / "pairs"),
                               review=review, **SET_SIZES))


def build(root: Path, questions: list[dict], searcher) -> Path:
    root = Path(root)
    traj = write_trajectories(root / "trajectories.parquet", realistic_trajectories(questions, searcher))
    score.run(config(root / "score", input=[str(traj)]))
    analyze.run(config(root / "analyze", step="analyze", input=[str(root / "score")], eval_questions=SET_SIZES["eval_questions"]))
    decisions = [t.to_row() for t in read_trajectories(root / "analyze" / "decisions.parquet")]
    branches = write_trajectories(root / "branches.parquet", branch_trajectories(decisions, searcher, contrasting_answer))
    pairs.run(config(root / "pairs", step="pairs", input=[str(branches)]))
    run_sets(root, root / "sets")
    return root
