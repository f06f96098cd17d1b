"""Checkpoints and per-stage metrics.

A checkpoint is a plain HF folder: bf16 safetensors, the tokenizer and its chat template (LoRA adapters
are merged first), so the next stage, vLLM and the evaluation load it like the base model. Every stage
writes beside it ``metrics.json`` (summary: data stats, steps, seconds per step, peak memory, last
values) and ``steps.csv`` (one row per logged step: loss, rewards, actions, mask stats) for
``dvc metrics show`` / ``dvc plots show``.
"""
from __future__ import annotations

import csv
import json
import resource
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback


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
        diffs = [name for name, a, b in (
            ("vocabulary", tok.get_vocab(), ref.get_vocab()),
            ("eos_token", tok.eos_token, ref.eos_token),
            ("pad_token", tok.pad_token, ref.pad_token),
            ("chat_template", tok.chat_template, ref.chat_template)) if a != b]
        if diffs:
            raise ValueError(f"checkpoint {path} has another tokenizer than the base model {base} "
                             f"(different {', '.join(diffs)}); train from a checkpoint of {base} or set base_model=")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str | Path, tokenizer):
    # fp32 weights while training (bf16 on CPU trained worse); bf16 mixed precision is the trainer's job
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rows = model.get_input_embeddings().num_embeddings
    if rows < len(tokenizer):
        raise ValueError(f"checkpoint {path}: the model has {rows} embeddings but its tokenizer {len(tokenizer)} "
                         "tokens: the tokenizer belongs to another model")
    return model


def save_checkpoint(model, tokenizer, out: str | Path) -> Path:
    """Merge any LoRA adapter, cast to bf16, save safetensors + tokenizer (with its chat template)."""
    out = Path(out)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # ru_maxrss is in KiB on Linux


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

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "train_runtime" not in logs:  # the final summary row goes to metrics.json instead
            self.rows.append({"step": state.global_step, **{k: v for k, v in logs.items()
                                                             if isinstance(v, (int, float))}})


def write_metrics(out: str | Path, stage: str, log: StepLog, extra: dict) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys = ["step"] + sorted({k for row in log.rows for k in row} - {"step"})
    with open(out / "steps.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(log.rows)
    last = log.rows[-1] if log.rows else {}
    seconds = log.step_seconds
    metrics = {
        "stage": stage,
        "steps": len(seconds),
        "seconds_per_step": sum(seconds) / len(seconds) if seconds else None,
        "peak_rss_gb": round(peak_rss_gb(), 3),
        "last": last,
        **extra,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    return metrics
