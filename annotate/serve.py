"""``python -m annotate.serve``: Argilla 2.8 (server + web UI) on 127.0.0.1, with its real dependencies.

    python -m annotate.serve                          # start, print the UI URL and users, Ctrl-C stops it all
    python -m annotate.serve action=start             # start in the background (pids in <data_dir>/pids.json)
    python -m annotate.serve action=stop              # stop what action=start started
    python -m annotate.serve action=status            # is it up, and where

What runs (installed by ``./install.sh``; order from the field notes):
  1. ``noida-db`` (PyPI): the Elasticsearch-API search engine, ``--only elasticsearch``
  2. ``redis-server`` (Debian): the job queue; without it argilla-server hangs
  3. ``argilla_server database migrate`` and ``users create_default`` (the owner), in ``.venv-argilla``
     (its own venv: argilla-server's CLI needs click<8.2)
  4. ``argilla_server start`` (API + UI) and ``argilla_server worker`` (background jobs)
  5. annotator users, created through the API with the owner's key

Secrets: the owner's API key and password and the annotators' password come from
``ARGILLA_OWNER_API_KEY``, ``ARGILLA_OWNER_PASSWORD`` and ``ARGILLA_ANNOTATOR_PASSWORD``; a missing one is
generated once and kept in ``<data_dir>/credentials.json`` (mode 0600). They are never printed or logged:
the summary says where each one comes from. Settings: ``ReviewServerConfig`` (``params.yaml`` section
``annotate_server``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from annotate import credentials
from annotate.client import server_up, wait_ready
from coa.config import cli
from coa.errors import entry_point
from coa.procs import require_free_port

ROOT = Path(__file__).resolve().parents[1]
# argilla_server's `users create_default` takes the owner's key and password only as arguments, which any
# user of the machine reads in `ps`: call its function with them from the environment instead
CREATE_OWNER = (
    "import os; from argilla_server.cli.database.users.create_default import create_default; "
    "create_default(api_key=os.environ['COA_OWNER_API_KEY'], password=os.environ['COA_OWNER_PASSWORD'], "
    "quiet=True)"
)


@dataclass
class ReviewServerConfig:
    """Where the review server lives. Ports are on 127.0.0.1 unless ``host`` says otherwise."""

    action: str = field(
        default="run", metadata={"help": "run (foreground, Ctrl-C stops) | start (background) | stop | status"}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address every service binds (loopback by default)"})
    port: int = field(default=6900, metadata={"help": "Argilla API and web UI port"})
    search_port: int = field(default=9210, metadata={"help": "noida-db Elasticsearch-API port"})
    redis_port: int = field(default=6390, metadata={"help": "redis-server port"})
    data_dir: str = field(
        default=".argilla", metadata={"help": "database, search data, logs, pids and generated credentials"}
    )
    venv: str = field(default=".venv-argilla", metadata={"help": "the venv holding argilla-server 2.8.0 and noida-db"})
    annotators: list = field(
        default_factory=lambda: ["annotator"],
        metadata={"help": "annotator usernames to create (all share ARGILLA_ANNOTATOR_PASSWORD)"},
    )
    workspace: str = field(default="argilla", metadata={"help": "workspace the owner and the annotators share"})
    workers: int = field(default=1, metadata={"help": "background job workers (dataset progress updates); 1 is enough"})
    ready_timeout_s: float = field(
        default=120.0, metadata={"help": "seconds to wait for the API to answer before giving up"}
    )

    def __post_init__(self) -> None:
        if self.action not in ("run", "start", "stop", "status"):
            raise ValueError(f"action must be run | start | stop | status, got {self.action!r}")
        for name in ("port", "search_port", "redis_port"):
            if not 0 < int(getattr(self, name)) < 65536:
                raise ValueError(f"{name} must be a TCP port (1-65535), got {getattr(self, name)!r}")
        if len({int(self.port), int(self.search_port), int(self.redis_port)}) < 3:
            raise ValueError(
                f"port, search_port and redis_port must differ, got {self.port}, {self.search_port}, {self.redis_port}"
            )

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}"


class ReviewStack:
    """The four processes, started in order and stopped in reverse. Use as a context manager or
    ``start()`` / ``stop()``; ``pids`` names every process so a separate ``stop`` can find them."""

    def __init__(self, cfg: ReviewServerConfig):
        self.cfg = cfg
        self.data = Path(cfg.data_dir).resolve()
        self.venv = Path(cfg.venv) if Path(cfg.venv).is_absolute() else ROOT / cfg.venv
        self.procs: dict[str, subprocess.Popen] = {}
        self.cold_start_s: float | None = None

    # -- paths and environment ------------------------------------------------------------------
    def _bin(self, name: str) -> str:
        path = self.venv / "bin" / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the review stack is not installed; run ./install.sh")
        return str(path)

    def _env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARGILLA_")}  # no stray settings leak in
        env.update(
            ARGILLA_HOME_PATH=str(self.data),
            ARGILLA_DATABASE_URL=f"sqlite+aiosqlite:///{self.data / 'argilla.db'}",
            ARGILLA_SEARCH_ENGINE="elasticsearch",
            ARGILLA_ELASTICSEARCH=f"http://{self.cfg.host}:{self.cfg.search_port}",
            ARGILLA_REDIS_URL=f"redis://{self.cfg.host}:{self.cfg.redis_port}/0",
            ARGILLA_ENABLE_TELEMETRY="0",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_OFFLINE="1",
        )
        return env

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.data / "logs" / f"{name}.log", "ab")
        # a session of its own, so stop() can signal the process group (the worker forks children)
        self.procs[name] = subprocess.Popen(
            argv,
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.data,
        )
        log.close()

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = self.data / "logs" / f"{name}.log"
                last = [line for line in log.read_text(errors="replace").splitlines()[-3:] if line.strip()]
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode} during start; its log {log} ends: "
                    + " | ".join(last)[-600:]
                )

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "ReviewStack":
        t0 = time.perf_counter()
        py, redis = self._bin("python"), "/usr/bin/redis-server"
        if not Path(redis).exists():
            raise FileNotFoundError(f"{redis} is missing: the review stack is not installed; run ./install.sh")
        for setting in ("port", "search_port", "redis_port"):
            require_free_port(self.cfg.host, getattr(self.cfg, setting), f"{setting}=N")
        (self.data / "logs").mkdir(parents=True, exist_ok=True)
        secrets = credentials.load_or_create(self.data)
        try:
            self._spawn(
                "search",
                [
                    self._bin("noida-db"),
                    "start",
                    "--data-dir",
                    str(self.data / "search"),
                    "--host",
                    self.cfg.host,
                    "--only",
                    "elasticsearch",
                    "--elasticsearch-port",
                    str(self.cfg.search_port),
                ],
            )
            self._spawn(
                "redis",
                [
                    redis,
                    "--bind",
                    self.cfg.host,
                    "--port",
                    str(self.cfg.redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
            )
            self.init_database(secrets)
            self._spawn(
                "server",
                [
                    py,
                    "-m",
                    "argilla_server",
                    "start",
                    "--host",
                    self.cfg.host,
                    "--port",
                    str(self.cfg.port),
                    "--no-access-log",
                ],
            )
            self._spawn("worker", [py, "-m", "argilla_server", "worker", "--num-workers", str(self.cfg.workers)])
            wait_ready(self.cfg.api_url, secrets["owner_api_key"], self.cfg.ready_timeout_s, self._check_alive)
            credentials.ensure_annotators(self.cfg.api_url, secrets, self.cfg.annotators, self.cfg.workspace)
        except BaseException:
            self.stop()
            raise
        self.cold_start_s = time.perf_counter() - t0
        (self.data / "pids.json").write_text(json.dumps({n: p.pid for n, p in self.procs.items()}))
        return self

    def init_database(self, secrets: dict) -> None:
        """Migrate the database and create the owner. ``argilla.db`` holds the owner's key: 0600 before
        SQLite writes to it (SQLite keeps a file's mode and gives it to its journals)."""
        db = self.data / "argilla.db"
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
        db.chmod(0o600)  # one an earlier version created readable
        owner = {"COA_OWNER_API_KEY": secrets["owner_api_key"], "COA_OWNER_PASSWORD": secrets["owner_password"]}
        for name, argv, env in (
            ("database migrate", ["-m", "argilla_server", "database", "migrate"], self._env()),
            ("users create_default", ["-c", CREATE_OWNER], {**self._env(), **owner}),
        ):
            done = subprocess.run([self._bin("python"), *argv], env=env, cwd=self.data, capture_output=True, text=True)
            if done.returncode:
                tail = credentials.redact(done.stdout + done.stderr, secrets)[-2000:]
                raise RuntimeError(f"argilla_server {name} failed ({done.returncode}):\n{tail}")

    def stop(self) -> None:
        """Reverse order. The worker (and a server stuck without Redis) ignore SIGTERM: SIGKILL them."""
        for name in ("worker", "server", "redis", "search"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                _stop_group(proc.pid, hard=name in ("worker", "server"))
                try:
                    proc.wait(timeout=10)  # reap the leader first: a zombie still counts as a group member
                except subprocess.TimeoutExpired:
                    _stop_group(proc.pid, hard=True)
                    proc.wait(timeout=10)
                _wait_group_gone(proc.pid, 10.0)
        (self.data / "pids.json").unlink(missing_ok=True)

    def __enter__(self) -> "ReviewStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def summary(self) -> str:
        who = credentials.describe(self.data, self.cfg.annotators)
        took = f" (cold start {self.cold_start_s:.1f} s)" if self.cold_start_s else ""
        return f"Argilla UI: {self.cfg.api_url}/{took}\n{who}\nlogs: {self.data / 'logs'}"


def _stop_group(pid: int, hard: bool) -> None:
    try:
        os.killpg(pid, signal.SIGKILL if hard else signal.SIGTERM)
    except ProcessLookupError:
        pass


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    """Children outlive their parent for a moment (noida-db's wrapper execs a binary that saves on
    SIGTERM): wait for the whole group, then SIGKILL what is left."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    _stop_group(pgid, hard=True)


def stop_started(data_dir: str | Path) -> list[str]:
    """Stop the processes an ``action=start`` recorded (each by its own process group id)."""
    pids_file = Path(data_dir) / "pids.json"
    if not pids_file.exists():
        return []
    pids = json.loads(pids_file.read_text())
    for name in ("worker", "server", "redis", "search"):
        if name in pids:
            _stop_group(pids[name], hard=name in ("worker", "server"))
            _wait_group_gone(pids[name], 10.0)
    pids_file.unlink()
    return [n for n in pids]


@entry_point("annotate.serve")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(ReviewServerConfig, "annotate_server", sys.argv[1:] if argv is None else argv, doc=__doc__)
    if cfg.action == "stop":
        stopped = stop_started(cfg.data_dir)
        print(f"stopped: {', '.join(stopped)}" if stopped else f"nothing recorded in {cfg.data_dir}/pids.json")
        return 0
    if cfg.action == "status":
        up = server_up(cfg.api_url)
        print(f"{cfg.api_url}: {'up' if up else 'not answering'}")
        return 0 if up else 1
    stack = ReviewStack(cfg).start()
    print(stack.summary(), flush=True)
    if cfg.action == "start":
        # detach: the processes live on in their own sessions; action=stop ends them
        stack.procs.clear()
        return 0
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while not stopping:
            time.sleep(0.5)
            stack._check_alive()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
