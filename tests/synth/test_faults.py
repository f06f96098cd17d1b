"""Faults with real processes: ``kill -9`` of a synthesis run, and a teacher killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coa.procs import Server, free_port, retrieval_server_cmd, running
from coa.trajectory import read_table, row_id
from synth.serve import VLLMServerConfig, vllm_command, vllm_env

pytestmark = [pytest.mark.model, pytest.mark.server, pytest.mark.slow]


def synth_cmd(out: Path, teacher_url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "synth.run",
        "mode=coa",
        "format=search_r1",
        f"out={out}",
        f"teacher.base_url={teacher_url}",
        "teacher.retries=1",
        "rows_per_shard=1",
        "search.max_tokens=96",
        "progress=false",
        "prompt.demonstrations=true",
        "prompt.prefill=<think>\nI need to search.\n<search>",
        *extra,
    ]


def wait_for_rows(out: Path, proc: subprocess.Popen, at_least: int, timeout: float = 240) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = read_table(out).num_rows if out.exists() else 0
        if rows >= at_least:
            return rows
        assert proc.poll() is None, f"synthesis ended early with code {proc.returncode}"
        time.sleep(0.2)
    raise TimeoutError(f"fewer than {at_least} rows in {out} after {timeout}s")


def expected_ids(limit: int, n: int) -> set[str]:
    from coa.questions import DEFAULT_QUESTIONS, load_questions

    return {row_id(q["id"], "coa", s) for q in load_questions(DEFAULT_QUESTIONS, limit=limit) for s in range(n)}


def test_resume_after_kill_9_gives_exactly_the_expected_rows(teacher_url, index_dir, tmp_path):
    """Searches go through a real retrieval server here (the HTTP path)."""
    out, port = tmp_path / "coa", free_port()
    with running(retrieval_server_cmd(index_dir, port), f"http://127.0.0.1:{port}/health", reuse=False):
        cmd = synth_cmd(
            out, teacher_url, "limit=4", "n=2", "concurrency=4", f"search.retriever_url=http://127.0.0.1:{port}"
        )
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_for_rows(out, proc, at_least=2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_with = read_table(out).num_rows
        assert 2 <= killed_with < 8, "the kill did not land mid-run"
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    table = read_table(out)
    ids = table.column("id").to_pylist()
    assert len(ids) == 8 and set(ids) == expected_ids(4, 2)
    assert f"{killed_with} already done" in done.stdout
    assert set(table.column("retriever").to_pylist()) == {"http:k=3"}
    assert not list(out.glob(".*.tmp*"))


def doomed_teacher(model_dir, tmp_path) -> tuple[Server, str]:
    """A second real vLLM teacher, for a test to kill mid-run; and its base URL."""
    cfg = VLLMServerConfig(model=str(model_dir), port=free_port(), log=str(tmp_path / "doomed.log"))
    return Server(vllm_command(cfg), f"{cfg.base_url}/models", log=cfg.log, env=vllm_env(cfg)).start(), cfg.base_url


def test_teacher_killed_mid_run_stops_cleanly_and_a_rerun_finishes(teacher_url, model_dir, index_dir, tmp_path):
    doomed, doomed_url = doomed_teacher(model_dir, tmp_path)
    out = tmp_path / "coa"
    cmd = synth_cmd(out, doomed_url, "limit=4", "concurrency=2", f"search.index={index_dir}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_rows(out, proc, at_least=1)
    finally:
        doomed.kill()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stdout + stderr
    assert "STOPPED EARLY: engine" in stdout and "re-run the same command to finish" in stdout
    kept = read_table(out)
    assert 1 <= kept.num_rows < 4 and "error" not in kept.column("finish_reason").to_pylist()
    rerun = subprocess.run(
        synth_cmd(out, teacher_url, "limit=4", "concurrency=2", f"search.index={index_dir}"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    ids = read_table(out).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 4 and set(ids) == expected_ids(4, 1)
