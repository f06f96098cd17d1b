"""Training throughput of each stage on the embedded SmolLM2-135M, float32 against bf16 mixed precision.

    python bench/bench_train.py [--sets runs/curate/sets --index runs/index] [--steps 2] [--threads 2]
                                [--precisions fp32,bf16] [--stages sft1,sft2,sft3,rl1,rl2] [--packing]
                                [--variants "sft2:2x2:sft2.per_device_train_batch_size=2 ...;..."]
                                [--lengths 1024,1280,1536,2048] [--out bench/out/train.json]

It first prints what ``bf16: auto`` picks on this machine and why (``coa.model.bf16_choice``).

Each stage runs as the real CLI (``python -m train.run stage=…``) in its own process, chained from the base
model like the pipeline (sft1 → sft2 → sft3 → rl1 → rl2), at the default run's settings (``params.yaml``:
micro-batch, accumulation, sequence length, RL group, engine, β, gradient checkpointing, the search environment)
with only ``max_steps`` cut to ``--steps`` and ``bf16`` set per precision; each precision has its own chain, and
the precisions take turns stage by stage, so load from other work on the machine hits both alike.
Per stage it prints seconds per optimizer step, real tokens per second of the passes with gradients, the
padding fraction, achieved FLOP/s and MFU: the FLOP/s over this machine's own matmul peak for that precision,
measured in the same process before and after the stages (float32 and bf16 GEMMs at 2048³ and at the model's
MLP and LM-head shapes, on the same threads; the best rate counts). Beside each stage, one isolated forward and
backward of a sequence of the stage's mean length (same model, same precision and checkpointing) says what the
stage loses around its matmuls (data, optimizer, logging, rollouts). ``--packing`` adds SFT-2 with
``sft2.packing=true`` from the same sft1 (rows of up to ``max_length`` tokens holding several sequences).
``--variants`` runs a stage again per variant, ``STAGE[@PRECISION]:NAME:KEY=VALUE KEY=VALUE`` (``;`` between), from
the same start checkpoint, right after the stage itself and in the same turn of precisions: e.g. several
sequences per micro-batch (``sft2.per_device_train_batch_size=2 sft2.gradient_accumulation_steps=2
sft2.padding_free=true``) or autocast's weight casts (``bf16_weight_copies=false``) against the defaults.

FLOPs are model FLOPs (the MFU convention: a forward recomputed by gradient checkpointing does not count), from
the stage's own token counts (``metrics.json`` → ``tokens``, ``train.common.TokenCount``): per real token 6N for
a pass with gradients and 2N without, N = the model's parameters (each takes part in a matmul; the tied embedding
as the LM head), plus causal attention 6·layers·width·L² per sequence of L tokens with gradients (2·… without);
RL adds 2N per token its rollouts processed (TRL's ``num_tokens``: prompts, completions and observations). Padding
is computed but not useful, so it lowers MFU.

With ``--sets`` (the default run's ``runs/curate/sets``) the stages train on the curated sets in the run's format
and ``--lengths`` prints what each ``max_length`` keeps of the SFT-2 sets (``train.data.length_cut``); without,
realistic sets are built from real HotpotQA questions, the real corpus (BM25) and the real chat template with its
worked example (``tests/fixtures/trajectories.py``), and pairs are taken at each CoA trajectory's first decision.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coa.model import bf16_choice  # noqa: E402
from coa.stages import STAGES  # noqa: E402
from coa.trajectory import PAIR_SCHEMA, write_trajectories  # noqa: E402

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
# (m, k, n): a square GEMM, and the student's MLP up-projection and LM head over a 1,024-token row
GEMMS = ((2048, 2048, 2048), (1024, 576, 1536), (1024, 576, 49152))


def build_sets(out: Path, index: Path, n_questions: int = 24) -> None:
    from transformers import AutoTokenizer

    from coa.formats import get_format
    from coa.model import base_model_dir
    from coa.questions import DEFAULT_QUESTIONS, load_questions
    from coa.search import load_searcher
    from tests.fixtures.trajectories import realistic_trajectories

    tok = AutoTokenizer.from_pretrained(base_model_dir())
    rows = realistic_trajectories(
        load_questions(DEFAULT_QUESTIONS, limit=n_questions), load_searcher(index), samples=1, tokenizer=tok
    )
    coa = [t for t in rows if t.mode == "coa" and t.n_actions]
    write_trajectories(out / "coa.parquet", coa)
    write_trajectories(out / "cot.parquet", [t for t in rows if t.mode == "cot"])
    fmt = get_format("autocoa")
    pairs = []
    for t in coa:
        act = t.segments[0]["text"]  # thought + search call: stops at the search-close tag
        thought = act[: act.index(fmt.search_open)]
        no_act = (
            f"{thought}Without searching, I believe it is {t.answer}.\n{fmt.think_close}\n{fmt.answer_text(t.answer)}"
        )
        pairs.append(
            {
                "id": t.id,
                "question_id": t.question_id,
                "question": t.question,
                "golden_answers": t.golden_answers,
                "format": "autocoa",
                "prompt": t.prompt,
                "chosen": act,
                "rejected": no_act,
                "chosen_ends_turn": False,
                "rejected_ends_turn": True,
                "direction": "act",
                "decision_index": 0,
                "chosen_id": t.id,
                "rejected_id": t.id + ":forbid",
                "chosen_score": 1.0,
                "rejected_score": 0.0,
            }
        )
    pq.write_table(pa.Table.from_pylist(pairs, schema=PAIR_SCHEMA), out / "pairs.parquet")


def examples(stage: dict, name: str) -> str:
    """What one optimizer step of ``stage`` trains on, in words (micro-batch x accumulation)."""
    n = stage.get("per_device_train_batch_size", 1) * stage.get("gradient_accumulation_steps", 1)
    micro = stage.get("per_device_train_batch_size", 1)
    if name.startswith("rl"):
        return f"{n // stage['num_generations']} prompts x {stage['num_generations']} rollouts ({micro}/micro-batch)"
    return f"{n} {'pairs' if name == 'sft1' else 'sequences'} ({micro}/micro-batch)"


def matmul_peak(dtype: torch.dtype, repeats: int = 5) -> float:
    """The best GEMM rate (FLOP/s) this process reaches in ``dtype`` on its torch threads (``GEMMS``)."""
    best = 0.0
    for m, k, n in GEMMS:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        a @ b  # warm-up: the kernel choice and the first touch of the memory
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            best = max(best, 2 * m * k * n / (time.perf_counter() - started))
    return best


def model_shape() -> dict:
    """What the FLOP count needs of the student: parameters, layers, attention width."""
    from transformers import AutoConfig

    from coa.model import base_model_dir

    cfg = AutoConfig.from_pretrained(base_model_dir())
    d, layers, ff, vocab = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.vocab_size
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * ff + 2 * d  # q, o; k, v; gate, up, down; two norms
    return {"params": layers * per_layer + vocab * d + d, "layers": layers, "width": d}


def stage_flops(tokens: dict, rollout_tokens: int, shape: dict) -> float:
    """Model FLOPs of a stage from its token counts (see the module docstring)."""
    n, attention = shape["params"], shape["layers"] * shape["width"]
    return (
        6 * n * tokens["forward_backward_tokens"]
        + 6 * attention * tokens["forward_backward_attention"]
        + 2 * n * tokens["forward_only_tokens"]
        + 2 * attention * tokens["forward_only_attention"]
        + 2 * n * rollout_tokens
    )


def isolated_tokens_per_second(length: int, bf16: bool, checkpointing: bool, repeats: int = 2) -> float:
    """Real tokens per second of one forward and backward of a ``length``-token sequence, best of ``repeats``."""
    from transformers import AutoModelForCausalLM

    from coa.model import base_model_dir

    model = AutoModelForCausalLM.from_pretrained(base_model_dir(), dtype=torch.float32)
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    ids = torch.randint(100, 40000, (1, length), generator=torch.Generator().manual_seed(0))
    best = 0.0
    for _ in range(repeats + 1):  # the first one warms up
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        best = max(best, length / (time.perf_counter() - started))
    return best


def length_report(sets: Path, limits: list[int]) -> list[dict]:
    """What each ``max_length`` keeps of the SFT-2 sets (coa + cot), by ``train.data.length_cut``."""
    from transformers import AutoTokenizer

    from coa.model import base_model_dir
    from coa.trajectory import read_table
    from train.data import length_cut, search_calls, sft_features

    tok = AutoTokenizer.from_pretrained(base_model_dir())
    lengths, searches = [], []
    for name in ("coa.parquet", "cot.parquet"):
        for row in read_table(sets / name).to_pylist():
            lengths.append(len(sft_features(tok, row["prompt"], row["segments"], False)["input_ids"]))
            searches.append(search_calls(row))
    return [
        {**length_cut(lengths, searches, limit), "kept_tokens": sum(n for n in lengths if n <= limit)}
        for limit in limits
    ]


def params_file(work: Path, params: dict, precision: str) -> Path:
    """The bench's params with ``bf16`` for ``precision`` and a chain folder of its own."""
    section = {**params["train"], "runs_dir": str(work / precision), "bf16": precision == "bf16"}
    path = work / f"params_{precision}.yaml"
    path.write_text(yaml.safe_dump({**params, "train": section}))
    return path


def run_stage(work: Path, params: Path, precision: str, stage: str, threads: int, variant: tuple = ()) -> dict:
    """One stage through the CLI, from the previous stage of the same precision's chain; its metrics. ``variant``
    (name, overrides): the stage again from the same start with ``overrides``, into a folder of its own."""
    runs, name = work / precision, stage
    previous = STAGES[STAGES.index(stage) - 1] if stage != STAGES[0] else None
    # the chain's previous stage, or the base model where the bench starts after sft1 (--stages sft2)
    extra = []
    if previous:
        extra = [f"model={work / precision / previous}" if (work / precision / previous).exists() else "model=base"]
    if variant:
        label, overrides, _ = variant
        runs, name = work / f"{precision}_{label}", f"{stage} {label}"
        extra = [*overrides, *extra, f"runs_dir={runs}"]
    started = time.time()
    subprocess.run(
        [sys.executable, "-m", "train.run", f"stage={stage}", *extra],
        cwd=ROOT,
        check=True,
        env={**os.environ, "COA_PARAMS": str(params), "OMP_NUM_THREADS": str(threads)},
        stdout=subprocess.DEVNULL,
    )
    metrics = json.loads((runs / stage / "metrics.json").read_text())
    out = {
        **metrics,
        "stage": name,
        "overrides": list(variant[1]) if variant else [],
        "precision": precision,
        "process_seconds": round(time.time() - started, 1),
        "load_average": os.getloadavg(),
    }
    print(
        json.dumps({k: out[k] for k in ("stage", "precision", "steps", "seconds_per_step", "load_average", "tokens")})
    )
    return out


def parse_variants(text: str | None, packing: bool) -> dict[str, list[tuple[str, list[str]]]]:
    """``--variants`` (and ``--packing``) as stage -> [(name, overrides, precision or None: all)]; ``STAGE@bf16``
    runs a variant in that precision only (e.g. ``bf16_weight_copies=false``, which float32 ignores)."""
    variants: dict[str, list] = {}
    if packing:
        variants.setdefault("sft2", []).append(("packed", ["sft2.packing=true"], None))
    for spec in filter(None, (text or "").split(";")):
        stage, name, overrides = spec.strip().split(":", 2)
        stage, _, precision = stage.partition("@")
        variants.setdefault(stage, []).append((name, overrides.split(), precision or None))
    return variants


def summarise(metrics: dict, peak: dict, shape: dict, isolated: float, params: dict) -> dict:
    tokens, precision, stage = metrics["tokens"], metrics["precision"], metrics["stage"].split()[0]
    rollout = int(float(metrics["last"].get("num_tokens", 0))) if stage.startswith("rl") else 0
    flops = stage_flops(tokens, rollout, shape) / tokens["seconds"]
    settings = {**params[stage]}
    for override in metrics["overrides"]:
        key, value = override.split("=", 1)
        if key.startswith(f"{stage}."):
            settings[key.split(".", 1)[1]] = yaml.safe_load(value)
    per_step = examples(settings, stage)
    if settings.get("packing"):
        per_step = per_step.replace("sequences", f"rows of <= {settings['max_length']} tokens")
    elif settings.get("padding_free"):
        per_step = per_step.replace("/micro-batch", "/micro-batch, padding-free")
    return {
        "stage": metrics["stage"],
        "precision": precision,
        "per_step": per_step,
        "steps": metrics["steps"],
        "seconds_per_step": round(metrics["seconds_per_step"], 1),
        "step_seconds": metrics.get("step_seconds", []),  # the first holds a compiled variant's compilation
        "tokens_per_second": tokens["forward_backward_tokens_per_second"],
        "isolated_tokens_per_second": round(isolated, 1),
        "mean_length": round(tokens["forward_backward_tokens"] / max(tokens["forward_backward_sequences"], 1)),
        "padding_fraction": tokens["padding_fraction"],
        "gflops": round(flops / 1e9, 1),
        "mfu": round(flops / peak[precision], 4),
        "peak_rss_gb": metrics["peak_rss_gb"],
        "gradient_checkpointing": params.get("gradient_checkpointing", False),
        "overrides": metrics["overrides"],
        "data": metrics["data"],
    }


def print_tables(rows: list[dict], peak: dict, lengths: list[dict]) -> None:
    print("\nmatmul peak: " + ", ".join(f"{p} {flops / 1e9:.0f} GFLOP/s" for p, flops in peak.items()))
    print(
        "| stage | per step | precision | s/step | tokens/s | isolated fwd+bwd tokens/s (mean length) | padding | "
        "GFLOP/s | MFU | peak RSS GB |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['stage']} | {r['per_step']} | {r['precision']} | {r['seconds_per_step']} | "
            f"{r['tokens_per_second']:.0f} | "
            f"{r['isolated_tokens_per_second']:.0f} ({r['mean_length']}) | {r['padding_fraction']:.3f} | "
            f"{r['gflops']:.1f} | {100 * r['mfu']:.1f}% | {r['peak_rss_gb']} |"
        )
    if lengths:
        print(
            "\n| max_length | kept | dropped | token share dropped | searches/kept | searches/dropped | "
            "2+ searches kept | dropped | tokens kept |\n|---|---|---|---|---|---|---|---|---|"
        )
        for c in lengths:
            print(
                f"| {c['max_length']} | {c['kept']} | {c['dropped']} | {c['truncation_token_fraction']:.3f} | "
                f"{c['searches_per_kept']} | {c['searches_per_dropped']} | {c['multi_search_kept']} | "
                f"{c['multi_search_dropped']} | {c['kept_tokens']} |"
            )


def bench_params(args, work: Path) -> dict:
    """The default run's params with the bench's sets, index, threads and steps."""
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    sets = Path(args.sets) if args.sets else work / "sets"
    section = {**defaults["train"], "sets_dir": str(sets), "num_threads": args.threads, "rl": {"max_steps": 0}}
    for stage in STAGES:
        section[stage] = {**section[stage], "max_steps": args.steps}
        if stage.startswith("rl"):  # the curated RL pool, or (built sets have none) the embedded questions
            section[stage].update(
                {"questions": str(sets / "rl_questions.jsonl")}
                if args.sets
                else {"questions": None, "question_limit": 16}
            )
    params = {"train": section, "search": {**defaults["search"], "index": args.index}}
    if args.sets:  # the curated sets were written in the run's format and prompt
        params.update(format=defaults["format"], prompt=defaults["prompt"])
    else:  # build_sets writes autocoa text
        params.update(format="autocoa")
    return params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", help="curated sets folder (default: build realistic ones)")
    ap.add_argument("--index", help="coa.search index folder (default: build one of the embedded corpus)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--stages", default=",".join(STAGES), help="a chain in order (its first stage from the base model)")
    ap.add_argument("--packing", action="store_true", help="also run SFT-2 with packing=true (from the same sft1)")
    ap.add_argument("--variants", help="STAGE:NAME:KEY=VALUE KEY=VALUE;... a stage again per variant (docstring)")
    ap.add_argument("--no-isolated", action="store_true", help="skip the isolated forward and backward per row")
    ap.add_argument("--lengths", default="1024,1280,1536,2048", help="max_length values to report (with --sets)")
    ap.add_argument("--out", default=str(ROOT / "bench/out/train.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bf16, why = bf16_choice()
    print(f"bf16: auto -> {'bf16' if bf16 else 'fp32'} ({why})")
    scratch = tempfile.TemporaryDirectory(prefix="bench_train_")  # removed at exit: the checkpoints are GBs
    work = Path(scratch.name)
    if not args.index:
        from coa.search import DEFAULT_CORPUS, build_index

        args.index = str(build_index(DEFAULT_CORPUS, work / "index", show_progress=False))
    if not args.sets:
        (work / "sets").mkdir()
        build_sets(work / "sets", Path(args.index))
    params = bench_params(args, work)
    stages, precisions = args.stages.split(","), args.precisions.split(",")
    # only the precisions that run: on a CPU without AVX-512 a bf16 GEMM is emulated and takes minutes
    peaks = [{p: matmul_peak(PRECISIONS[p]) for p in precisions}]
    files = {p: params_file(work, params, p) for p in precisions}
    variants = parse_variants(args.variants, args.packing)
    # stage by stage, each variant after the stage, the precisions in turn: load from other work on the machine
    # hits all alike
    runs = [
        run_stage(work, files[p], p, stage, args.threads, variant)
        for stage in stages
        for variant in [(), *variants.get(stage, [])]
        for p in precisions
        if not variant or variant[2] in (None, p)
    ]
    peaks.append({p: matmul_peak(PRECISIONS[p]) for p in precisions})
    peak = {p: max(x[p] for x in peaks) for p in precisions}
    shape, checkpointing = model_shape(), params["train"].get("gradient_checkpointing", False)
    rows = []
    for m in runs:
        tokens = m["tokens"]
        length = max(1, round(tokens["forward_backward_tokens"] / max(tokens["forward_backward_sequences"], 1)))
        isolated = (
            0.0 if args.no_isolated else isolated_tokens_per_second(length, m["precision"] == "bf16", checkpointing)
        )
        rows.append(summarise(m, peak, shape, isolated, params["train"]))
    lengths = length_report(Path(args.sets), [int(x) for x in args.lengths.split(",")]) if args.sets else []
    report = {
        "model": "SmolLM2-135M-Instruct",
        "bf16_auto": {"bf16": bf16, "why": why},
        "threads": args.threads,
        "sets": args.sets or "built",
        "steps": args.steps,
        "matmul_peak_flops": peak,
        "matmul_peaks_before_after": peaks,
        "shape": shape,
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "results": rows,
        "lengths": lengths,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"bf16: auto -> {'bf16' if bf16 else 'fp32'} ({why})")
    print_tables(rows, peak, lengths)


if __name__ == "__main__":
    main()
