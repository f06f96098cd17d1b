"""How every entry point reports bad input: one line on stderr naming what is wrong, exit code 2.

    @entry_point("curate")
    def main(argv=None) -> int: ...

    with reading(path):              # any failure while reading names the file
        table = pq.read_table(path)

Bad input is what the person running the command can fix: a setting, a file, the environment (an
unreachable server they named). It arrives as ``ValueError`` (``BadInput`` and pyarrow's, JSON's and
``UnicodeDecodeError`` are ValueErrors) or ``OSError`` (missing, unreadable or unwritable paths, refused
connections). An engine's error (``coa.engines``: ``EngineFatal`` 2, ``EngineUnavailable`` and a request it
could not serve 3) is one line with the exit code it carries (``exit_code``). Anything else is a bug and
keeps its traceback. ``COA_DEBUG=1`` shows the traceback of bad input and engine errors too.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

EXIT_BAD_INPUT = 2
DEBUG_ENV = "COA_DEBUG"


class BadInput(ValueError):
    """Input the person running the command can fix; the message names it and, where useful, the fix."""


BAD_INPUT = (ValueError, OSError)


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(prog: str, error: BaseException | str) -> str:
    """``prog: message`` on one line (the prefix is not repeated when the message already starts with it)."""
    message = " ".join(part.strip() for part in str(error).splitlines() if part.strip()) or type(error).__name__
    return message if message.startswith((f"{prog}:", f"{prog}.")) else f"{prog}: {message}"


def report(prog: str, error: BaseException | str) -> int:
    """Print ``error`` as one line on stderr; the exit code for bad input."""
    print(one_line(prog, error), file=sys.stderr)
    return EXIT_BAD_INPUT


def entry_point(prog: str) -> Callable:
    """Decorate an entry point's ``main``: bad input becomes one line and exit code 2 (unless COA_DEBUG);
    SIGTERM and SIGHUP unwind it like Ctrl-C (``signals_unwind``), so its ``finally`` blocks stop the servers
    it started; if ``main`` lets ``Terminated`` through, one line and exit code 128 + the signal's number."""

    def wrap(main: Callable[..., int | None]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                with signals_unwind():
                    return main(*args, **kwargs) or 0
            except Terminated as e:  # SIGTERM/SIGHUP that main let through: its finally blocks have run
                print(one_line(prog, f"stopped by {e}"), file=sys.stderr)
                return 128 + e.signum
            except SystemExit as e:  # cli(): --help / --print-config (0) or bad settings (2, message printed)
                return e.code if isinstance(e.code, int) else int(e.code is not None)
            except BAD_INPUT as e:
                if debugging():
                    raise
                return report(prog, e)
            except RuntimeError as e:  # an engine's error (coa.engines) names its exit code: 2 fatal, 3 stopped
                code = getattr(e, "exit_code", None)
                if not isinstance(code, int) or debugging():
                    raise
                print(one_line(prog, e), file=sys.stderr)
                return code

        return run

    return wrap


@contextmanager
def reading(path: str | Path, what: str = "a readable parquet file") -> Iterator[None]:
    """Any failure inside the block (a reader's own error types included) becomes ``BadInput`` naming
    ``path``: readers such as polars raise errors that name neither the file nor a standard type."""
    try:
        yield
    except BadInput:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BadInput(f"{path}: not {what} ({first})") from e


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the main thread was: it unwinds like Ctrl-C (code that handles
    Ctrl-C handles it too), so ``finally`` blocks and context managers stop the servers they started;
    the default action of these signals ends the process without running any of them."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _not_an_unretrieved_signal(record: logging.LogRecord) -> bool:
    """asyncio's log filter: a task the signal landed in keeps ``Terminated`` as its exception, and asyncio logs it
    with a traceback when the task is freed; the entry point has already said it in one line."""
    return not (record.exc_info and isinstance(record.exc_info[1], Terminated))


@contextmanager
def signals_unwind() -> Iterator[None]:
    """Inside the block SIGTERM and SIGHUP raise ``Terminated`` once; later ones are ignored, so they do not
    cut short the cleanup the first one started (SIGKILL still ends it, and ``coa.procs`` servers go with the
    process). Only in the main thread, and only where the signal had its default action (``nohup`` keeps
    SIGHUP ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = {}

    def unwind(signum, frame):
        for s in installed:
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    previous_hook = sys.unraisablehook

    def redeliver(unraisable) -> None:
        # a signal that lands while a finalizer (``__del__``) runs raises there, where Python swallows the
        # exception: send it again from another thread, so it is raised once the finalizer (and this hook,
        # where it would be swallowed too) has returned
        if isinstance(unraisable.exc_value, Terminated):
            signal.signal(unraisable.exc_value.signum, unwind)
            again = threading.Timer(0.01, os.kill, (os.getpid(), unraisable.exc_value.signum))
            again.daemon = True
            again.start()
            return
        previous_hook(unraisable)

    for s in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(s) is signal.SIG_DFL:
            installed[s] = signal.signal(s, unwind)
    sys.unraisablehook = redeliver
    # left in place on exit: the task holding the signal may be freed after the block
    logging.getLogger("asyncio").addFilter(_not_an_unretrieved_signal)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for s, previous in installed.items():
            signal.signal(s, previous)
