"""Two real vLLM CPU servers of the embedded teacher (the session's and one started here), the second killed
with SIGKILL mid-run: the run completes on the first with no trajectory lost or duplicated."""

from __future__ import annotations

import json
import subprocess

import pytest

from coa.trajectory import read_table
from tests.synth.test_faults import doomed_teacher, expected_ids, synth_cmd, wait_for_rows

pytestmark = [pytest.mark.model, pytest.mark.server, pytest.mark.slow]


def test_an_endpoint_killed_mid_run_loses_and_duplicates_nothing(teacher_url, model_dir, index_dir, tmp_path):
    doomed, doomed_url = doomed_teacher(model_dir, tmp_path)
    out = tmp_path / "coa"
    cmd = synth_cmd(
        out,
        f"[{doomed_url}, {teacher_url}]",
        "limit=6",
        "n=2",
        "concurrency=4",
        f"search.index={index_dir}",
        "teacher.backoff_s=600",
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_rows(out, proc, at_least=2)
    finally:
        doomed.kill()
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stdout + stderr
    ids = read_table(out).column("id").to_pylist()
    assert sorted(ids) == sorted(expected_ids(6, 2))  # every question exactly n times
    run = json.loads((out / "summary.json").read_text())["run"]
    assert run["complete"] and not run["stopped"] and "error" not in run["finish_reasons"]
    endpoints = run["endpoints"]
    assert endpoints[doomed_url]["requests"] >= 2 and endpoints[doomed_url]["errors"] >= 1
    assert endpoints[teacher_url]["errors"] == 0
    assert endpoints[teacher_url]["requests"] > 0
