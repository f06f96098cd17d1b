"""``ReviewConfig``: every setting of ``python -m annotate.run`` (``params.yaml`` section ``annotate``).

Groups
  action    action (push | pull | status)
  server    api_url, data_dir (where ``annotate.serve`` keeps the generated key), workspace, timeout_s
  push      sets_dir, sets, dataset_prefix, metric, threshold, observation_chars, max_steps, min_submitted,
            batch_size
  pull      review, known_rows, min_submitted

Secrets never live here (``--print-config`` shows this): the API key comes from ``ARGILLA_API_KEY`` /
``ARGILLA_OWNER_API_KEY`` or ``<data_dir>/credentials.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coa import paths

ACTIONS = ("push", "pull", "status")
MAX_BATCH = 500  # the server takes 1,000 a bulk call, but the SDK's bulk_upsert refuses more than 500


@dataclass
class ReviewConfig:
    action: str = field(
        default="status", metadata={"help": "push (sets → Argilla) | pull (answers → review table) | status"}
    )
    api_url: str = field(
        default="http://127.0.0.1:6900", metadata={"help": "the Argilla server (python -m annotate.serve)"}
    )
    data_dir: str = field(
        default=".argilla", metadata={"help": "annotate.serve's data folder, read for the generated owner key"}
    )
    workspace: str = field(default="argilla", metadata={"help": "Argilla workspace holding the review datasets"})
    timeout_s: int = field(default=120, metadata={"help": "seconds one HTTP call may take"})

    sets_dir: str = field(
        default=paths.curate("sets"), metadata={"help": "the curate sets step's folder ({name}.parquet)"}
    )
    sets: list = field(
        default_factory=lambda: ["coa", "cot", "pairs"],
        metadata={
            "help": "sets to review, one Argilla dataset each; 'pairs' holds contrastive pairs, the others trajectories"
        },
    )
    dataset_prefix: str = field(default="autocoa-", metadata={"help": "Argilla dataset name = prefix + set name"})
    metric: str = field(
        default="em", metadata={"help": "the score shown as the scorers' suggestion (agent = this name)"}
    )
    threshold: float = field(default=1.0, metadata={"help": "the suggestion says accept when metric >= threshold"})
    observation_chars: int = field(
        default=1500,
        metadata={
            "help": "an observation longer than this is cut for review (Argilla holds a field to 20,000 characters)"
        },
    )
    max_steps: int = field(
        default=40,
        metadata={
            "help": "the most steps a pushed record may have; a new dataset's 'first bad step' labels run 1..its longest record"
        },
    )
    min_submitted: int = field(
        default=1,
        metadata={"help": "reviewers needed per record (Argilla's task distribution; fixed once any answer exists)"},
    )
    batch_size: int = field(
        default=500, metadata={"help": "records per bulk upsert call (at most 500, the SDK's upsert limit)"}
    )

    review: str = field(
        default=paths.REVIEW,
        metadata={
            "help": "pull writes the review table here (row_id, decision, corrected_answer, reviewer counts) + metrics.json"
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "pull into a non-empty folder that pull did not write (files of the same name are replaced)"},
    )
    known_rows: list = field(
        default_factory=lambda: [f"{paths.curate('score')}/scores.parquet", f"{paths.curate('pairs')}/pairs.parquet"],
        metadata={
            "help": "parquet files whose ids a review may name besides the sets "
            "(a rejected row leaves the set but stays here); missing files are skipped"
        },
    )

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {self.action!r}")
        if not 1 <= int(self.batch_size) <= MAX_BATCH:
            raise ValueError(
                f"batch_size must be 1..{MAX_BATCH} (the SDK's bulk upsert limit), got {self.batch_size!r}"
            )
        if int(self.min_submitted) < 1:
            raise ValueError(f"min_submitted must be >= 1, got {self.min_submitted!r}")
        if int(self.max_steps) < 3:
            raise ValueError(f"max_steps must be >= 3 (Argilla shows at least 3 labels), got {self.max_steps!r}")
        if not self.sets:
            raise ValueError("sets is empty; name at least one of coa, cot, pairs")
        for name in self.sets:  # <sets_dir>/<name>.parquet
            paths.file_name(name, "sets")

    def kind(self, name: str) -> str:
        return "pairs" if name == "pairs" else "trajectories"

    def dataset_name(self, name: str) -> str:
        return f"{self.dataset_prefix}{name}"
