"""One embedded vLLM CPU teacher for the whole synth test session (startup ~30-50 s), also serving chat
teachers: the shipped ChatML + Hermes tool template with the hermes tool-call parser (raw-prompt
/v1/completions, which the other tests use, is unaffected by either).

``COA_TEST_TEACHER_PORT=P`` reuses a teacher already serving on 127.0.0.1:P (handy while iterating);
by default a fresh one starts on a free port and is stopped at the end of the session.
"""

from __future__ import annotations

import os

import pytest

from coa.procs import free_port
from synth.serve import VLLMServerConfig, start_engine


@pytest.fixture(scope="session")
def teacher_url(model_dir, tmp_path_factory):
    port = int(os.environ.get("COA_TEST_TEACHER_PORT") or free_port())
    log = tmp_path_factory.mktemp("teacher") / "vllm.log"
    server = start_engine(
        VLLMServerConfig(
            model=str(model_dir), port=port, log=str(log), chat_template="tools", tool_call_parser="hermes"
        )
    )
    yield f"http://127.0.0.1:{port}/v1"
    if server is not None:
        server.stop()


@pytest.fixture(autouse=True)
def no_pipeline_params(monkeypatch, tmp_path):
    """The tests set every key they rely on: keep the pipeline's params.yaml out of them (and out of
    the synthesis processes they start)."""
    import coa.config

    monkeypatch.setenv("COA_PARAMS", "none")  # a missing params file is an error; "none" means no file
    monkeypatch.setattr(coa.config, "PARAMS_FILE", "none")
