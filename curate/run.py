"""``python -m curate.run step=score|analyze|pairs|sets key=value ...``

    python -m curate.run step=score in=[runs/synth/cot,runs/synth/coa]      # → runs/curate/score
    python -m curate.run step=analyze                                        # 2×2, plots, decision points
    python -m curate.run step=pairs in=runs/synth/branch                     # prefix-matched pairs
    python -m curate.run step=sets review=review.csv                         # pairs / coa / cot sets

Settings: ``curate/config.py`` (``params.yaml`` section ``curate``; ``key=value`` overrides it).
Every step writes parquet and a ``metrics.json`` into ``out`` (default ``runs/curate/<step>``).
"""
from __future__ import annotations

import sys

from curate.config import load


def main(argv: list[str] | None = None) -> int:
    cfg = load(sys.argv[1:] if argv is None else argv)
    if cfg.step == "score":
        from curate.score import run
    elif cfg.step == "analyze":
        from curate.analyze import run
    elif cfg.step == "pairs":
        from curate.pairs import run
    else:
        from curate.sets import run
    run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
