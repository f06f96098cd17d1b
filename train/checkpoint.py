"""Checkpoints and per-stage metrics.

A checkpoint is a plain HF folder: safetensors in the dtype the weights were trained in (fp32 on CPU;
``save_dtype`` may cast), the tokenizer and its chat template (LoRA adapters are merged first), so the
next stage, vLLM and the evaluation load it like the base model. Every stage writes beside it
``metrics.json`` (summary: data stats, steps, seconds per step, peak memory, last values) and
``steps.csv`` (one row per logged step: loss, rewards, actions, mask stats) for
``dvc metrics show`` / ``dvc plots show``.

Completeness: ``checkpoint_complete.json`` is written last and lists every file with its size;
``check_checkpoint`` refuses a folder without it or with a missing or truncated file, and
``save_checkpoint`` writes into a temporary folder renamed onto the target (``coa.io``), so the
previous checkpoint is only replaced by a complete new one. ``check_start_model`` applies this to any
folder holding a file train.run writes (a checkpoint that lost its marker is refused); another HF model
folder is taken as it is once every safetensors file in it reads whole.

Ownership: a stage replaces ``runs_dir/<stage>`` whole, so ``claim_stage_outputs`` refuses (before any
training) a folder there that train.run did not write: its completion marker (a JSON object listing the
files) or the core's owner marker (``coa.io.OWNER_FILE``) naming train.run make a folder its own.
"""

from __future__ import annotations

import csv
import ctypes
import io
import json
import re
import resource
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from coa.errors import reading
from coa.io import NotOurs, atomic_output, clear_replaced, replaceable, write_json, write_text, written_by
from coa.model import MARKER
from train.attention import VARLEN
from train.attention import register as register_varlen

TOOL = "train.run"  # the owner the core's marker would name


def load_tokenizer(path: str | Path, base: str | Path):
    """The checkpoint's tokenizer, which must be the base model's (same vocabulary and special tokens):
    the curated sets and the prompts were written in that tokenizer's chat format."""
    path, base = Path(path), Path(base)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"checkpoint {path} has no usable tokenizer ({e})") from None
    if path.resolve() != base.resolve():
        ref = AutoTokenizer.from_pretrained(base)
        diffs = [
            name
            for name, a, b in (
                ("vocabulary", tok.get_vocab(), ref.get_vocab()),
                ("eos_token", tok.eos_token, ref.eos_token),
                ("pad_token", tok.pad_token, ref.pad_token),
                ("chat_template", tok.chat_template, ref.chat_template),
            )
            if a != b
        ]
        if diffs:
            raise ValueError(
                f"checkpoint {path} has another tokenizer than the base model {base} "
                f"(different {', '.join(diffs)}); train from a checkpoint of {base} or set base_model="
            )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str | Path, tokenizer, attn_implementation: str = "sdpa"):
    # fp32 weights while training (bf16 on CPU trained worse); bf16 mixed precision is the trainer's job
    if attn_implementation == VARLEN:
        register_varlen()
    with reading(path, "a loadable model folder"):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn_implementation)
    rows = model.get_input_embeddings().num_embeddings
    if rows < len(tokenizer):
        raise ValueError(
            f"checkpoint {path}: the model has {rows} embeddings but its tokenizer {len(tokenizer)} "
            "tokens: the tokenizer belongs to another model"
        )
    return model


def write_checkpoint(model, tokenizer, folder: str | Path, dtype: str = "auto") -> Path:
    """Merge any LoRA adapter, save safetensors (``dtype``: 'auto' keeps the trained dtype) and the
    tokenizer with its chat template into ``folder``; the completion marker goes last."""
    folder = Path(folder)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if dtype != "auto":  # casting a copy would double the memory of a large model: cast in place, at the end
        model = model.to(getattr(torch, dtype))
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    saved_dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != MARKER}
    write_json(folder / MARKER, {"dtype": saved_dtype, "files": files})
    return folder


def save_checkpoint(model, tokenizer, out: str | Path, dtype: str = "auto") -> Path:
    """``write_checkpoint`` into a temporary folder beside ``out``, then renamed onto it."""
    with atomic_output(out, folder=True) as tmp:
        write_checkpoint(model, tokenizer, tmp, dtype)
    return Path(out)


def written_by_train_run(folder: str | Path) -> bool:
    """A folder train.run wrote: its completion marker as ``write_checkpoint`` writes it (a JSON object
    listing the files; the name alone is not enough), or the core's owner marker naming train.run."""
    try:
        files = json.loads((Path(folder) / MARKER).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        files = None
    return isinstance(files, dict) or written_by(folder, TOOL)


def claim_stage_outputs(runs_dir: str | Path, stages: tuple[str, ...]) -> None:
    """Each stage replaces ``runs_dir/<stage>`` whole: refuse a folder there that train.run did not write
    (before anything is trained), and clear old copies of its own that a killed replace left behind."""
    for stage in stages:
        out = Path(runs_dir) / stage
        if not (replaceable(out, TOOL) or written_by_train_run(out)):
            raise NotOurs(
                f"{out}: folder is not empty and train.run did not write it (no {MARKER}): a stage "
                "replaces its output folder whole; move it away, or set runs_dir= to another folder"
            )
        clear_replaced(out, written_by_train_run)


def last_trainer_checkpoint(work: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` that TRL finished writing (``trainer_state.json`` is its last file)."""
    found = [
        (int(p.name.split("-")[1]), p)
        for p in Path(work).glob("checkpoint-*")
        if re.fullmatch(r"checkpoint-\d+", p.name) and (p / "trainer_state.json").is_file()
    ]
    return max(found)[1] if found else None


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def release_free_memory() -> None:
    """Give the allocator's free pages back to the OS after each micro-batch and step (glibc). Measured on rl2
    with the vLLM engine: RSS 9.4-11.0 GB at step end fell to 4.3 GB after malloc_trim; without it the freed
    pages piled up across steps until the default run's rl2 was OOM-killed at 23.9 GB on a 24 GB machine. After
    each micro-batch too: the pages one rollout's forward + backward freed stayed resident under the next's
    (docs/bench_rl_memory.md)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to release this way
        pass


class StepLog(TrainerCallback):
    """Collects every training log row and the wall time of each optimizer step."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.step_seconds: list[float] = []
        self._started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_seconds.append(time.perf_counter() - self._started)
        release_free_memory()

    def on_substep_end(self, args, state, control, **kwargs):  # each micro-batch but a step's last
        release_free_memory()

    def restore(self, checkpoint: Path) -> int:
        """Resuming: the rows logged before ``checkpoint`` (its trainer state); returns its step."""
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
        self.rows = [
            {"step": e["step"], **{k: v for k, v in e.items() if k != "step" and isinstance(v, (int, float))}}
            for e in state.get("log_history", [])
            if "train_runtime" not in e
        ]
        return int(state["global_step"])

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "train_runtime" not in logs:  # the final summary row goes to metrics.json instead
            self.rows.append(
                {
                    "step": state.global_step,
                    **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
                    "peak_rss_gb": round(peak_rss_gb(), 3),
                }
            )  # which step reached the stage's peak


def write_metrics(out: str | Path, stage: str, log: StepLog, extra: dict) -> dict:
    """``steps.csv`` and ``metrics.json`` in ``out``, each written whole or not at all."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys = ["step"] + sorted({k for row in log.rows for k in row} - {"step"})
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(log.rows)
    write_text(out / "steps.csv", table.getvalue())
    last = log.rows[-1] if log.rows else {}
    seconds = log.step_seconds
    metrics = {
        "stage": stage,
        "steps": len(seconds),
        "seconds_per_step": sum(seconds) / len(seconds) if seconds else None,
        "step_seconds": [round(s, 4) for s in seconds],
        "peak_rss_gb": round(peak_rss_gb(), 3),
        **(
            {"peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3)}
            if torch.cuda.is_available()
            else {}
        ),
        "last": last,
        **(
            {"reward_trend": reward_trend([r["reward"] for r in log.rows if "reward" in r])}
            if any("reward" in r for r in log.rows)
            else {}
        ),
        **extra,
    }
    write_json(out / "metrics.json", metrics, default=str)
    return metrics


def reward_trend(rewards: list[float], resamples: int = 2000, seed: int = 0) -> dict:
    """Whether RL moved the training reward: mean of the last quarter of steps minus the first quarter,
    with a 95% bootstrap interval (the steps of each quarter resampled independently)."""
    import numpy as np

    q = len(rewards) // 4
    if q < 1:
        return {"steps": len(rewards), "note": "fewer than 4 logged steps: no trend"}
    first, last = np.asarray(rewards[:q]), np.asarray(rewards[-q:])
    means = {
        "steps": len(rewards),
        "quarter": q,
        "first_quarter": round(float(first.mean()), 4),
        "last_quarter": round(float(last.mean()), 4),
        "difference": round(float(last.mean() - first.mean()), 4),
    }
    if q < 2:  # one step per quarter: resampling it always gives the same step, an interval of width 0
        return means | {"note": "one step per quarter: no interval (8 or more steps give one)"}
    rng = np.random.default_rng(seed)
    diffs = last[rng.integers(0, q, (resamples, q))].mean(1) - first[rng.integers(0, q, (resamples, q))].mean(1)
    return means | {"ci95": [round(float(np.percentile(diffs, 2.5)), 4), round(float(np.percentile(diffs, 97.5)), 4)]}
