"""Serve the embedded teacher: vLLM on CPU, on loopback, with the converted SmolLM2-135M-Instruct.

    python -m synth.serve                      # foreground until Ctrl-C (port 8100)
    python -m synth.serve port=8200 model=DIR  # any HF folder vLLM can load
    python -m synth.serve --help               # every key (params.yaml section synth.serve)

From Python (synthesis, benches, test fixtures)::

    with embedded_teacher(VLLMServerConfig()) as base_url:   # reuses a server on the port serving the same model
        ...                                              # stops only what it started

Settings that matter on a small CPU box (why, with the measurements: docs/measurements/index.md and
the project notes): ``--enforce-eager`` (a compiled start is slower to start and its cache never
reloads), ``VLLM_CPU_KVCACHE_SPACE`` (``kv_cache_gib``: bounds the server's memory), and no chunked
prefill: vLLM 0.32 on CPU kills its engine ("CPU Generator does not use offset") when a request with a
per-request ``seed`` has its prompt split over two steps, and synthesis seeds every request. Without it
a prompt is prefilled in one step (up to max_model_len tokens). ``all_cores`` lets the engine use every
core instead of reserving one for the frontend: it helps only when no other work competes for the cores.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx

from coa.config import cli
from coa.errors import BadInput, entry_point
from coa.model import base_model_dir, serving_dtype
from coa.procs import Server, is_up, require_free_port

HOST = "127.0.0.1"  # the embedded engine never listens beyond loopback
# ChatML + Hermes-style tool calls: SmolLM2's own template knows no tools
TOOLS_TEMPLATE = Path(__file__).resolve().parents[1] / "coa" / "templates" / "chatml_tools.jinja"


@dataclass
class VLLMServerConfig:
    """How the embedded vLLM engine is started."""

    model: str = field(default="", metadata={"help": "HF model folder; empty = the embedded SmolLM2-135M-Instruct"})
    served_name: str = field(default="SmolLM2-135M-Instruct", metadata={"help": "model name the API answers to"})
    port: int = field(
        default=8100,
        metadata={
            "help": "loopback port; a vLLM server serving the same model (name "
            "and folder, per /v1/models) there is reused, anything else refused"
        },
    )
    max_model_len: int = field(default=4096, metadata={"help": "context length (prompt + trajectory tokens)"})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "weights dtype: auto = float32 on CPUs without native bf16 "
            "(avx512_bf16/AMX), where bf16 is emulated, and bfloat16 "
            "on CPUs with it and on GPUs; or any vLLM --dtype"
        },
    )
    kv_cache_gib: int = field(default=1, metadata={"help": "VLLM_CPU_KVCACHE_SPACE in GiB"})
    all_cores: bool = field(default=False, metadata={"help": "do not reserve a core for the API frontend"})
    chunked_prefill: bool = field(
        default=False, metadata={"help": "off: vLLM 0.32 CPU crashes on a seeded request whose prefill is split"}
    )
    startup_timeout_s: float = field(default=300.0, metadata={"help": "give up if not ready by then"})
    log: str = field(default="", metadata={"help": "file for the engine's output; empty = discarded"})
    chat_template: str = field(
        default="",
        metadata={
            "help": "jinja chat template for /v1/chat/completions (`tools` = the shipped ChatML template with "
            "Hermes-style tool calls, coa/templates/chatml_tools.jinja; empty = the model's own)"
        },
    )
    tool_call_parser: str = field(
        default="",
        metadata={"help": "vLLM --tool-call-parser (e.g. hermes): native tool calls for chat teachers; empty = none"},
    )
    reasoning_parser: str = field(
        default="",
        metadata={
            "help": "vLLM --reasoning-parser (e.g. deepseek_r1, qwen3): reasoning in its own field; empty = none"
        },
    )

    def __post_init__(self) -> None:
        if not 0 < int(self.port) < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"


def model_dir(cfg: VLLMServerConfig) -> Path:
    if cfg.model:
        return Path(cfg.model)
    return base_model_dir()


def vllm_command(cfg: VLLMServerConfig) -> list[str]:
    # `vllm serve` fails for the vllm-cpu distribution (its package metadata is named differently)
    return (
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model_dir(cfg)),
            "--served-model-name",
            cfg.served_name,
            "--host",
            HOST,
            "--port",
            str(cfg.port),
            "--dtype",
            serving_dtype(cfg.dtype),
            "--max-model-len",
            str(cfg.max_model_len),
            "--enforce-eager",
            "--disable-log-stats",
        ]
        + ([] if cfg.chunked_prefill else ["--no-enable-chunked-prefill"])
        + chat_flags(cfg)
    )


def chat_flags(cfg: VLLMServerConfig) -> list[str]:
    """What ``/v1/chat/completions`` needs for chat teachers: a template, tool calls, a reasoning field."""
    flags = []
    if cfg.chat_template:
        flags += ["--chat-template", str(TOOLS_TEMPLATE if cfg.chat_template == "tools" else cfg.chat_template)]
    if cfg.tool_call_parser:
        flags += ["--enable-auto-tool-choice", "--tool-call-parser", cfg.tool_call_parser]
    if cfg.reasoning_parser:
        flags += ["--reasoning-parser", cfg.reasoning_parser]
    return flags


def vllm_env(cfg: VLLMServerConfig) -> dict:
    env = {
        "VLLM_CPU_KVCACHE_SPACE": str(cfg.kv_cache_gib),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    if cfg.all_cores:
        env |= {"VLLM_CPU_OMP_THREADS_BIND": f"0-{(os.cpu_count() or 1) - 1}", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    return env


def served_models(base_url: str) -> list[str]:
    return [m["id"] for m in model_cards(base_url)]


def model_cards(base_url: str) -> list[dict]:
    """``GET /v1/models``: vLLM's cards carry the served name (``id``) and the folder it loaded (``root``)."""
    r = httpx.get(f"{base_url.rstrip('/')}/models", timeout=5.0)
    r.raise_for_status()
    return list(r.json()["data"])


def same_model(cfg: VLLMServerConfig, cards: list[dict]) -> bool:
    """Does a server with these ``/v1/models`` cards serve ``cfg``'s model (its name and its folder)?"""
    want = Path(model_dir(cfg)).resolve()
    return any(c.get("id") == cfg.served_name and c.get("root") and Path(c["root"]).resolve() == want for c in cards)


def reuse_or_refuse(cfg: VLLMServerConfig) -> None:
    """A server answers on the port: reuse it (saying so on stderr) only if it serves the same model,
    else refuse in one line. An orphan of an earlier run must never be reused without notice."""
    where = f"{HOST}:{cfg.port}"
    try:
        cards = model_cards(cfg.base_url)
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        raise BadInput(
            f"{where} answers /health but not /v1/models like a vLLM server: stop what listens there "
            f"or choose another port (port=N; serve.port=N for synth.run)"
        ) from None
    if not same_model(cfg, cards):
        served = ", ".join(f"{c.get('id')!r} from {c.get('root') or '?'}" for c in cards) or "no model"
        raise BadInput(
            f"{where} already serves {served}, not {cfg.served_name!r} from {model_dir(cfg)}: stop that "
            f"server or choose another port (port=N; serve.port=N for synth.run)"
        )
    print(
        f"reusing the vLLM server already on {where} ({cfg.served_name} from {model_dir(cfg)}); "
        f"this run did not start it and leaves it running",
        file=sys.stderr,
    )


def start_engine(cfg: VLLMServerConfig) -> Server | None:
    """Start the engine, or return None if one serving the same model already answers on the port.

    The caller owns a returned ``Server`` and must ``stop()`` it (session fixtures do this); it is stopped
    with this process in any case (``coa.procs``). A port taken by anything else is refused in one line.
    """
    health = cfg.base_url.removesuffix("/v1") + "/health"  # unauthenticated, also when a key is required
    if is_up(health):
        reuse_or_refuse(cfg)
        return None
    require_free_port(HOST, cfg.port, "port=N; serve.port=N for synth.run")
    return Server(vllm_command(cfg), health, log=cfg.log or None, env=vllm_env(cfg)).start(cfg.startup_timeout_s)


@contextmanager
def embedded_teacher(cfg: VLLMServerConfig) -> Iterator[str]:
    """The engine's OpenAI-compatible base URL while inside the block; stops what it started."""
    server = start_engine(cfg)
    try:
        yield cfg.base_url
    finally:
        if server is not None:
            server.stop()


@entry_point("synth.serve")
def main(argv: list[str] | None = None) -> int:
    # the same settings as the engine synth.run starts: params.yaml section synth.serve
    cfg = cli(VLLMServerConfig, "synth.serve", sys.argv[1:] if argv is None else argv, __doc__)
    started = time.perf_counter()
    server = start_engine(cfg)  # SIGTERM/SIGHUP unwind like Ctrl-C (entry_point): the engine is stopped either way
    if server is None:
        return 0
    print(
        f"{cfg.served_name} ready at {cfg.base_url} after {time.perf_counter() - started:.0f}s (Ctrl-C stops it)",
        file=sys.stderr,
    )
    try:
        while server.proc.poll() is None:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    if server.proc.returncode not in (0, -signal.SIGTERM):
        print(
            f"the engine exited with code {server.proc.returncode}"
            + (f"; see {cfg.log}" if cfg.log else "; run with log=FILE to keep its output"),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
