"""``QuestionsConfig``: every setting of ``python -m synth.questions`` (``params.yaml`` section ``questions``).

Groups
  what      proposer (compose | extend | obfuscate), questions (the seeds), hops, min_hops, limit, max_uses, seed
  search    the one search environment: params.yaml's top-level ``search`` (search.index holds the corpus the
            evidence ids point into; search.topk and search.max_actions are the verifiers' search and budget)
  teacher   teacher.* (extend and obfuscate: any OpenAI-compatible server, chat or completions), tokenizer
  verify    verify.* (which verifiers run and how: the closed-book student, the solver's top-k list, the
            evaluation sets, the near-duplicate threshold)
  output    out, overwrite
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coa import paths
from coa.environment import SearchEnvConfig
from coa.formats import FORMAT
from coa.prompts import PromptConfig
from coa.questions import DEFAULT_QUESTIONS
from synth.teacher import TeacherConfig

PROPOSERS = ("compose", "extend", "obfuscate")
LLM_PROPOSERS = ("extend", "obfuscate")
OUT = paths.run_path("questions")
EVAL_SETS = ["data/raw/bamboogle/bamboogle.jsonl.gz", "data/raw/autocoa/all_test_data_test.parquet"]


@dataclass
class VerifyConfig:
    """The verifiers (``synth.questions.verify``): each keeps a question or drops it with a named reason."""

    memory: bool = field(
        default=False,
        metadata={
            "help": "run no-memory-shortcut: the student answers closed-book (memory.k samples); a question it answers "
            "is dropped. Off by default: the 135M student on 2 CPU cores takes ~1 s a sample "
            "(docs/experiments/question_synthesis.md)"
        },
    )
    memory_model: str = field(
        default="base", metadata={"help": "the student: base (the embedded model) or a checkpoint folder"}
    )
    memory_engine: str = field(default="hf", metadata={"help": "hf | vllm (in-process)"})
    memory_k: int = field(default=4, metadata={"help": "closed-book samples per question (pass@k)"})
    memory_temperature: float = field(default=1.0, metadata={"help": "their sampling temperature"})
    memory_max_tokens: int = field(default=96, metadata={"help": "tokens per closed-book answer"})
    solver_topk: list = field(
        default_factory=lambda: [1, 3, 5],
        metadata={
            "help": "top-k values the reference teacher solves each question at (difficulty = 1 - pass rate over "
            "them); solvable = it passes at search.topk"
        },
    )
    eval_sets: list = field(
        default_factory=lambda: list(EVAL_SETS),
        metadata={
            "help": "evaluation question files (FlashRAG form): a question or one of its parts found in one is "
            "dropped (add runs/split/heldout.jsonl when the seeds are a training split)"
        },
    )
    near_duplicate: float = field(
        default=0.8,
        metadata={"help": "MinHash Jaccard estimate (word 3-grams) at which two questions are near duplicates"},
    )
    skip: list = field(
        default_factory=list,
        metadata={
            "help": "verifiers not to run (supported, needs_every_hop, unique, clean, solvable, no_memory_shortcut); "
            "each skipped one is recorded as such in every question's verification"
        },
    )

    def __post_init__(self) -> None:
        if self.memory_engine not in ("hf", "vllm"):
            raise ValueError(f"verify.memory_engine must be hf or vllm, got {self.memory_engine!r}")
        if self.memory_k < 1 or self.memory_max_tokens < 1:
            raise ValueError(
                f"verify.memory_k and verify.memory_max_tokens must be >= 1, got "
                f"{self.memory_k} and {self.memory_max_tokens}"
            )
        if not self.solver_topk or any(not isinstance(k, int) or k < 1 for k in self.solver_topk):
            raise ValueError(f"verify.solver_topk must be a non-empty list of integers >= 1, got {self.solver_topk}")
        if not 0 < self.near_duplicate <= 1:
            raise ValueError(f"verify.near_duplicate must be in (0, 1], got {self.near_duplicate}")


@dataclass
class QuestionsConfig:
    """``python -m synth.questions``: new multi-hop questions from seed questions and a corpus, verified.

    Writes ``out/questions.jsonl`` (FlashRAG form: ``synth.run questions=…`` reads it like any question
    file), ``out/metrics.json`` (counts, drop reasons), ``out/drop_reasons.png`` and ``out/dropped.jsonl``.
    """

    proposer: str = field(
        default="compose",
        metadata={
            "help": "compose (chain and compare seed questions, no LLM) | extend (an LLM adds a hop from a linked "
            "passage) | obfuscate (an LLM rewrites named entities into descriptions from the evidence)"
        },
    )
    questions: str = field(
        default=str(DEFAULT_QUESTIONS),
        metadata={
            "help": "FlashRAG question file of seeds: params.yaml's top-level data.questions (or questions=PATH)",
            "shared": "data.questions",
        },
    )
    hops: int = field(default=4, metadata={"help": "the most hops (evidence documents) of a question"})
    min_hops: int = field(default=3, metadata={"help": "the fewest hops of a question kept"})
    limit: int = field(default=0, metadata={"help": "at most N questions written (in seeded order); 0 = all"})
    max_uses: int = field(
        default=6,
        metadata={
            "help": "compose: at most N new questions per seed question (the embedded set's 145 date-valued seeds "
            "need 6 for 300 questions: docs/experiments/question_synthesis.md)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seeds the order of candidates and the teacher's sampling"})

    search: SearchEnvConfig = field(
        default_factory=SearchEnvConfig,
        metadata={"help": "the search environment: params.yaml's top-level `search` (the index holds the corpus)"},
    )
    format: str = field(default=FORMAT, metadata={"help": "format preset of the verifiers' agent runs"})
    prompt: PromptConfig = field(
        default_factory=PromptConfig,
        metadata={"help": "the student's prompt for the closed-book check (prompt.mode is cot)"},
    )

    teacher: TeacherConfig = field(
        default_factory=TeacherConfig,
        metadata={
            "help": "extend / obfuscate: the LLM (teacher.base_url, teacher.api chat | completions, teacher.model)"
        },
    )
    temperature: float = field(default=0.7, metadata={"help": "the teacher's sampling temperature"})
    max_tokens: int = field(default=1024, metadata={"help": "the teacher's tokens per reply (reasoning included)"})
    concurrency: int = field(default=8, metadata={"help": "teacher requests in flight"})
    tokenizer: str = field(
        default="",
        metadata={
            "help": "tokenizer folder for the teacher's prompts (completions: its chat template); empty = the embedded model's"
        },
    )

    verify: VerifyConfig = field(default_factory=VerifyConfig, metadata={"help": "the verifiers"})

    out: str = field(default=OUT, metadata={"help": "output folder: questions.jsonl, metrics.json, drop_reasons.png"})
    overwrite: bool = field(
        default=False,
        metadata={"help": "write into a non-empty out folder synth.questions did not write (same-name files replaced)"},
    )

    def __post_init__(self) -> None:
        if self.proposer not in PROPOSERS:
            raise ValueError(f"proposer must be one of {', '.join(PROPOSERS)}, got {self.proposer!r}")
        if not 2 <= self.min_hops <= self.hops:
            raise ValueError(f"need 2 <= min_hops <= hops, got min_hops={self.min_hops}, hops={self.hops}")
        if self.hops > 8:
            raise ValueError(f"hops must be <= 8 (a composed question's text grows with each hop), got {self.hops}")
        for name in ("limit",):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_uses", "concurrency", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.proposer in LLM_PROPOSERS and not self.teacher.urls:
            raise ValueError(
                f"proposer={self.proposer} needs an LLM: teacher.base_url=http://HOST:PORT/v1 "
                "(a vLLM server: python -m synth.serve …; or a hosted API with teacher.api=chat "
                "teacher.model=NAME teacher.api_key_env=VAR)"
            )
        self.prompt.format, self.prompt.mode = self.format, "cot"
