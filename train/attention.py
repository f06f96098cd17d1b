"""Which attention kernel a stage trains with, and a padding-free one for GPUs.

``attn_implementation: auto`` picks ``varlen`` on a CUDA GPU whose torch has the variable-length flash kernel
(``torch.nn.attention.varlen``), else transformers' ``sdpa``. ``varlen`` is registered here with transformers'
``AttentionInterface``: a padding-free micro-batch (TRL's ``padding_free``/packing collator: one row of several
sequences, ``cu_seq_lens_q`` marking where each starts) runs as one flash call over the real tokens only, each
token attending to the earlier tokens of its own sequence, with no L x L mask built or computed. A micro-batch
without ``cu_seq_lens_q`` (padded rows) goes to ``sdpa`` unchanged, so the setting is safe for every stage.
On a CPU there is no such kernel: a padding-free row runs through ``sdpa`` with the block-diagonal mask that
transformers builds from the position ids.
"""

from __future__ import annotations

import inspect

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

VARLEN = "varlen"


def varlen_kernel():
    """torch's variable-length flash attention (torch >= 2.10 on CUDA), or None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def choose(requested: str, padding_free: bool) -> tuple[str, str]:
    """The implementation a model is loaded with, and why."""
    if requested != "auto":
        return requested, "set"
    if not padding_free:
        return "sdpa", "padded micro-batches"
    if not torch.cuda.is_available():
        return "sdpa", "CPU: no variable-length kernel; padding-free rows get a block-diagonal mask"
    if varlen_kernel() is None:
        return "sdpa", f"torch {torch.__version__} has no torch.nn.attention.varlen"
    return VARLEN, "CUDA with torch.nn.attention.varlen: padding-free micro-batches without a mask"


def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention signature: query (batch, heads, tokens, dim), key/value (batch, kv heads, ...);
    returns (batch, tokens, heads, dim) and no weights."""
    cu_seq_lens = kwargs.get("cu_seq_lens_q")
    if cu_seq_lens is None:  # one unpadded sequence (a generation step, an RL completion): no mask to build
        if attention_mask is not None:
            raise ValueError(
                "attn_implementation=varlen trains padding-free micro-batches only (sft2.padding_free=true or "
                "sft2.packing=true); padded rows need attn_implementation=sdpa"
            )
        return sdpa_attention_forward(module, query, key, value, None, scaling=scaling, dropout=dropout, **kwargs)
    kernel = varlen_kernel()
    # the flash kernel takes half precision only; under autocast rotary embeddings leave q and k in float32
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else query.dtype
    if dtype == torch.float32:
        dtype = torch.bfloat16
    q, k, v = (t[0].transpose(0, 1).to(dtype) for t in (query, key, value))  # (tokens, heads, dim)
    cu = cu_seq_lens.to(device=q.device, dtype=torch.int32)
    longest = int(kwargs.get("max_length_q") or int(cu.diff().max()))
    if k.shape[1] != q.shape[1] and "enable_gqa" not in inspect.signature(kernel).parameters:
        groups = q.shape[1] // k.shape[1]  # grouped-query heads, for a torch whose kernel cannot share them
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    out = kernel(q, k, v, cu, cu, longest, longest, **kernel_options(kernel, scaling, gqa=k.shape[1] != q.shape[1]))
    return out.to(query.dtype).unsqueeze(0), None


def kernel_options(kernel, scaling: float | None, gqa: bool) -> dict:
    """Causal masking, the scale and grouped-query heads in the words of the installed torch: 2.10-2.11 take
    ``is_causal``, later ones a ``window_size`` of (-1, 0)."""
    accepted = inspect.signature(kernel).parameters
    if "is_causal" in accepted:
        options = {"is_causal": True}
    elif "window_size" in accepted:
        options = {"window_size": (-1, 0)}
    else:
        raise RuntimeError(f"torch {torch.__version__}: varlen_attn takes neither is_causal nor window_size")
    if scaling is not None:
        options["scale"] = scaling
    if gqa:
        options["enable_gqa"] = True
    return options


def register() -> None:
    """Make ``attn_implementation="varlen"`` loadable: the kernel above and no mask (like flash attention)."""
    AttentionInterface.register(VARLEN, varlen_attention_forward)
    AttentionMaskInterface.register(VARLEN, flash_attention_mask)
