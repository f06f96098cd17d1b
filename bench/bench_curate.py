"""Curation throughput: score + filter + dedup (+ decontamination) + analyze on 1,000,000 trajectories.

    python bench/bench_curate.py [--rows 1000000] [--source runs/synth/coa] [--baseline 5000]

Base trajectories: real synthesis output when ``--source`` is given, else realistic rows built from
the 1,979 real HotpotQA questions, the real corpus (BM25 over the embedded index) and the real chat
template in the ``autocoa`` preset (``tests/fixtures/trajectories.py``). They are replicated to ``--rows`` with
varied ids, question ids and text (every row's first model segment is rewritten), and a share of
the replicas is broken the way teachers break (cut off mid-answer, looping, an empty query) so every
path runs. The timed part is the real CLI (``python -m curate.run step=score`` then ``step=analyze``)
in a child process: wall time, rows/s and the child's peak RSS. In the same run a pure-Python
baseline (the core's parse + score functions, dict dedup, datasketch MinHash, Python aggregates) on a
``--baseline``-row sample is timed and extrapolated; the ratio is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coa.formats import get_format  # noqa: E402
from coa.score import score_all  # noqa: E402
from coa.trajectory import TRAJECTORY_SCHEMA, write_trajectories  # noqa: E402
from curate import io  # noqa: E402

EVAL_SETS = [
    str(ROOT / "data/raw/bamboogle/bamboogle.jsonl.gz"),
    str(ROOT / "data/raw/autocoa/all_test_data_test.parquet"),
]


def base_rows(source: str | None, work: Path) -> tuple[pl.DataFrame, str]:
    if source:
        return io.scan(source, TRAJECTORY_SCHEMA.names).collect(), f"synthesis output {source}"
    from transformers import AutoTokenizer

    from coa.model import base_model_dir
    from coa.questions import DEFAULT_QUESTIONS, load_questions
    from coa.search import DEFAULT_CORPUS, build_index, load_searcher
    from tests.fixtures.trajectories import realistic_trajectories

    index = build_index(DEFAULT_CORPUS, work / "index", show_progress=False)
    rows = realistic_trajectories(
        load_questions(DEFAULT_QUESTIONS),
        load_searcher(index),
        tokenizer=AutoTokenizer.from_pretrained(base_model_dir()),
    )
    write_trajectories(work / "base.parquet", rows)
    return pl.read_parquet(
        work / "base.parquet"
    ), "fixtures: real HotpotQA questions + real corpus (BM25), autocoa preset"


def replicate(base: pl.DataFrame, rows: int) -> pl.DataFrame:
    """``rows`` rows: base × replicas, each with its own ids and rewritten text, some broken on purpose."""
    reps = -(-rows // base.height)
    df = base.join(pl.DataFrame({"r": range(reps)}, schema={"r": pl.Int64}), how="cross").head(rows)
    df = df.with_row_index("n").with_columns(
        question_id=pl.col("question_id") + "#" + pl.col("r").cast(pl.String),
        id=(pl.col("id") + pl.col("r").cast(pl.String)).hash(1).cast(pl.String),
    )
    segs = (
        df.select("n", "r", "segments")
        .explode("segments")
        .with_columns(
            k=pl.int_range(pl.len()).over("n"), last=pl.int_range(pl.len()).over("n") == pl.len().over("n") - 1
        )
    )
    text = pl.col("segments").struct.field("text")
    r = pl.col("r")
    note = pl.format("(attempt {}, checking {} first) ", r, pl.col("n") % 97)
    loop = pl.lit("Let me think again. " * 20)
    new = pl.when(pl.col("k") == 0).then(text.str.replace("\n", "\n" + note, literal=True)).otherwise(text)
    new = (
        pl.when((r % 10 == 3) & pl.col("last"))
        .then(new.str.head(new.str.len_chars() // 2))  # cut off
        .when((r % 10 == 5) & (pl.col("k") == 0))
        .then(new + loop)  # looping
        .when((r % 10 == 7) & (pl.col("k") == 0))
        .then(new.str.replace(r"<begin_search> [^<]*</end_search>", "<begin_search>  </end_search>"))
        .otherwise(new)
    )
    segs = segs.with_columns(segments=pl.col("segments").struct.with_fields(text=new))
    segs = segs.group_by("n", maintain_order=True).agg("segments")
    df = (
        df.drop("segments")
        .join(segs, on="n")
        .with_columns(finish_reason=pl.when(r % 10 == 3).then(pl.lit("max_tokens")).otherwise(pl.col("finish_reason")))
    )
    return df.select(TRAJECTORY_SCHEMA.names)


def run_cli(args: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, all threads) of one CLI call in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "curate.run", *args], check=True, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - started, cpu


def python_baseline(sample: pl.DataFrame) -> float:
    """The same work row by row with the core functions and datasketch; (wall, CPU) seconds for the sample."""
    from datasketch import MinHash, MinHashLSH

    started, cpu = time.perf_counter(), time.process_time()
    lsh, seen = MinHashLSH(threshold=0.8, num_perm=16), set()
    reasons, by_mode, by_calls = Counter(), defaultdict(list), defaultdict(list)
    for row in sample.iter_rows(named=True):
        fmt = get_format(row["format"])
        completion = "".join(s["text"] for s in row["segments"])
        model = "".join(s["text"] for s in row["segments"] if s["kind"] == "model")
        parsed = fmt.parse(completion)
        scores = score_all(completion, row["golden_answers"], row["format"])
        lines = [x for x in model.replace(". ", ".\n").replace("? ", "?\n").replace("! ", "!\n").split("\n") if x]
        words = model.lower().split()
        reason = (
            parsed.errors
            and "malformed"
            or row["finish_reason"] not in ("answer", "")
            and "unfinished"
            or len(lines) >= 4
            and 1 - len(set(lines)) / len(lines) > 0.5
            and "repetition"
            or len(words) >= 60
            and len(set(words)) / len(words) < 0.2
            and "repetition"
            or None
        )
        key = (row["question_id"], row["mode"], hash(model))
        if reason is None and key in seen:
            reason = "duplicate"
        seen.add(key)
        if reason is None:
            m = MinHash(num_perm=16)
            m.update_batch([" ".join(words[i : i + 3]).encode() for i in range(max(len(words) - 2, 1))])
            if lsh.query(m):
                reason = "near_duplicate"
            else:
                lsh.insert(row["id"], m)
        reasons[reason] += 1
        by_mode[row["mode"]].append(scores["em"])
        by_calls[parsed.n_actions].append(scores["em"])
    summary = ({m: sum(v) / len(v) for m, v in by_mode.items()}, {k: sum(v) / len(v) for k, v in by_calls.items()})
    assert summary and reasons
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--source", default=None, help="trajectory parquet to replicate (default: fixtures)")
    ap.add_argument("--baseline", type=int, default=5000, help="rows timed in the pure-Python baseline")
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument(
        "--work",
        default=None,
        help="folder for the generated data (default: a temp dir); "
        "data built there by an earlier run with the same --rows is reused",
    )
    args = ap.parse_args()
    scratch = None if args.work else tempfile.TemporaryDirectory(prefix="bench_curate_")  # removed at exit
    work = Path(args.work or scratch.name)
    data = work / "trajectories"
    data.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    stamp = work / "built.json"
    if stamp.exists() and json.loads(stamp.read_text())["rows"] == args.rows:
        origin = json.loads(stamp.read_text())["origin"]
        n = pl.scan_parquet(data / "*.parquet").select(pl.len()).collect().item()
        sample = pl.scan_parquet(data / "*.parquet").head(args.baseline * 20).collect().sample(args.baseline, seed=0)
    else:
        base, origin = base_rows(args.source, work)
        big = replicate(base, args.rows)
        per = -(-big.height // args.shards)
        for i in range(args.shards):
            io.write_parquet(big.slice(i * per, per), data / f"part-{i:03d}.parquet", schema=TRAJECTORY_SCHEMA)
        sample, n = big.sample(min(args.baseline, big.height), seed=0), big.height
        del big
        stamp.write_text(json.dumps({"rows": args.rows, "origin": origin}))
    size = sum(f.stat().st_size for f in data.glob("*.parquet"))
    print(f"data: {n} rows ({origin}); {size / 2**20:.0f} MiB parquet; ready in {time.perf_counter() - t0:.0f}s")

    load = os.getloadavg()[0]
    score_s, score_cpu = run_cli(
        ["step=score", f"in={data}", f"out={work / 'score'}", f"eval_sets=[{','.join(EVAL_SETS)}]"]
    )
    analyze_s, analyze_cpu = run_cli(["step=analyze", f"in={work / 'score'}", f"out={work / 'analyze'}"])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB → GiB
    total, cpu = score_s + analyze_s, score_cpu + analyze_cpu
    py_s, py_cpu = python_baseline(sample)
    py_total, py_cpu_total = py_s / sample.height * n, py_cpu / sample.height * n
    metrics = io.read_metrics(work / "score" / "metrics.json")
    result = {
        "rows": n,
        "base": origin,
        "cpus": os.cpu_count(),
        "load_avg_1m_before": load,
        "load_avg_1m_after": os.getloadavg()[0],
        "score_filter_dedup_decontam_s": round(score_s, 1),
        "analyze_s": round(analyze_s, 1),
        "total_s": round(total, 1),
        "rows_per_s": round(n / total),
        "peak_rss_gib": round(peak, 2),
        "cpu_s": round(cpu, 1),
        "cpu_s_per_core_of_2": round(cpu / 2, 1),
        "score_phase_s": io.read_metrics(work / "score" / "metrics.json")["phase_seconds"],
        "python_baseline_rows": sample.height,
        "python_baseline_s": round(py_s, 1),
        "python_baseline_extrapolated_s": round(py_total),
        "speedup": round(py_total / total, 1),
        "python_baseline_cpu_s_extrapolated": round(py_cpu_total),
        "speedup_cpu": round(py_cpu_total / cpu, 1),
        "kept": metrics["kept"],
        "reasons": metrics["reasons"]["first"],
        "parsed_by_python": metrics["parsed_by_python"],
        "scored_by_python": metrics["scored_by_python"],
    }
    print(json.dumps(result, indent=2))
    print(
        f"\n{n:,} trajectories: score+filter+dedup+decontam {score_s:.1f}s + analyze {analyze_s:.1f}s = "
        f"{total:.1f}s wall ({n / total:,.0f} rows/s; {cpu:.0f} CPU-s, load {load:.1f} on {os.cpu_count()} cores), "
        f"peak RSS {peak:.2f} GiB; pure Python would take ~{py_total:,.0f}s ({sample.height} rows in {py_s:.1f}s) "
        f"→ {py_total / total:.0f}x faster in wall time, {py_cpu_total / cpu:.0f}x in CPU time"
    )
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "bench_curate.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
