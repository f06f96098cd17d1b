"""``SynthConfig``: every setting of ``python -m synth.run`` (``params.yaml`` section ``synth``).

Groups
  what      mode, questions, offset, limit, decisions, branches, n
  search    the one search environment: params.yaml's top-level ``search`` (search.index, search.retriever,
            search.retriever_url, search.topk, search.max_actions, search.max_tokens; coa.environment)
  prompting format, prompt.demonstrations, prompt.prefill, prompt.system (prompt.mode follows mode)
  sampling  temperature, top_p, seed
  engine    teacher.* (teacher.kind: llm = any OpenAI-compatible server | reference = templated from evidence
            annotations), reference.*, serve.* (the embedded vLLM CPU teacher), tokenizer
  running   out, concurrency, rows_per_shard, flush_s, progress, retry_errors, check

``kind_follows``: ``teacher.base_url``, ``teacher.api`` or ``teacher.model`` on the command line name an LLM
teacher, so ``teacher.kind`` follows them (params.yaml's ``kind: reference`` would ignore them); the other
LLM keys with ``kind=reference`` are refused (``TeacherConfig``). ``check=true`` validates everything, says
what would run (``check_report``) and starts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

from coa.environment import SearchEnvConfig
from coa.formats import FORMAT
from coa.prompts import PromptConfig
from coa.trajectory import branch_tool
from synth.reference import ReferenceConfig
from synth.serve import VLLMServerConfig
from synth.teacher import TeacherConfig

MODES = ("cot", "coa", "branch")
BRANCH_KINDS = ("forbid", "force")  # the default; force-TOOL forces a call of another enabled tool
PICKS_AN_LLM = ("teacher.base_url", "teacher.api", "teacher.model")  # command-line keys that name an LLM teacher


@dataclass
class SynthTeacherConfig(TeacherConfig):
    """``TeacherConfig`` with synthesis's default kind, the reference teacher (an LLM teacher is named with
    ``teacher.base_url``/``api``/``model``: ``kind_follows``); evaluation's API teacher stays ``llm``."""

    kind: str = "reference"


@dataclass
class SynthConfig:
    mode: str = field(
        default="coa", metadata={"help": "cot (no tool) | coa (real search) | branch (continue decision prefixes)"}
    )
    questions: str = field(
        default="", metadata={"help": "FlashRAG jsonl(.gz) or parquet; empty = the embedded HotpotQA dev set"}
    )
    offset: int = field(default=0, metadata={"help": "skip the first N questions (e.g. to take a held-out slice)"})
    limit: int = field(default=0, metadata={"help": "at most N questions (branch: N decision rows); 0 = all"})
    decisions: str = field(
        default="", metadata={"help": "branch mode: parquet (file or shard folder) of decision rows"}
    )
    branches: list = field(
        default_factory=lambda: list(BRANCH_KINDS),
        metadata={
            "help": "branch kinds to write: forbid (no tool), force (a search), force-TOOL (a call of TOOL, one of "
            "search.tools): e.g. [forbid, force, force-open]"
        },
    )
    n: int = field(default=1, metadata={"help": "samples per question (branch: per decision and kind)"})

    search: SearchEnvConfig = field(
        default_factory=SearchEnvConfig,
        metadata={"help": "the search environment: params.yaml's top-level `search` (index, retriever, topk, budgets)"},
    )

    format: str = field(default=FORMAT, metadata={"help": "format preset: autocoa | search_r1"})
    prompt: PromptConfig = field(
        default_factory=PromptConfig,
        metadata={
            "help": "prompt.demonstrations (one worked example), prompt.prefill (assistant start), prompt.system; prompt.format and prompt.mode follow format and mode"
        },
    )

    temperature: float = field(default=0.7, metadata={"help": "sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling"})
    seed: int = field(default=0, metadata={"help": "base seed; each row's seed derives from it and the row key"})

    teacher: SynthTeacherConfig = field(
        default_factory=SynthTeacherConfig,
        metadata={
            "help": "the teacher: kind=reference (templated from evidence annotations) or kind=llm (an "
            "OpenAI-compatible server, or the embedded vLLM CPU teacher)"
        },
    )
    reference: ReferenceConfig = field(
        default_factory=ReferenceConfig, metadata={"help": "the reference teacher (teacher.kind=reference)"}
    )
    serve: VLLMServerConfig = field(
        default_factory=VLLMServerConfig, metadata={"help": "the embedded engine (used when teacher.base_url is empty)"}
    )
    tokenizer: str = field(
        default="", metadata={"help": "HF tokenizer folder whose chat template renders prompts; empty = serve.model"}
    )

    out: str = field(default="", metadata={"help": "output folder of parquet shards; empty = runs/synth/<mode>"})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "replace the rows in `out` when they were made by another teacher, prompt, environment or "
            "sampling (their fingerprint differs); false = refuse, naming the settings that differ"
        },
    )
    concurrency: int = field(default=16, metadata={"help": "trajectories in flight"})
    rows_per_shard: int = field(default=64, metadata={"help": "write a shard after this many finished rows"})
    flush_s: float = field(default=30.0, metadata={"help": "... or after this many seconds, whichever first"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar (stderr)"})
    retry_errors: bool = field(
        default=True,
        metadata={
            "help": "on a re-run, generate again the rows an engine failure ended (finish reason error or "
            "bad_response; their old rows are replaced); false = keep them as done"
        },
    )
    check: bool = field(
        default=False,
        metadata={
            "help": "validate the settings, resolve the teacher and print what would run; start nothing, write "
            "nothing, exit 0"
        },
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if isinstance(self.branches, str):
            self.branches = [b.strip() for b in self.branches.split(",") if b.strip()]
        if not self.branches or len(set(self.branches)) < len(self.branches):
            raise ValueError(f"branches must list branch kinds, each once, got {self.branches}")
        for kind in self.branches:
            tool = branch_tool(kind)
            if tool is not None and tool not in self.search.tools:
                raise ValueError(
                    f"branches: {kind!r} forces {tool!r}, which is not an enabled tool "
                    f"(search.tools: {', '.join(self.search.tools)})"
                )
        for name in ("n", "concurrency", "rows_per_shard"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("offset", "limit"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.mode != "branch":
            self.prompt.mode = self.mode
        self.prompt = replace(
            self.prompt, format=self.format, tools=list(self.search.tools)
        )  # a copy: the caller's PromptConfig stays

    @property
    def out_dir(self) -> str:
        return self.out or f"runs/synth/{self.mode}"

    @property
    def sampling(self) -> dict:
        """What the ``sampling`` column records (plus each row's own seed)."""
        env = self.search
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": env.max_tokens,
            "max_actions": env.max_actions,
            "topk": env.topk,
            "n": self.n,
        }


def kind_follows(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``teacher.kind=llm`` added when it sets ``teacher.base_url``, ``teacher.api`` or
    ``teacher.model`` but not ``teacher.kind``: a user naming a server, an API or a model expects that teacher,
    whatever kind params.yaml sets (the pipeline's is ``reference``)."""
    keys = {a.split("=", 1)[0].strip() for a in argv if "=" in a}
    if "teacher.kind" in keys or not keys & set(PICKS_AN_LLM):
        return list(argv)
    return [*argv, "teacher.kind=llm"]


def check_report(cfg: SynthConfig) -> str:
    """What ``check=true`` prints: the resolved plan of a valid configuration (nothing is started)."""
    embedded = (
        f"the embedded {cfg.serve.served_name} on vLLM CPU, started on 127.0.0.1:{cfg.serve.port} "
        f"(serve.*; reused if one already serves there)"
    )
    source = (
        f"decisions {cfg.decisions or '(given from Python)'}"
        if cfg.mode == "branch"
        else f"questions {cfg.questions or 'the embedded HotpotQA dev set'}"
    )
    search = cfg.search.retriever_url or f"{cfg.search.retriever} over {cfg.search.index}"
    return "\n".join(
        [
            "synth check: the settings are valid; nothing was started or written",
            f"  mode      {cfg.mode}, format {cfg.format}, n={cfg.n}, offset={cfg.offset}, limit={cfg.limit or 'all'}, "
            f"{source}",
            f"  teacher   {cfg.teacher.describe(embedded)}",
            f"  tokenizer {cfg.tokenizer or cfg.serve.model or 'the embedded SmolLM2-135M-Instruct'}",
            f"  search    {search}, top-{cfg.search.topk}, at most {cfg.search.max_actions} searches and "
            f"{cfg.search.max_tokens} tokens per trajectory",
            f"  out       {cfg.out_dir} (concurrency {cfg.concurrency}, retry_errors={str(cfg.retry_errors).lower()})",
        ]
    )
