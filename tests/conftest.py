"""Session fixtures shared by every test package: the real index on the real corpus, the real
tokenizer and the converted embedded model. Servers are started by fixtures in each package."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


HEAVY = ("model", "server", "slow", "llm")
OWN_DATA_RUN = "tests/pipeline/test_pipeline.py"  # the tests of the whole tiny run (``own_data_run``)


def pytest_collection_modifyitems(items):
    """Every test that needs no model, no server and is not marked slow is in the fast tier. The tests of
    the whole tiny run go first: its ``dvc exp run`` then runs alone, before the session's own memory has grown."""
    for item in items:
        if not any(item.get_closest_marker(name) for name in HEAVY):
            item.add_marker(pytest.mark.fast)
    items.sort(key=lambda item: not item.nodeid.startswith(OWN_DATA_RUN))  # stable: the order is kept otherwise


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory):
    """BM25 index of the embedded 19,099-paragraph HotpotQA corpus (~3 s)."""
    from coa.search import DEFAULT_CORPUS, build_index

    return build_index(DEFAULT_CORPUS, tmp_path_factory.mktemp("index"), show_progress=False)


@pytest.fixture(scope="session")
def model_dir():
    """The embedded SmolLM2-135M-Instruct as an HF folder (converted once from the GGUF wheel)."""
    from coa.model import base_model_dir

    return base_model_dir()


@pytest.fixture(scope="module")
def llm_url(tmp_path_factory):
    """The optional real LLM (``./install.sh --llm``) served by vLLM CPU with its own chat template and the hermes
    tool-call parser, for the ``llm`` tests; they skip, saying why, when it is not installed. Startup ~1 min, ~8 GB.
    ``COA_TEST_LLM_PORT=P`` reuses one already serving it on 127.0.0.1:P."""
    from coa.model import LLM_INSTALL_HINT, LLM_NAME, llm_model_dir
    from coa.procs import free_port
    from synth.serve import VLLMServerConfig, start_engine

    try:
        folder = llm_model_dir(convert=False)
    except FileNotFoundError:
        pytest.skip(f"the optional real LLM is not installed ({LLM_INSTALL_HINT})")
    port = int(os.environ.get("COA_TEST_LLM_PORT") or free_port())
    log = tmp_path_factory.mktemp("llm") / "vllm.log"
    server = start_engine(
        VLLMServerConfig(
            model=str(folder), served_name=LLM_NAME, port=port, log=str(log), tool_call_parser="hermes", kv_cache_gib=2
        )
    )
    yield f"http://127.0.0.1:{port}/v1"
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="session")
def questions():
    """The 1,979 embedded HotpotQA questions (FlashRAG form, with their evidence metadata)."""
    from coa.questions import DEFAULT_QUESTIONS, load_questions

    return load_questions(DEFAULT_QUESTIONS)


@pytest.fixture(scope="session")
def searcher(index_dir):
    """BM25 over the embedded corpus."""
    from coa.search import load_searcher

    return load_searcher(index_dir)


@pytest.fixture
def empty_sets(tmp_path):
    """A sets folder whose three sets exist and hold no rows (pairs, CoA, CoT)."""
    import pyarrow.parquet as pq

    from coa.trajectory import PAIR_SCHEMA, TRAJECTORY_SCHEMA

    folder = tmp_path / "sets"
    folder.mkdir()
    pq.write_table(PAIR_SCHEMA.empty_table(), folder / "pairs.parquet")
    for name in ("coa", "cot"):
        pq.write_table(TRAJECTORY_SCHEMA.empty_table(), folder / f"{name}.parquet")
    return folder


@pytest.fixture(scope="session")
def elasticsearch_url(tmp_path_factory):
    """A real Elasticsearch-API server on 127.0.0.1 for the session: noida-db (PyPI; a single binary speaking
    the ES 8.15 REST API, installed by ./install.sh into .venv-argilla), since no Elasticsearch or OpenSearch
    installs from the package registries. ``NOIDA_DB`` overrides where the binary is."""
    import shutil
    from pathlib import Path

    from coa.procs import Server, free_port

    binary = os.environ.get("NOIDA_DB") or str(Path(__file__).resolve().parents[1] / ".venv-argilla/bin/noida-db")
    if not Path(binary).exists():
        binary = shutil.which("noida-db") or binary
    if not Path(binary).exists():
        raise FileNotFoundError(f"{binary} is missing: run ./install.sh (or set NOIDA_DB=/path/to/noida-db)")
    port, data = free_port(), tmp_path_factory.mktemp("noida")
    url = f"http://127.0.0.1:{port}"
    server = Server(
        [
            binary,
            "start",
            "--data-dir",
            str(data / "db"),
            "--host",
            "127.0.0.1",
            "--only",
            "elasticsearch",
            "--elasticsearch-port",
            str(port),
        ],
        url,
        log=data / "noida.log",
    ).start(timeout=60)
    yield url
    server.stop()
