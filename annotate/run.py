"""``python -m annotate.run action=push|pull|status key=value ...``: human review in Argilla.

    python -m annotate.serve                                   # the server (another terminal)
    python -m annotate.run action=push                         # runs/curate/sets/{coa,cot,pairs}.parquet → Argilla
    python -m annotate.run action=status                       # progress per dataset
    python -m annotate.run action=pull                         # answers → data/review/review.parquet
    python -m curate.run step=sets review=data/review/review.parquet   # (dvc repro does this)

A bare first word works too: ``python -m annotate.run push``. Settings: ``annotate/config.py``
(``params.yaml`` section ``annotate``). The API key: ``ARGILLA_API_KEY`` / ``ARGILLA_OWNER_API_KEY``, else
the file ``annotate.serve`` generated in ``data_dir``. A server that is down fails naming its URL (exit 1); push
and pull lose nothing and the same command resumes. Bad settings or input: one line, exit 2.
"""

from __future__ import annotations

import sys

from annotate.client import ServerDown, connect
from annotate.config import ReviewConfig
from annotate.credentials import owner_api_key
from annotate.pull import pull, status
from annotate.push import push
from coa.config import cli
from coa.errors import entry_point, one_line


def execute(cfg: ReviewConfig) -> dict:
    client = connect(cfg.api_url, owner_api_key(cfg.data_dir), cfg.timeout_s)
    return {"push": push, "pull": pull, "status": status}[cfg.action](client, cfg)


@entry_point("annotate")
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and "=" not in argv[0] and not argv[0].startswith("-") and argv[0] != "help":
        argv[0] = f"action={argv[0]}"
    cfg = cli(ReviewConfig, "annotate", argv, doc=__doc__)
    try:
        execute(cfg)
    except ServerDown as e:  # not bad input: the same command resumes once the server is back
        print(one_line(f"annotate {cfg.action}", e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
