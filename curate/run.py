"""``python -m curate.run step=score|analyze|pairs|sets key=value ...``

    python -m curate.run step=score in=[runs/synth/cot,runs/synth/coa]      # → runs/curate/score
    python -m curate.run step=analyze                                        # 2×2, plots, decision points
    python -m curate.run step=pairs in=runs/synth/branch                     # prefix-matched pairs
    python -m curate.run step=sets review=review.csv                         # pairs / coa / cot sets

Settings: ``curate/config.py`` (``params.yaml`` section ``curate``; ``key=value`` overrides it);
``--help`` lists every key, ``--print-config`` prints the resolved settings. Every step writes parquet
and a ``metrics.json`` into ``out`` (default ``runs/curate/<step>``), which must be new, empty or written by
the same step before (its ``.autocoa-owner.json``); ``overwrite=true`` writes into another folder, replacing
files of the same name and deleting nothing. Exit codes: 0 done, 2 bad settings or input (one line naming
the file and column; ``COA_DEBUG=1`` for a traceback).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from coa.config import cli
from coa.errors import entry_point
from coa.io import owned_files
from curate import analyze, pairs, score, sets
from curate.config import ALIASES, CurateConfig


@dataclass
class CurateRunConfig(CurateConfig):
    """``CurateConfig`` plus what only the command line decides: where it may write."""

    overwrite: bool = field(
        default=False,
        metadata={
            "help": "write into a non-empty out folder the step did not write (same-name files replaced, nothing deleted)"
        },
    )


@entry_point("curate")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(CurateRunConfig, "curate", sys.argv[1:] if argv is None else argv, __doc__, aliases=ALIASES)
    step = {"score": score, "analyze": analyze, "pairs": pairs, "sets": sets}[cfg.step]
    with owned_files(cfg.out_dir, f"curate.run step={cfg.step}", "overwrite=true", cfg.overwrite):
        step.run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
