"""``CurateConfig``: every setting of ``python -m curate.run`` (``params.yaml`` section ``curate``).

Groups
  step        step, in (``input``), out
  correctness metric, threshold
  filters     finish_reasons, min_actions, max_actions, min_chars, max_chars, max_repeat_frac,
              repeat_min_sentences, min_unique_word_frac, repeat_min_words, allow_repeated_queries
  dedup       near_dup_threshold, minhash_perms, lsh_bands, shingle
  decontam    eval_sets, decontam_threshold
  analyze     trajectories, decision_points, decisions_per_question
  sets        pairs, review, questions, n_pairs, n_coa, n_cot, eval_questions, max_per_question, seed
  running     batch_rows
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from coa import paths
from coa.config import load_config
from coa.score import METRICS

STEPS = ("score", "analyze", "pairs", "sets")
DEFAULT_EVAL_SETS = [
    paths.SPLIT_HELDOUT,
    "data/raw/bamboogle/bamboogle.jsonl.gz",
    "data/raw/autocoa/all_test_data_test.parquet",
]


@dataclass
class CurateConfig:
    step: str = field(default="score", metadata={"help": "score | analyze | pairs | sets"})
    input: list = field(
        default_factory=list,
        metadata={
            "help": (
                f"`in=`: score: trajectory parquet files/folders (default {paths.synth('cot')}, {paths.synth('coa')}); "
                f"analyze, sets: the score step's folder (default {paths.curate('score')}); pairs: branch trajectories "
                f"(default {paths.synth('branch')})"
            )
        },
    )
    out: str = field(default="", metadata={"help": f"output folder; empty = {paths.curate('<step>')}"})

    metric: str = field(
        default="em", metadata={"help": "score that decides correctness: em | f1 | cover_em | autocoa_lenient"}
    )
    threshold: float = field(default=1.0, metadata={"help": "a trajectory is correct when metric >= threshold"})

    finish_reasons: list = field(
        default_factory=lambda: ["answer", ""],
        metadata={"help": "finish reasons that pass ('' = not recorded); others are dropped as unfinished"},
    )
    min_actions: int = field(default=0, metadata={"help": "fewest search calls in a CoA trajectory"})
    max_actions: int = field(default=10, metadata={"help": "most search calls (AutoCoA's search budget is 10)"})
    min_chars: int = field(default=20, metadata={"help": "fewest model-written characters"})
    max_chars: int = field(default=20000, metadata={"help": "most model-written characters"})
    max_repeat_frac: float = field(
        default=0.5, metadata={"help": "most repeated sentences (fraction) before 'repetition'"}
    )
    repeat_min_sentences: int = field(
        default=4, metadata={"help": "the sentence rule needs at least this many sentences"}
    )
    min_unique_word_frac: float = field(
        default=0.2, metadata={"help": "fewest distinct words (fraction) before 'repetition'"}
    )
    repeat_min_words: int = field(
        default=60, metadata={"help": "the distinct-word rule needs at least this many words"}
    )
    allow_repeated_queries: bool = field(default=False, metadata={"help": "keep trajectories that repeat a query"})

    near_dup_threshold: float = field(
        default=0.8, metadata={"help": "estimated Jaccard of word shingles for a near duplicate"}
    )
    minhash_perms: int = field(default=16, metadata={"help": "MinHash permutations (a multiple of lsh_bands)"})
    lsh_bands: int = field(default=8, metadata={"help": "LSH bands (perms / bands rows each)"})
    shingle: int = field(default=3, metadata={"help": "words per shingle"})

    eval_sets: list = field(
        default_factory=lambda: list(DEFAULT_EVAL_SETS),
        metadata={"help": "evaluation question files (FlashRAG jsonl(.gz)/parquet) no training question may match"},
    )
    decontam_threshold: float = field(
        default=85.0, metadata={"help": "fuzzy match score (0-100) that counts as contamination"}
    )

    trajectories: list = field(
        default_factory=list,
        metadata={"help": "analyze, sets: the trajectories that were scored (default: the score step's inputs)"},
    )
    decision_points: str = field(
        default="first", metadata={"help": "first (before the first search) | every (before each)"}
    )
    decisions_per_question: int = field(
        default=1, metadata={"help": "parent trajectories branched per question (0 = all)"}
    )

    pairs: str = field(
        default="", metadata={"help": f"sets: the pairs step's folder (default {paths.curate('pairs')})"}
    )
    review: str = field(
        default=paths.REVIEW,
        metadata={
            "help": "sets: review table (parquet/csv: row_id, decision, corrected_answer; annotate.run action=pull "
            "writes it); empty = no review"
        },
    )
    questions: str = field(
        default=paths.SPLIT_TRAIN,
        metadata={
            "help": "the training pool (coa.questions split): its metadata.type stratifies the sets, and the RL "
            "questions are drawn from it; empty = the embedded HotpotQA"
        },
    )
    n_pairs: int = field(default=1500, metadata={"help": "contrastive pairs in the SFT-1 set"})
    n_coa: int = field(default=5000, metadata={"help": "CoA trajectories in the SFT-2/3 set"})
    n_cot: int = field(default=1000, metadata={"help": "CoT trajectories"})
    eval_questions: int = field(
        default=20, metadata={"help": "questions held out of every set as the curated eval split"}
    )
    max_per_question: int = field(default=4, metadata={"help": "most rows of one question in a set (0 = no limit)"})
    seed: int = field(default=0, metadata={"help": "seeds the question split, sampling and MinHash"})

    batch_rows: int = field(default=200_000, metadata={"help": "rows scored at a time (bounds memory)"})

    def __post_init__(self) -> None:
        if self.step not in STEPS:
            raise ValueError(f"step must be one of {STEPS}, got {self.step!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.decision_points not in ("first", "every"):
            raise ValueError(f"decision_points must be 'first' or 'every', got {self.decision_points!r}")
        for name in ("input", "trajectories", "eval_sets", "finish_reasons"):
            value = getattr(self, name)
            setattr(self, name, [value] if isinstance(value, str) else list(value or []))
        if self.minhash_perms % self.lsh_bands:
            raise ValueError(f"minhash_perms ({self.minhash_perms}) must be a multiple of lsh_bands ({self.lsh_bands})")
        for name in ("batch_rows", "minhash_perms", "lsh_bands", "shingle"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_pairs", "n_coa", "n_cot", "eval_questions", "max_per_question", "min_actions", "max_actions"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_actions > self.max_actions:
            raise ValueError(f"min_actions ({self.min_actions}) > max_actions ({self.max_actions})")

    @property
    def out_dir(self) -> str:
        return self.out or paths.curate(self.step)


ALIASES = {"in": "input"}  # ``in`` is a Python keyword, so the field is ``input``; both are accepted


def load(argv: Sequence[str] = (), params_file=None) -> CurateConfig:
    """``coa.config.load_config`` for this stage, with ``in=`` accepted for ``input``."""
    return load_config(CurateConfig, "curate", argv, params_file, aliases=ALIASES)
