"""Two endpoints of the real embedded vLLM CPU teacher, one killed mid-run: the run completes on the other
with no trajectory lost or duplicated. The second endpoint is a TCP relay (tests/fixtures/tcp_proxy.py) in
front of the same session server, killed with SIGKILL while requests flow through it: a second vLLM
server would double the load on a 2-core machine for no extra coverage of the fail-over path."""
from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import urlparse

import pytest

from coa.procs import Server, free_port
from coa.trajectory import read_table
from tests.synth.test_faults import expected_ids, synth_cmd, wait_for_rows

pytestmark = [pytest.mark.model, pytest.mark.server, pytest.mark.slow]


def test_an_endpoint_killed_mid_run_loses_and_duplicates_nothing(teacher_url, index_dir, tmp_path):
    port = free_port()
    relay_url = f"http://127.0.0.1:{port}/v1"
    relay = Server([sys.executable, "-m", "tests.fixtures.tcp_proxy", str(port), str(urlparse(teacher_url).port)],
                   f"{relay_url}/models", log=tmp_path / "relay.log").start(timeout=60)
    out = tmp_path / "coa"
    cmd = synth_cmd(out, f"[{relay_url}, {teacher_url}]", "limit=6", "n=2", "concurrency=4",
                    f"search.index={index_dir}", "teacher.backoff_s=600")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_rows(out, proc, at_least=2)
    finally:
        relay.kill()
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stdout + stderr
    ids = read_table(out).column("id").to_pylist()
    assert sorted(ids) == sorted(expected_ids(6, 2))  # every question exactly n times
    run = json.loads((out / "summary.json").read_text())["run"]
    assert run["complete"] and not run["stopped"] and "error" not in run["finish_reasons"]
    endpoints = run["endpoints"]
    assert endpoints[relay_url]["requests"] >= 2 and endpoints[relay_url]["errors"] >= 1
    assert endpoints[teacher_url]["errors"] == 0
    assert endpoints[teacher_url]["requests"] > 0
