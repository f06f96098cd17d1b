"""API teachers: throughput with two endpoints vs one, and the chat engine's overhead vs completions.

    python bench/bench_teachers.py [--questions 48] [--latency 0.2] [--capacity 4] [--concurrency 16]

Both parts run the real ``synth.run`` path (``execute``: the agent loop, real BM25 search over the
embedded corpus, shards, summary) against ``FakeReasoningAPI`` stand-ins on 127.0.0.1 (hosted reasoning
APIs cannot be reached here; tests/fixtures/chat_api.py), each answering a request after a fixed
``--latency`` with at most ``--capacity`` requests served at once (a server's batch limit), and
searching twice per question.

1. Endpoints: the same jobs with ``teacher.base_url`` = one stand-in, then two (in one process, same
   settings); the ratio of trajectories per second (goal ≥ 1.8×).
2. Overhead: ``teacher.api=chat`` (native tool calls) vs ``teacher.api=completions`` against one stand-in
   with no latency and one request at a time, so the wall time per trajectory is the toolkit's own cost
   (request building, replay, conversion, HTTP, search) rather than the server's.
The numbers are the summary's ``wall_s`` (the run itself: model loading and index opening excluded).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("COA_PARAMS", "none")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from coa.config import load_config  # noqa: E402
from coa.search import DEFAULT_CORPUS, build_index  # noqa: E402
from synth.config import SynthConfig  # noqa: E402
from synth.run import run  # noqa: E402
from tests.fixtures.chat_api import FakeReasoningAPI  # noqa: E402


def synth(urls: list[str], out: Path, index: Path, args, *extra: str) -> dict:
    cfg = load_config(
        SynthConfig,
        "synth",
        [
            "mode=coa",
            "format=search_r1",
            f"limit={args.questions}",
            f"out={out}",
            f"search.index={index}",
            "search.max_tokens=4000",
            f"teacher.base_url=[{', '.join(urls)}]",
            "teacher.model=fake-reasoner",
            "teacher.retries=1",
            "progress=false",
            *extra,
        ],
        params_file="none",
    )
    return run(cfg)["run"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=48)
    p.add_argument("--latency", type=float, default=0.2, help="seconds per request at each stand-in")
    p.add_argument("--capacity", type=int, default=4, help="requests each stand-in serves at once")
    p.add_argument("--concurrency", type=int, default=16, help="trajectories in flight")
    args = p.parse_args()
    scratch = tempfile.TemporaryDirectory(prefix="bench_teachers_")  # removed at exit
    tmp = Path(scratch.name)
    index = build_index(DEFAULT_CORPUS, tmp / "index", show_progress=False)
    chat = ["teacher.api=chat", f"concurrency={args.concurrency}"]

    slow = dict(latency_s=args.latency, capacity=args.capacity)
    with FakeReasoningAPI(**slow) as a, FakeReasoningAPI(**slow) as b:
        synth([a.url], tmp / "warm", index, args, *chat, "limit=2")  # imports, numba compilation: not timed
        one = synth([a.url], tmp / "one", index, args, *chat)
        two = synth([a.url, b.url], tmp / "two", index, args, *chat)
    rate1, rate2 = one["finished"] / one["wall_s"], two["finished"] / two["wall_s"]
    print(
        f"endpoints ({args.questions} trajectories, 3 requests each, {args.latency}s/request, "
        f"{args.capacity} at once per endpoint, {args.concurrency} in flight):"
    )
    print(f"  one endpoint : {one['finished']} rows in {one['wall_s']:.2f}s = {rate1:.2f} traj/s")
    print(
        f"  two endpoints: {two['finished']} rows in {two['wall_s']:.2f}s = {rate2:.2f} traj/s "
        f"(requests {[e['requests'] for e in two['endpoints'].values()]})"
    )
    print(f"  speed-up {rate2 / rate1:.2f}x (goal >= 1.8x)")

    with FakeReasoningAPI() as api:
        serial = ["concurrency=1"]
        comp = synth([api.url], tmp / "comp", index, args, "teacher.api=completions", *serial)
        native = synth([api.url], tmp / "chat", index, args, "teacher.api=chat", "teacher.tools=native", *serial)
    per_comp, per_chat = comp["wall_s"] / comp["finished"], native["wall_s"] / native["finished"]
    print(f"overhead per trajectory (no server latency, one at a time, {args.questions} trajectories each):")
    print(f"  completions: {per_comp * 1000:.1f} ms  ({comp['teacher_calls']} calls)")
    print(
        f"  chat native: {per_chat * 1000:.1f} ms  ({native['teacher_calls']} calls)  "
        f"= {per_chat / per_comp:.2f}x, +{(per_chat - per_comp) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
