"""Configuration errors stop a run before any row is written, and the re-run after the fix writes every
row: a real vLLM server answering 404 for an unknown model, and one started with an API key answering
401 to a wrong key."""

from __future__ import annotations

import pytest

from coa.procs import free_port
from synth.run import main
from synth.serve import VLLMServerConfig, start_engine

pytestmark = [pytest.mark.model, pytest.mark.server, pytest.mark.slow]


def args(out, url, index_dir, *extra):
    return [
        "mode=coa",
        "limit=3",
        "format=search_r1",
        "search.max_tokens=32",
        f"search.index={index_dir}",
        f"out={out}",
        f"teacher.base_url={url}",
        "teacher.retries=0",
        "progress=false",
        *extra,
    ]


def test_unknown_model_stops_before_any_row_then_the_rerun_writes_all(teacher_url, index_dir, tmp_path, capsys):
    out = tmp_path / "coa"
    assert main(args(out, teacher_url, index_dir, "teacher.model=no-such-model")) == 2
    err = capsys.readouterr().err
    assert "model 'no-such-model' is not served" in err and "SmolLM2-135M-Instruct" in err
    assert not list(out.glob("*.parquet")) and not (out / "summary.json").exists()
    assert main(args(out, teacher_url, index_dir)) == 0
    assert "this run: 3 rows" in capsys.readouterr().out


def test_wrong_key_stops_before_any_row_then_the_rerun_writes_all(model_dir, index_dir, tmp_path, monkeypatch, capsys):
    port = free_port()
    monkeypatch.setenv("VLLM_API_KEY", "the-right-key")  # the server requires it (vLLM reads this variable)
    server = start_engine(VLLMServerConfig(model=str(model_dir), port=port, log=str(tmp_path / "vllm.log")))
    try:
        out, url = tmp_path / "coa", f"http://127.0.0.1:{port}/v1"
        monkeypatch.setenv("OPENAI_API_KEY", "a-wrong-key")
        assert main(args(out, url, index_dir)) == 2
        err = capsys.readouterr().err
        assert "refused the credentials (401)" in err and "$OPENAI_API_KEY" in err and "a-wrong-key" not in err
        assert not list(out.glob("*.parquet"))
        monkeypatch.setenv("OPENAI_API_KEY", "the-right-key")
        assert main(args(out, url, index_dir)) == 0
        assert "this run: 3 rows" in capsys.readouterr().out
    finally:
        if server is not None:
            server.stop()
