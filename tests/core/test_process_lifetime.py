"""Issue 35 (5): no server outlives the process that started it, and a server already on a port is reused only
when it serves the same model.

Reported: SIGTERM (or ``timeout``) to ``python -m synth.run … teacher.kind=llm`` left the vLLM API server, its
EngineCore and Worker (~3.9 GB) serving the port with parent PID 1, and the next run silently reused them.
Measured here: a SIGKILLed vLLM API server leaves its EngineCore and Worker running (they are not named after
the port: the leftovers are found as the run's descendants, recorded before the signal, and by cmdline).

The first tests use a small stand-in server whose grandchild ignores SIGTERM (a stuck engine worker) and run
in seconds; the last ones start the real embedded vLLM engine through the real entry points.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import psutil
import pytest

from coa.errors import BadInput, Terminated, signals_unwind
from coa.procs import Server, ServerFailed, free_port, free_ports, is_up, port_problem
from coa.questions import DEFAULT_QUESTIONS
from coa.search.__main__ import main as search_main
from tests.fixtures.local_http import LocalServer
from synth.serve import VLLMServerConfig, start_engine

ROOT = Path(__file__).resolve().parents[2]

# a server whose child ignores SIGTERM, as a stuck engine worker would: only SIGKILL to the group ends it
STUBBORN_SERVER = textwrap.dedent("""
    import signal, subprocess, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    port = int(sys.argv[1])
    subprocess.Popen([sys.executable, "-c", "import signal, time\\n"
                      "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\nwhile True: time.sleep(1)", f"worker-{port}"])
    class Health(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
    HTTPServer(("127.0.0.1", port), Health).serve_forever()
""")


def alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:  # a zombie holds no memory and no port
                out.append(f"{p.pid} {' '.join(p.cmdline())[:100]}")
        except psutil.NoSuchProcess:
            pass
    return out


def naming(port: int) -> list[psutil.Process]:
    """Processes whose command line mentions the port (the guard, the server)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(port) in " ".join(p.info["cmdline"] or []) and p.pid != os.getpid():
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def wait_gone(procs: list[psutil.Process], port: int, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = alive(procs) + alive(naming(port))
        if not left:
            return []
        time.sleep(0.2)
    for p in procs + naming(port):  # leave nothing behind for the next test, whatever happened
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return left


def stubborn_cmd(port: int) -> list[str]:
    return [sys.executable, "-c", STUBBORN_SERVER, str(port)]


# ---- Server: stop, death of the parent, signals to an entry point -------------------------------------
def test_stop_takes_down_a_grandchild_that_ignores_sigterm():
    port = free_port()
    server = Server(stubborn_cmd(port), f"http://127.0.0.1:{port}/", grace=1).start(30)
    tree = psutil.Process(server.proc.pid).children(recursive=True)
    assert any(f"worker-{port}" in " ".join(p.cmdline()) for p in tree)
    server.stop()
    assert server.proc.returncode == -signal.SIGTERM
    assert wait_gone(tree, port, 10) == []


SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    from coa.errors import entry_point
    from coa.procs import Server

    @entry_point("demo")
    def main():
        port = int(sys.argv[1])
        server = Server([sys.executable, "-c", sys.argv[2], str(port)], f"http://127.0.0.1:{port}/", grace=1).start(30)
        try:
            print("up", flush=True)
            time.sleep(600)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal while cleaning up must not cut it short
            server.stop()
            print("stopped", flush=True)

    sys.exit(main())
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_a_signalled_entry_point_leaves_no_process(sig):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(port), STUBBORN_SERVER],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as a shell starts it: under `nohup pytest` SIGHUP would be inherited ignored, and kept so by design
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )
    tree = []
    try:
        assert proc.stdout.readline().strip() == "up", proc.stderr.read()
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert any(f"worker-{port}" in " ".join(p.cmdline()) for p in tree)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        left = wait_gone(tree, port, 15)
    if sig == signal.SIGKILL:  # no finally runs: the guard notices its parent died and stops the group
        assert proc.returncode == -signal.SIGKILL
    else:  # a normal exit: the finally block ran to its end, one line says why
        assert (proc.returncode, out.strip(), err.strip()) == (128 + sig, "stopped", f"demo: stopped by {sig.name}")
    assert left == []


def test_a_server_that_dies_while_starting_is_one_line_with_its_last_error(tmp_path):
    crash = "import sys; print('loading'); print('ValueError: no config.json in /models/x'); sys.exit(1)"
    log, port = tmp_path / "server.log", free_port()
    with pytest.raises(ServerFailed) as e:
        Server([sys.executable, "-c", crash], f"http://127.0.0.1:{port}/", log=log).start(30)
    assert str(e.value) == (
        f"the server exited with code 1 before answering at http://127.0.0.1:{port}/ "
        f"({sys.executable} -c {crash} ...); in its log {log}: ValueError: no config.json in /models/x"
    )


def test_a_signal_while_waiting_for_the_server_stops_it():
    port = free_port()
    server = Server(stubborn_cmd(port), f"http://127.0.0.1:{free_port()}/", grace=1)  # never ready: nobody there
    with signals_unwind():
        timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        try:
            with pytest.raises(Terminated):
                server.start(60)
        finally:
            timer.cancel()
    assert server.proc.poll() is not None
    assert wait_gone([], port, 10) == []


class SignalledWhileFinalizing:
    """An object whose finalizer is running when SIGTERM is handled: the signal's exception is raised inside
    ``__del__``, where Python swallows it (this is how an llvmlite finalizer ate an evaluation's SIGTERM)."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100_000):  # the handler runs here, between bytecodes of the finalizer
            pass


def test_a_signal_swallowed_by_a_finalizer_is_raised_after_it(capsys):
    hook = sys.unraisablehook
    with signals_unwind():
        with pytest.raises(Terminated):
            finalizing = SignalledWhileFinalizing()
            del finalizing
            time.sleep(5)  # without the redelivery the run would go on: the signal was used up in __del__
    assert "Exception ignored" not in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and sys.unraisablehook is hook


def test_a_signal_inside_an_asyncio_task_is_not_logged_as_an_unretrieved_exception(caplog):
    # the task the signal lands in keeps Terminated as its exception, which nobody retrieves once the run unwinds;
    # asyncio would log it with a traceback after the entry point's one line
    async def signalled() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(5)

    async def run() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(signalled())
            group.create_task(asyncio.sleep(5))

    with signals_unwind():
        with pytest.raises(Terminated):
            asyncio.run(run())
    gc.collect()
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


# ---- reuse of a server already on the port -------------------------------------------------------------
class FakeVLLM(LocalServer):
    """``/health`` and ``/v1/models`` as vLLM answers them (``models=None``: no /v1/models, 404)."""

    def __init__(self, models: list[dict] | None):
        body = json.dumps({"object": "list", "data": models}).encode() if models is not None else None

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                status, data = (
                    (200, b"")
                    if self.path == "/health"
                    else ((200, body) if self.path == "/v1/models" and body is not None else (404, b"{}"))
                )
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(Handler)


def card(name: str, root) -> dict:
    return {"id": name, "object": "model", "root": str(root), "max_model_len": 4096}


def test_a_server_with_the_same_model_is_reused_and_says_so(model_dir, capsys):
    with FakeVLLM([card("SmolLM2-135M-Instruct", model_dir)]) as fake:
        cfg = VLLMServerConfig(model=str(model_dir), port=fake.port)
        assert start_engine(cfg) is None
    assert capsys.readouterr().err.strip() == (
        f"reusing the vLLM server already on 127.0.0.1:{fake.port} (SmolLM2-135M-Instruct from {model_dir}); "
        f"this run did not start it and leaves it running"
    )


@pytest.mark.parametrize("served", [("SmolLM2-135M-Instruct", "/elsewhere/other-model"), ("other", None)])
def test_a_server_with_another_model_is_refused_in_one_line(model_dir, served):
    name, root = served
    with FakeVLLM([card(name, root or model_dir)]) as fake:
        with pytest.raises(BadInput) as e:
            start_engine(VLLMServerConfig(model=str(model_dir), port=fake.port))
    assert str(e.value) == (
        f"127.0.0.1:{fake.port} already serves {name!r} from {root or model_dir}, not 'SmolLM2-135M-Instruct' from "
        f"{model_dir}: stop that server or choose another port (port=N; serve.port=N for synth.run)"
    )


def test_something_else_on_the_port_is_refused(model_dir):
    with (
        FakeVLLM(None) as fake,
        pytest.raises(
            BadInput,
            match=(rf"^127.0.0.1:{fake.port} answers /health but not /v1/models like a vLLM server: stop what listens"),
        ),
    ):
        start_engine(VLLMServerConfig(model=str(model_dir), port=fake.port))


# ---- a port already in use -------------------------------------------------------------------------------
def test_free_ports_are_distinct_and_free():
    ports = free_ports(64)
    assert len(set(ports)) == 64 and all(port_problem("127.0.0.1", p) is None for p in ports)


@pytest.fixture
def taken_port():
    """A port something listens on and never answers HTTP."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_synth_serve_on_a_port_in_use_exits_2_in_one_line(taken_port):
    proc = subprocess.run(
        [sys.executable, "-m", "synth.serve", f"port={taken_port}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COA_PARAMS": "none"},
    )
    assert (proc.returncode, proc.stderr.strip()) == (
        2,
        (
            f"synth.serve: port {taken_port} on 127.0.0.1 is already in use: choose another port "
            f"(port=N; serve.port=N for synth.run) or stop what listens there"
        ),
    )


def test_search_serve_on_a_port_in_use_exits_2_naming_the_port(taken_port, index_dir, capsys):
    assert search_main(["serve", "--index", str(index_dir), "--port", str(taken_port)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"python -m coa.search: port {taken_port} on 127.0.0.1 is already in use: choose another port (--port N) "
        f"or stop what listens there"
    )


# ---- the real entry points with the real embedded vLLM engine ---------------------------------------------
# more work than can end before the signal lands: on 2 busy cores the health check can time out for as long as a
# short run takes, and a run that already exited cannot be signalled
ROWS_BEFORE_THE_SIGNAL = 64


def entry_point_cmd(which: str, port: int, index_dir, tmp_path) -> list[str]:
    if which == "synth.run":
        return [
            sys.executable,
            "-m",
            "synth.run",
            "mode=coa",
            f"limit={ROWS_BEFORE_THE_SIGNAL}",
            "teacher.kind=llm",
            f"serve.port={port}",
            f"serve.log={tmp_path / 'vllm.log'}",
            f"search.index={index_dir}",
            f"out={tmp_path / 'out'}",
            "progress=false",
        ]
    return [
        sys.executable,
        "-m",
        "evaluate.run",
        "name=lifetime",
        "model=base",
        "engine=server",
        f"port={port}",
        f"questions=[{DEFAULT_QUESTIONS}]",
        f"limit={ROWS_BEFORE_THE_SIGNAL}",
        f"search.index={index_dir}",
        f"out_root={tmp_path / 'eval'}",
    ]


@pytest.mark.model
@pytest.mark.server
@pytest.mark.slow
# each starts vLLM (~1-3 min on 2 cores): both commands and both signals, in two runs rather than four
@pytest.mark.parametrize(
    "which, sig",
    [("synth.run", signal.SIGKILL), ("evaluate.run", signal.SIGTERM)],
    ids=["synth.run-SIGKILL", "evaluate.run-SIGTERM"],
)
def test_signalled_run_leaves_no_vllm_process(which, sig, model_dir, index_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "COA_PARAMS": "none", "HF_HUB_OFFLINE": "1"}
    env.pop("COA_DEBUG", None)
    proc = subprocess.Popen(
        entry_point_cmd(which, port, index_dir, tmp_path),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    tree = []
    try:
        deadline = time.monotonic() + 400
        while not is_up(f"http://127.0.0.1:{port}/health", timeout=5):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the embedded engine did not start"
            time.sleep(1)
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert any("EngineCore" in p.name() for p in tree), alive(tree)  # the grandchildren that outlived the run
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        left = wait_gone(tree, port, 60)
    if sig == signal.SIGTERM:  # a normal exit after stopping the engine: one line, no traceback
        assert proc.returncode in (130, 143) and "Traceback" not in err, err[-3000:]
    assert left == []
    assert not is_up(f"http://127.0.0.1:{port}/health", timeout=1)
