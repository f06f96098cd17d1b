"""Evaluation numbers that must be comparable: EM with its 95% bootstrap interval and n, the trained
prompt for style=trained, and the serving dtype picked from the CPU's features."""

from __future__ import annotations

import pytest

from coa.config import build
from coa.stats import bootstrap_ci
from evaluate.run import EvalConfig, aggregate, prompt_of, report
from coa.model import cpu_has_native_bf16
from coa.model import serving_dtype


def test_bootstrap_interval_covers_the_mean_and_narrows_with_n():
    small = bootstrap_ci([1.0] * 5 + [0.0] * 15)
    large = bootstrap_ci([1.0] * 50 + [0.0] * 150)
    assert small[0] <= 0.25 <= small[1] and large[0] <= 0.25 <= large[1]
    assert large[1] - large[0] < small[1] - small[0]
    assert bootstrap_ci([0.0] * 100) == [0.0, 0.0]  # an all-wrong baseline has no width
    assert bootstrap_ci([1.0, 0.0] * 10, seed=1) == bootstrap_ci([1.0, 0.0] * 10, seed=1)


def test_every_row_reports_em_interval_and_n(tmp_path):
    scored = [
        {
            "em": float(i % 4 == 0),
            "f1": 0.5,
            "cover_em": 0.0,
            "autocoa_lenient": 0.0,
            "well_formed": 1.0,
            "n_actions": 1,
        }
        for i in range(100)
    ]
    m = aggregate(scored)
    assert m["n"] == 100 and m["em"] == 0.25 and m["em_ci95"][0] < 0.25 < m["em_ci95"][1]
    out = tmp_path / "rows"
    (out / "a").mkdir(parents=True)
    import json

    (out / "a" / "metrics.json").write_text(json.dumps({"name": "a", "style": "trained", "datasets": {"heldout": m}}))
    cfg = build(
        EvalConfig, {"step": "report", "names": ["a"], "out_root": str(out), "report": str(out / "table.md")}, "test"
    )
    table = report(cfg)
    assert f"0.250 [{m['em_ci95'][0]}, {m['em_ci95'][1]}]" in table and "/ 100 |" in table


def test_trained_style_uses_the_training_prompt():
    trained = build(
        EvalConfig, {"model": "runs/train/sft2", "prompt": {"demonstrations": False, "prefill": "<think>\n"}}, "test"
    )
    assert trained.style == "trained"
    assert prompt_of(trained) == {"demonstrations": False, "prefill": "<think>\n", "system": None}
    react = build(EvalConfig, {"style": "react"}, "test")
    assert prompt_of(react) == {"demonstrations": True, "prefill": "<think>\n"}
    assert prompt_of(build(EvalConfig, {}, "test")) == {"demonstrations": False, "prefill": ""}


@pytest.mark.parametrize(
    "flags, native",
    [
        ("fpu sse avx avx2 fma", False),  # AMD EPYC, AVX2 only: bf16 is emulated
        ("avx2 avx512f avx512_bf16", True),
        ("avx2 avx512f amx_bf16 amx_tile", True),
    ],
)
def test_serving_dtype_follows_the_cpu(flags, native):
    cpuinfo = f"processor\t: 0\nflags\t\t: {flags}\n"
    assert cpu_has_native_bf16(cpuinfo) is native
    assert serving_dtype("float16", cuda=False) == "float16"  # an explicit choice wins
    assert serving_dtype("auto", cuda=True) == "bfloat16"


def test_auto_dtype_on_this_machine():
    expected = "bfloat16" if cpu_has_native_bf16() else "float32"
    assert serving_dtype("auto", cuda=False) == expected


def test_in_process_evaluation_runs_in_the_serving_dtype_and_the_fingerprint_says_so(monkeypatch, tmp_path):
    import evaluate.run as run

    model = {"name": "x", "model": str(tmp_path)}  # a folder without weights: known by its name
    vllm, hf = build(EvalConfig, model, "t"), build(EvalConfig, {**model, "engine": "hf"}, "t")
    assert run.engine_dtype(vllm) == serving_dtype("auto") and run.engine_dtype(hf) == "float32"
    assert run.engine_dtype(build(EvalConfig, {**model, "engine": "hf", "dtype": "bfloat16"}, "t")) == "bfloat16"
    made = {}
    monkeypatch.setattr(run, "make_engine", lambda kind, **kw: made.update(kw, kind=kind) or "engine")
    with run.model_engine(vllm) as engine:
        assert engine == "engine" and made["dtype"] == serving_dtype("auto")
    fp = run.fingerprint(vllm)
    assert fp["dtype"] == made["dtype"]
    assert run.fingerprint(build(EvalConfig, {**model, "dtype": "float32"}, "t"))["dtype"] == "float32"


def test_the_in_process_vllm_engine_gets_the_evaluations_kv_cache(monkeypatch, tmp_path):
    import evaluate.run as run

    model = {"name": "x", "model": str(tmp_path)}
    made = []
    monkeypatch.setattr(run, "make_engine", lambda kind, **kw: made.append((kind, kw)) or "engine")
    for settings in ({}, {"kv_cache_gib": 2.5, "kv_block": 32}, {"engine": "hf"}):
        with run.model_engine(build(EvalConfig, {**model, **settings}, "t")):
            pass
    assert [kw.get("kv_cache_gib") for _, kw in made] == [EvalConfig.kv_cache_gib, 2.5, None]  # hf has no KV cache
    assert [kw.get("block_size") for _, kw in made] == [0, 32, None]
    with pytest.raises(ValueError, match="kv_cache_gib must be > 0"):
        build(EvalConfig, {"kv_cache_gib": 0}, "t")
    with pytest.raises(ValueError, match="kv_block must be >= 0"):
        build(EvalConfig, {"kv_block": -32}, "t")


def test_engine_runs_in_process_unless_an_api_is_named():
    assert build(EvalConfig, {}, "t").engine == "vllm"
    assert build(EvalConfig, {"teacher": {"base_url": "http://127.0.0.1:9/v1"}}, "t").engine == "server"
    with pytest.raises(ValueError, match="teacher.base_url needs engine=server"):
        build(EvalConfig, {"engine": "hf", "teacher": {"base_url": "http://127.0.0.1:9/v1"}}, "t")
    with pytest.raises(ValueError, match="engine must be"):
        build(EvalConfig, {"engine": "llamacpp"}, "t")
