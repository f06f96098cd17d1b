"""Issue 35 (18): ``python -m data_cards.publish`` against a Hub endpoint that fails, each reproduced with the
local Hub-protocol server (``fake_hub.py``): a 500 or a 404 where the token is checked (it was reported as
a refused token), an endpoint that never answers (it waited forever) and a 500 once the upload has begun.
The sets are empty (the card alone is published), so each run takes a few seconds."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.data_cards.conftest import ROOT, hub_env


@pytest.fixture(autouse=True)
def _no_faults_left(hub):
    yield
    hub.clear_faults()


def publish(hub, sets, repo: str, *more: str, timeout: float = 120) -> subprocess.CompletedProcess:
    argv = [
        sys.executable,
        "-m",
        "data_cards.publish",
        f"repo_id={repo}",
        f"sets_dir={sets}",
        f"curate_dir={sets.parent}",
        f"index={sets.parent / 'none'}",
        f"params_file={ROOT / 'params.yaml'}",
        f"dvc_lock={ROOT / 'dvc.lock'}",
        *more,
    ]
    env = {**hub_env(hub), "COA_PARAMS": "none"}
    env.pop("COA_DEBUG", None)
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("status", [500, 404])
def test_an_endpoint_failing_at_whoami_is_named_not_the_token(hub, empty_sets, status):
    hub.fail(r"^/api/whoami-v2$", status, times=10)  # more than any retry
    proc = publish(hub, empty_sets, f"tester/whoami-{status}")
    line = one_line(proc)
    assert proc.returncode == 2
    assert line.startswith(f"publish: {hub.url}/api/whoami-v2 answered {status}")
    assert "HF_ENDPOINT" in line and "token" not in line.replace("the token was not checked", "")
    assert f"tester/whoami-{status}" not in hub.repos and hub.token not in proc.stdout + proc.stderr


def test_an_endpoint_answering_a_web_page_is_named_as_no_hub(hub, empty_sets):
    """Issue 48 (8): a 200 with an HTML page at whoami was reported as "not reachable (JSONDecodeError...)"."""
    hub.fail(r"^/api/whoami-v2$", 200, b"<!doctype html><html><body>Welcome</body></html>", times=10)
    proc = publish(hub, empty_sets, "tester/html")
    assert proc.returncode == 2
    assert one_line(proc) == (
        f"publish: {hub.url}/api/whoami-v2 answered with non-JSON (HTML?): HF_ENDPOINT is not a Hub "
        "(unset: huggingface.co); the token was not checked"
    )
    assert "tester/html" not in hub.repos


def test_a_silent_endpoint_times_out_with_one_line(hub, empty_sets):
    hub.hang(r"^/api/whoami-v2$", times=10)
    started = time.monotonic()
    proc = publish(hub, empty_sets, "tester/silent", "timeout_s=2", timeout=90)
    assert time.monotonic() - started < 60
    assert proc.returncode == 2
    assert one_line(proc) == (
        f"publish: {hub.url} did not answer within 2 s (timeout_s=2): check HF_ENDPOINT "
        f"(unset: huggingface.co) and the network, or raise timeout_s"
    )


def test_a_500_during_the_upload_names_the_request_and_commits_nothing(hub, empty_sets):
    repo = "tester/upload-500"
    hub.fail(rf"^/api/datasets/{repo}/commit/", 500, times=10)
    proc = publish(hub, empty_sets, repo)
    line = one_line(proc)
    assert proc.returncode == 1
    assert line.startswith(
        f"publish: publishing to {hub.url}/datasets/{repo}@main failed, nothing was committed: "
        f"POST {hub.url}/api/datasets/{repo}/commit/main answered 500 Internal Server Error "
        f'({{"error": "fake hub: status 500 for /api/datasets/{repo}/commit/main"}})'
    )
    assert "Re-run the same command to finish" in line
    assert [c.summary for c in hub.commits(repo)] == ["initial commit"]


def test_a_silent_endpoint_during_the_upload_times_out(hub, empty_sets):
    repo = "tester/upload-silent"
    hub.hang(rf"^/api/datasets/{repo}/commit/", times=10)
    proc = publish(hub, empty_sets, repo, "timeout_s=2", timeout=120)
    line = one_line(proc)
    assert proc.returncode == 1
    assert f"POST {hub.url}/api/datasets/{repo}/commit/main: no answer within 2 s (timeout_s=2)" in line


def test_timeout_must_be_positive(empty_sets, hub):
    proc = publish(hub, empty_sets, "tester/t", "timeout_s=0")
    assert proc.returncode == 2 and one_line(proc) == "publish: timeout_s must be > 0 (seconds), got 0.0"
