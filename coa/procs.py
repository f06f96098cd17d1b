"""Start a server process on loopback, wait until it answers, reuse one already running, stop it.

Used for the retrieval server and the vLLM engine, by tests (session fixtures) and pipeline stages.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_up(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class Server:
    """A child process serving HTTP; ``health_url`` answers 200 once it is ready."""

    def __init__(self, cmd: Sequence[str], health_url: str, log: str | Path | None = None,
                 env: dict | None = None):
        self.cmd, self.health_url = list(cmd), health_url
        self.log = Path(log) if log else None
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300.0) -> "Server":
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        # own process group: stop() takes the engine's worker processes down with it
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-3000:] if self.log and self.log.exists() else ""
                raise RuntimeError(f"server exited with code {self.proc.returncode}: {' '.join(self.cmd)}\n{tail}")
            if is_up(self.health_url):
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout:.0f}s: {self.health_url}")

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(grace)
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
def running(cmd: Sequence[str], health_url: str, reuse: bool = True, timeout: float = 300.0,
            log: str | Path | None = None, env: dict | None = None) -> Iterator[Server | None]:
    """Reuse a server already answering at ``health_url``; otherwise start one and stop it after."""
    if reuse and is_up(health_url):
        yield None
        return
    server = Server(cmd, health_url, log=log, env=env).start(timeout)
    try:
        yield server
    finally:
        server.stop()


def retrieval_server_cmd(index: str | Path, port: int, host: str = "127.0.0.1", retriever: str = "bm25") -> list[str]:
    return [sys.executable, "-m", "coa.search", "serve", "--index", str(index), "--host", host,
            "--port", str(port), "--retriever", retriever]
