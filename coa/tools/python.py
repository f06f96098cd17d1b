"""``python(code)``: run Python 3 code in a bubblewrap sandbox (``coa.tools.sandbox``) and read what it printed.

The observation is stdout, then stderr (a traceback names the code's file ``<python>``), then the limit that
stopped the run, cut to ``python.observation_chars`` (head and tail kept). ``error`` is "" for a clean exit,
else ``exception``, ``wall_time``, ``cpu_time``, ``memory`` or ``output``. Provenance: the exit status, the
limit and the wall seconds. Building the tool checks once that a sandbox starts here; where none can, it
raises ``SandboxUnavailable`` naming what is missing, and no code ever runs unconfined. A batch of calls
runs ``python.workers`` sandboxes at once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from coa.tools import Observation, Tool, ToolContext, register
from coa.tools.sandbox import MAX_CODE_CHARS, RunResult, Sandbox, SandboxSettings


def observation(result: RunResult) -> Observation:
    return Observation(
        result.text(),
        {"exit_code": result.exit_code, "limit": result.limit, "seconds": round(result.seconds, 3)},
        error=result.error,
    )


@register("python")
class PythonTool(Tool):
    description = (
        "Run Python 3 code (standard library only) in a sandbox with no network and no files but /tmp, "
        "and read what it prints. Use print() for every result you need."
    )
    parameters = {
        "type": "object",
        "properties": {
            "code": {
                "type": "string",
                "maxLength": MAX_CODE_CHARS,
                "description": "a complete Python program; print what you want to see",
            }
        },
        "required": ["code"],
        "additionalProperties": False,
    }
    batched = True

    def __init__(self, settings: SandboxSettings | None = None):
        self.sandbox = Sandbox(settings)

    @classmethod
    def build(cls, ctx: ToolContext) -> "PythonTool":
        return cls(ctx.settings_of("python", SandboxSettings))

    def execute(self, args: dict) -> Observation:
        return observation(self.sandbox.run(args["code"]))

    def execute_batch(self, calls: Sequence[dict]) -> list[Observation]:
        if len(calls) <= 1:
            return [self.execute(args) for args in calls]
        # each run waits on its own bwrap process: threads are enough (and the run must stay in the thread
        # that started bwrap, whose exit would otherwise trigger bwrap's --die-with-parent)
        with ThreadPoolExecutor(min(self.sandbox.settings.workers, len(calls))) as pool:
            return list(pool.map(self.execute, calls))
