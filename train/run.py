"""Train the five AutoCoA stages on TRL: ``python -m train.run stage=STAGE key=value ...``

    python -m train.run stage=sft1                    # when to act: pairs.parquet, the paper's loss
    python -m train.run stage=sft2                    # how to act: coa + cot, observations masked
    python -m train.run stage=sft3                    # world model: observations in the loss
    python -m train.run stage=rl1                     # GRPO, the policy simulates the environment
    python -m train.run stage=rl2 search.index=runs/index  # GRPO, real search (or search.retriever_url=URL)
    python -m train.run stage=rl rl.max_steps=96      # the paper's schedule: rl1 for 5/6 of the steps, then rl2
    python -m train.run stage=rl2 rl.max_steps=12 rl.rl1_fraction=0.75   # rl2's share of a 12-step budget (3:1)

Settings come from ``params.yaml`` (section ``train``, see ``train.config``) and ``key=value``
overrides; dotted keys reach a stage (``sft1.alpha=0.2``, ``rl2.num_generations=4``) or the RL prompt
(``prompt.demonstrations=false``). Each stage reads the curated sets under ``sets_dir``, starts from
the previous stage's checkpoint (``runs_dir/<previous>``; sft1 and ``model=base`` from the base model,
``model=PATH`` from any checkpoint of the same tokenizer) and writes ``runs_dir/<stage>/``: the HF
checkpoint (safetensors in the dtype trained in, tokenizer, chat template, ``checkpoint_complete.json``),
``metrics.json``, ``steps.csv`` and ``train_args.json``. That folder is assembled beside the target and
renamed onto it at the end, so a crash never leaves half a checkpoint, and a stage refuses to start
from a checkpoint without its completion marker. A folder at ``runs_dir/<stage>`` that train.run did not
write is refused before any training (``train.checkpoint.claim_stage_outputs``).

Resuming: every ``save_steps`` steps TRL saves a resumable checkpoint (optimizer, RNG, data position)
in ``runs_dir/<stage>.work/``; after a crash, ``python -m train.run stage=sft2 resume=true`` continues
from the last complete one (same settings); a finished stage deletes them. ``report_to=tensorboard`` writes event files there too.
``python -m train.run --help`` lists every key; ``--print-config`` prints the resolved settings.

Defaults: ``bf16=auto`` (mixed precision where the hardware has bf16 units, CPU or GPU; float32 weights
and optimizer state), gradient checkpointing off, ``num_threads=2`` (ignored on a GPU). RL rollouts:
``rl*.engine=hf`` (the policy's generate) or ``vllm`` (vLLM in-process with a weight sync per optimizer
step, CPU and GPU; ``train.rollout``). Other settings, by config only:

    lora_r=16 lora_alpha=32                    # LoRA via peft; merged into each saved checkpoint
    gradient_checkpointing=true                # less memory per step, a little more compute
    accelerate launch -m train.run stage=sft2  # several GPUs (DDP; add --config_file for DeepSpeed/FSDP)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import torch

from coa.config import cli
from coa.errors import entry_point, reading
from coa.fingerprint import check_resume, file_digest, model_identity, record_fingerprint
from coa.io import atomic_output, write_json
from coa.model import base_model_dir, check_checkpoint, check_start_model, model_label
from coa.stages import PREVIOUS, RL_STAGES, SFT_STAGES
from train.checkpoint import (
    StepLog,
    claim_stage_outputs,
    last_trainer_checkpoint,
    load_model,
    load_tokenizer,
    write_checkpoint,
    write_metrics,
)
from train.attention import choose as choose_attention
from train.common import is_main_process, on_gpu
from train.config import TrainConfig
from train.data import pair_dataset, rl_dataset, sft_dataset
from train.teacher_guided import teacher_term


def base_model(cfg: TrainConfig) -> Path:
    return Path(cfg.base_model) if cfg.base_model else base_model_dir()


def start_checkpoint(cfg: TrainConfig, stage: str) -> Path:
    """Where a stage starts: ``model=`` if given, else the previous stage's output (sft1: the base)."""
    if cfg.model == "base" or (cfg.model is None and PREVIOUS[stage] is None):
        return check_start_model(base_model(cfg))
    if cfg.model:
        path = Path(cfg.model)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"model={cfg.model}: no checkpoint there (no config.json)")
        return check_start_model(path)
    path = Path(cfg.runs_dir) / PREVIOUS[stage]
    if not path.exists():
        raise FileNotFoundError(
            f"{stage} starts from the {PREVIOUS[stage]} checkpoint {path}, which does not "
            f"exist: run `python -m train.run stage={PREVIOUS[stage]}` first, or set "
            "model=PATH (model=base for the base model)"
        )
    return check_checkpoint(path)


def work_dir(cfg: TrainConfig, stage: str) -> Path:
    """TRL's output folder for ``stage``: resumable checkpoints, TensorBoard logs, rollouts (not the output)."""
    return Path(cfg.runs_dir) / f"{stage}.work"


def resume_point(cfg: TrainConfig, stage: str) -> Path | None:
    """``resume=true``: the last complete TRL checkpoint of ``stage``; otherwise clear the work folder."""
    work = work_dir(cfg, stage)
    if not cfg.resume:
        if is_main_process():
            shutil.rmtree(work, ignore_errors=True)  # checkpoints of an earlier run (other settings) must not leak in
        return None
    last = last_trainer_checkpoint(work)
    if last is None:
        raise FileNotFoundError(
            f"{stage}: resume=true but {work} holds no complete checkpoint-N (save_steps="
            f"{cfg.save_steps}); run without resume=true to start the stage over"
        )
    return last


def stage_fingerprint(cfg: TrainConfig, stage: str, start: Path) -> dict:
    """What a stage's resumable checkpoints and rollouts come from (``coa.fingerprint``): the start model's
    weights, the stage's settings, its data files' contents, the format, prompt and environment."""
    settings = getattr(cfg, stage)
    if stage in RL_STAGES:
        data = [Path(p) for p in (settings.questions, settings.teacher_corrections) if p]
    else:
        data = [Path(cfg.sets_dir) / name for name in ([settings.data] if stage == "sft1" else settings.data)]
    return {
        "writer": "train.run",
        "stage": stage,
        "start": model_identity(start),
        "settings": dataclasses.asdict(settings),
        "format": cfg.format,
        "prompt": dataclasses.asdict(cfg.prompt),
        "environment": dataclasses.asdict(cfg.search),
        "data": {str(p): file_digest(p) if p.is_file() else None for p in data},
    }


def build_trainer(cfg: TrainConfig, stage: str, start: Path, out: Path, log: StepLog):
    """Tokenizer (checked against the base) → data (fails fast on bad sets) → model → TRL trainer."""
    tok = load_tokenizer(start, base_model(cfg))
    settings = getattr(cfg, stage)
    if stage == "sft1":
        dataset, stats = pair_dataset(tok, Path(cfg.sets_dir) / settings.data, settings.max_length, fmt=cfg.format)
    elif stage in ("sft2", "sft3"):
        paths = [Path(cfg.sets_dir) / name for name in settings.data]
        dataset, stats = sft_dataset(tok, paths, settings.observation_loss, settings.max_length, stage, fmt=cfg.format)
    else:
        dataset = rl_dataset(tok, settings.questions, settings.question_limit, cfg.prompt)
        teacher = teacher_term(tok, settings, stage, dataset, cfg.format)  # None: plain GRPO
        stats = {"questions": len(dataset), **({"teacher_corrections": teacher.stats} if teacher else {})}
    padding_free = stage in ("sft2", "sft3") and (settings.padding_free or settings.packing)
    attention, why = choose_attention(cfg.attn_implementation, padding_free)
    stats["attn_implementation"] = {"kernel": attention, "why": why}
    model = load_model(start, tok, attention)
    if stage == "sft1":
        from train.preference import build_sft1_trainer  # heavy: TRL loads only for the stage that trains

        trainer = build_sft1_trainer(cfg, model, tok, dataset, out, callbacks=[log])
    elif stage in ("sft2", "sft3"):
        from train.sft import build_sft_trainer  # heavy: TRL loads only for the stage that trains

        trainer = build_sft_trainer(cfg, settings, model, tok, dataset, out, callbacks=[log])
    else:
        from train.rl import build_rl_trainer  # heavy: TRL loads only for the stage that trains

        trainer = build_rl_trainer(cfg, settings, model, tok, dataset, out, callbacks=[log], teacher=teacher)
    return trainer, tok, stats


def empty_sets(cfg: TrainConfig, stage: str) -> list[str]:
    """The SFT sets of ``stage`` that exist but hold no rows (RL stages read questions, not sets)."""
    if stage not in SFT_STAGES:
        return []
    settings = getattr(cfg, stage)
    names = [settings.data] if stage == "sft1" else list(settings.data)
    paths = [Path(cfg.sets_dir) / n for n in names]
    empty = [str(p) for p in paths if p.exists() and num_rows(p) == 0]
    return empty if len(empty) == len(paths) else []


def num_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    with reading(path):
        return pq.ParquetFile(path).metadata.num_rows


def pass_through(cfg: TrainConfig, stage: str, start: Path, reason: str, **extra) -> dict:
    """Save the start checkpoint unchanged as this stage's output, saying so loudly and in the metrics."""
    out = Path(cfg.runs_dir) / stage
    print(f"WARNING: {stage}: {reason}; saving {start} unchanged as {out}", file=sys.stderr)
    tok = load_tokenizer(start, base_model(cfg))
    with atomic_output(out, folder=True) as tmp:
        write_checkpoint(load_model(start, tok), tok, tmp, cfg.save_dtype)
        metrics = write_metrics(tmp, stage, StepLog(), {"start_model": model_label(start), "skipped": reason, **extra})
    return metrics


def run_stage(cfg: TrainConfig, stage: str, start: Path | None = None) -> dict:
    """Train one stage from ``start`` (default ``start_checkpoint``); save it and its metrics."""
    start = start or start_checkpoint(cfg, stage)
    out = Path(cfg.runs_dir) / stage
    if cfg.on_empty_set not in ("error", "pass_through"):
        raise ValueError(f"on_empty_set must be 'error' or 'pass_through', got {cfg.on_empty_set!r}")
    if stage not in cfg.chain:  # an ablation arm without this stage: the model so far goes on unchanged
        return pass_through(cfg, stage, start, f"not in train.chain {cfg.chain}")
    if stage in RL_STAGES and cfg.rl.max_steps > 0 and getattr(cfg, stage).max_steps == 0:
        return pass_through(
            cfg,
            stage,
            start,
            f"0 of the {cfg.rl.max_steps} RL steps (rl.rl1_fraction={cfg.rl.rl1_fraction:g})",
            real_search_queries=0,
        )
    empty = empty_sets(cfg, stage)
    if empty and cfg.on_empty_set == "pass_through":
        return pass_through(cfg, stage, start, f"empty set: {empty} (on_empty_set=pass_through)")
    if cfg.report_to == "tensorboard":
        check_tensorboard()
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(work_dir(cfg, stage) / "logs")
    resume = resume_point(cfg, stage)
    if resume:
        check_resume(work_dir(cfg, stage), stage_fingerprint(cfg, stage, start), "train")
    elif is_main_process():
        work_dir(cfg, stage).mkdir(parents=True, exist_ok=True)
        record_fingerprint(work_dir(cfg, stage), stage_fingerprint(cfg, stage, start))
    log = StepLog()
    extra = {"resumed_from_step": log.restore(resume)} if resume else {}
    trainer, tok, stats = build_trainer(cfg, stage, start, work_dir(cfg, stage), log)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if not is_main_process():  # data parallel: every rank trained the same weights; rank 0 writes them
        trainer.accelerator.wait_for_everyone()
        return {"stage": stage, "rank": int(os.environ["RANK"])}
    with atomic_output(out, folder=True) as tmp:  # the previous output stays until this one is complete
        write_checkpoint(trainer.model, tok, tmp, cfg.save_dtype)
        for rollouts in work_dir(cfg, stage).glob("rollouts*.jsonl"):
            shutil.copy(rollouts, tmp / rollouts.name)
        if stage in RL_STAGES:  # the real environment's use, counted from the observations it returned
            extra["real_search_queries"] = real_search_queries(tmp)
        write_json(
            tmp / "train_args.json",
            {
                "start_model": model_label(start),
                "trl": trainer.args.to_dict(),
                "stage": dataclasses.asdict(getattr(cfg, stage)),
            },
            default=str,
        )
        metrics = write_metrics(
            tmp,
            stage,
            log,
            {
                "start_model": model_label(start),
                "train_loss": result.training_loss,
                "data": stats,
                "bf16": trainer.args.bf16,
                "tokens": trainer.tokens.summary(sum(log.step_seconds)),
                **extra,
            },
        )
    drop_resume_checkpoints(work_dir(cfg, stage))
    trainer.accelerator.wait_for_everyone()
    return metrics


def real_search_queries(folder: Path) -> int:
    """Queries the real search environment answered in a stage's rollouts (``rollouts*.jsonl``: one line per
    rollout with its ``real_search_queries``; rl1's policy writes its own observations, so none)."""
    return sum(
        json.loads(line)["real_search_queries"]
        for path in folder.glob("rollouts*.jsonl")
        for line in path.read_text().splitlines()
        if line.strip()
    )


def drop_resume_checkpoints(work: Path) -> None:
    """A finished stage needs no resuming: its TRL checkpoints (weights + optimizer state, 3x the model) go;
    logs and rollouts stay."""
    for checkpoint in work.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


def check_tensorboard() -> None:
    import importlib.util

    if not (importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")):
        raise ValueError(
            "report_to=tensorboard needs the tensorboard package (pip install tensorboard); or report_to=none"
        )


def main(argv: list[str]) -> list[dict]:
    """The command line: settings (exit 2 on a bad key or value), then ``run``."""
    return run(cli(TrainConfig, "train", argv, __doc__))


def run(cfg: TrainConfig) -> list[dict]:
    """Train ``cfg.stage`` (``rl``: rl1 then rl2 per the schedule); the metrics of each stage run."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if cfg.num_threads > 0 and not on_gpu():
        torch.set_num_threads(cfg.num_threads)
    cfg = scheduled(cfg)
    claim_stage_outputs(cfg.runs_dir, RL_STAGES if cfg.stage == "rl" else (cfg.stage,))  # before any training
    if cfg.stage != "rl":
        return [run_stage(cfg, cfg.stage)]
    results = [run_stage(cfg, "rl1", start_checkpoint(cfg, "rl1"))]
    return results + [run_stage(cfg, "rl2", Path(cfg.runs_dir) / "rl1")]


def scheduled(cfg: TrainConfig) -> TrainConfig:
    """``rl.max_steps > 0``: rl1 and rl2 get their shares of the one RL budget (``rl.rl1_fraction``)."""
    if cfg.rl.max_steps <= 0:
        return cfg
    rl1_steps, rl2_steps = cfg.rl.split()
    return dataclasses.replace(
        cfg,
        rl1=dataclasses.replace(cfg.rl1, max_steps=rl1_steps),
        rl2=dataclasses.replace(cfg.rl2, max_steps=rl2_steps),
    )


@entry_point("train")
def command(argv: list[str]) -> int:
    """``python -m train.run``: one JSON line per trained stage; bad input is one line and exit 2."""
    for metrics in main(argv):
        if is_main_process():
            print(json.dumps({k: metrics[k] for k in ("stage", "steps", "seconds_per_step", "peak_rss_gb")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(command(sys.argv[1:]))
