"""``python -m evaluate.fidelity``: the world-model fidelity probe of one model.

    python -m evaluate.fidelity model=runs/train/sft3 questions=runs/split/heldout.jsonl index=runs/index out=runs/fidelity/sft3
    python -m evaluate.fidelity model=runs/train/sft2 limit=20 out=/tmp/fid

The model answers the questions in-process (``coa.engines`` ``vllm``, float32, greedy, all questions in one
batch; ``engine=hf`` is the transformers reference) with ``tools="simulated"`` and RL-1's
budget: after each search call the environment opens the observation tag and the model writes the
observation itself, with ``observation_tokens`` of room per search beside ``search.max_tokens``. For every search
call followed by an observation it wrote, the real searcher (params.yaml's ``search``, or ``index=``) runs
the same query; ``evaluate.fidelity_metrics`` compares the two (titles in the corpus and in the real
top-k, gold answer in written vs real, token F1, hallucination) against the index's own corpus.

With tools beyond search (``search.tools``) the simulated environment opens every call's result and the policy
writes it; ``by_tool`` then compares each other tool's written results with the real tool run on the same
arguments (``evaluate.fidelity_metrics.tool_fidelity``: exact, token F1, gold answer in written vs real; for
``python``, the output the policy predicted against the real one).

Writes ``out/fidelity.json`` (the rates, each with n, and the run's settings) and ``out/calls.jsonl``
(every call: question, query, the observation as written, written and real documents). A model that never
searches, or searches and never writes an observation after its call (``search_calls`` says which), gives
n = 0.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from coa import paths
from coa.agent import OBSERVATION_TOKENS, drive, start_episode
from coa.config import cli
from coa.environment import SearchEnvConfig
from coa.errors import entry_point
from coa.formats import FORMAT, FormatPreset, get_format, result_text
from coa.io import write_json, write_text
from coa.model import in_process_dtype, load_policy
from coa.prompts import PromptConfig, render_prompt
from coa.questions import load_questions
from coa.search import DocumentStore
from coa.tools import Observation, tool_label
from evaluate.fidelity_metrics import Call, corpus_store, fidelity, tool_fidelity


@dataclass
class FidelityConfig:
    model: str = field(default=paths.train("sft3"), metadata={"help": "checkpoint folder, or 'base'"})
    questions: str = field(default=paths.SPLIT_HELDOUT, metadata={"help": "FlashRAG question file"})
    limit: int = field(
        default=100,
        metadata={"help": "first N questions (the policy's written observations are its longest rollouts); 0 = all"},
    )
    index: str = field(
        default="",
        metadata={"help": "coa.search index folder (its corpus is the document store); empty = search.index"},
    )
    search: SearchEnvConfig = field(
        default_factory=SearchEnvConfig, metadata={"help": "params.yaml's top-level search (retriever, topk, budgets)"}
    )
    format: str = field(default=FORMAT, metadata={"help": "format preset (params.yaml's top-level format)"})
    prompt: PromptConfig = field(default_factory=PromptConfig, metadata={"help": "the training prompt"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy"})
    engine: str = field(default="vllm", metadata={"help": "vllm (vllm.LLM in-process) | hf (transformers generate)"})
    observation_tokens: int = field(
        default=OBSERVATION_TOKENS,
        metadata={"help": "room per written observation beside search.max_tokens (RL-1's rl1.observation_tokens)"},
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "weights dtype in-process: auto = the serving dtype for vllm (bfloat16 on bf16 hardware), float32 for hf"
        },
    )
    threshold: float = field(default=0.5, metadata={"help": "support threshold of the hallucination rule"})
    out: str = field(default=paths.fidelity("model"), metadata={"help": "output folder"})

    def __post_init__(self) -> None:
        if self.engine not in ("vllm", "hf"):
            raise ValueError(f"engine must be 'vllm' or 'hf', got {self.engine!r}")
        if self.index:
            self.search.index = self.index
        self.prompt = replace(
            self.prompt, format=self.format, tools=list(self.search.tools)
        )  # a copy: the caller's PromptConfig stays


def written_calls(completion: str, fmt: FormatPreset) -> list[tuple[str, str, str]]:
    """(tool, query or the call's JSON, observation text) of every call the model followed with an observation
    of its own (only whitespace between them; a name no tool has as ``coa.tools.UNKNOWN_TOOL``); a call it left
    without one is not a call the probe can compare."""
    steps = [s for s in fmt.parse(completion).steps if not (s.kind == "text" and not s.text.strip())]
    return [
        (tool_label(a.tool or "search"), a.content, b.text)
        for a, b in zip(steps, steps[1:])
        if a.kind in ("search", "call") and b.kind == "observation"
    ]


def other_tools(asked: list[tuple[dict, str, str, str]], box, fmt: FormatPreset) -> dict:
    """``tool_fidelity`` per tool besides search: each written call run for real through the toolbox."""
    out = {}
    for tool in sorted({t for _, t, _, _ in asked if t != "search"}):
        mine = [(q, call, obs) for q, t, call, obs in asked if t == tool]
        prepared = [box.prepare_json(call) for _, call, _ in mine]
        runnable = [c for c in prepared if not isinstance(c, Observation)]
        results = iter(box.run(runnable))
        real = [None if isinstance(c, Observation) else next(results) for c in prepared]
        out[tool] = tool_fidelity(
            [result_text(obs, fmt) for _, _, obs in mine],
            [None if r is None or not r.ok else r.text for r in real],
            [q["golden_answers"] for q, _, _ in mine],
        )
    return out


def observation_body(observation: str, fmt: FormatPreset) -> str:
    """The text of an observation between its tags."""
    start, end = observation.find(fmt.result_open), observation.rfind(fmt.result_close)
    return observation[start + len(fmt.result_open) : end].strip() if 0 <= start < end else observation.strip()


def probe(cfg: FidelityConfig) -> dict:
    fmt = get_format(cfg.format)
    questions = load_questions(cfg.questions, limit=cfg.limit or None)
    store = corpus_store(DocumentStore(cfg.search.index).contents.to_pylist())  # the documents real search can return
    dtype = in_process_dtype(cfg.dtype, cfg.engine)
    engine, tok = load_policy(cfg.model, cfg.temperature, dtype, cfg.engine)
    episodes = [
        start_episode(
            render_prompt(tok, q["question"], cfg.prompt),
            tok,
            prefill=cfg.prompt.prefill,
            tools="simulated",
            question=q,
        )
        for q in questions
    ]
    box = cfg.search.loop_tools(fmt, tokenizer=tok)  # None: search only
    drive(episodes, engine, None, fmt, cfg.search.budget.with_written_observations(cfg.observation_tokens), tools=box)
    every = [(q, *call) for q, ep in zip(questions, episodes) for call in written_calls(ep.completion, fmt)]
    asked = [(q, query, obs) for q, tool, query, obs in every if tool == "search"]
    searcher = cfg.search.searcher()
    real = searcher.search([query for _, query, _ in asked], cfg.search.topk) if asked else []
    calls = [
        Call(
            query,
            fmt.documents(obs),
            [(d.title, d.text) for d in docs],
            q["golden_answers"],
            observation_body(obs, fmt),
        )
        for (q, query, obs), docs in zip(asked, real)
    ]
    search_calls = sum(tool == "search" for ep in episodes for tool, _ in fmt.parse(ep.completion).calls)
    result = {
        "model": cfg.model,
        "questions": cfg.questions,
        "n_questions": len(questions),
        "questions_searched": len({q["id"] for q, _, _ in asked}),
        "format": cfg.format,
        "temperature": cfg.temperature,
        "dtype": dtype,
        "engine": cfg.engine,
        "observation_tokens": cfg.observation_tokens,
        "search": asdict(cfg.search),
        **fidelity(calls, store, cfg.threshold, search_calls),
        "by_tool": other_tools(every, box, fmt) if box is not None else {},
    }
    if box is not None:
        box.close()
    out = Path(cfg.out)
    write_json(out / "fidelity.json", result)
    write_text(
        out / "calls.jsonl",
        "".join(
            json.dumps({"question_id": q["id"], "written_observation": obs, **asdict(c)}) + "\n"
            for (q, _, obs), c in zip(asked, calls)
        ),
    )
    return result


@entry_point("evaluate.fidelity")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(FidelityConfig, "fidelity", sys.argv[1:] if argv is None else argv, __doc__)
    result = probe(cfg)
    print(json.dumps({k: v for k, v in result.items() if k != "search"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
