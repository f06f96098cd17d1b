"""The padding-free attention path (train/attention.py).

torch's variable-length flash kernel runs on CUDA only, so on a CPU ``reference_varlen_kernel_stand_in`` takes
its place: plain SDPA per sequence, causal, with the kernel's argument layout ((tokens, heads, dim) and
cumulative sequence starts). What is tested is everything around the kernel: the layout transposes, the
grouped-query heads, the sequence boundaries TRL's collator passes, and the mask transformers builds for it.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from train import attention
from train.config import TrainConfig


def reference_varlen_kernel_stand_in(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, window_size=(-1, -1), scale=None):
    """A CPU stand-in for ``torch.nn.attention.varlen.varlen_attn`` (the CUDA flash kernel): SDPA per sequence.
    Takes the later torch's argument names (``window_size``, no ``enable_gqa``), so the caller must repeat the
    key/value heads itself."""
    assert tuple(window_size) == (-1, 0), "the caller must ask for causal attention"
    assert q.dtype == torch.bfloat16, "the flash kernel takes half precision only"
    assert k.shape[1] == q.shape[1], "this kernel cannot share key/value heads"
    out = torch.empty_like(q)
    bounds = cu_seq_q.tolist()
    for a, b in zip(bounds, bounds[1:]):
        qs, ks, vs = (t[a:b].transpose(0, 1).float() for t in (q, k, v))
        out[a:b] = (
            torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale)
            .transpose(0, 1)
            .to(q.dtype)
        )
    return out


@pytest.fixture
def varlen_stand_in(monkeypatch):
    monkeypatch.setattr(attention, "varlen_kernel", lambda: reference_varlen_kernel_stand_in)
    attention.register()


def test_padding_free_row_matches_each_sequence_alone(varlen_stand_in):
    """Three sequences concatenated by TRL's padding-free collator give, position for position, the logits of each
    sequence run alone with SDPA: no token attends across a boundary, positions restart per sequence."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    lengths = (5, 11, 7)
    sequences = [torch.randint(0, 97, (n,)).tolist() for n in lengths]
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(
        [{"input_ids": ids} for ids in sequences]
    )
    assert batch["cu_seq_lens_q"].tolist() == [0, 5, 16, 23]
    with torch.no_grad():
        alone = torch.cat([model(input_ids=torch.tensor([ids])).logits[0] for ids in sequences])
        model.set_attn_implementation(attention.VARLEN)
        packed = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            cu_seq_lens_q=batch["cu_seq_lens_q"],
            cu_seq_lens_k=batch["cu_seq_lens_k"],
            max_length_q=batch["max_length_q"],
            max_length_k=batch["max_length_k"],
        ).logits[0]
    torch.testing.assert_close(packed.float(), alone.float(), atol=2e-2, rtol=0)
    # and a kernel that ignored the boundaries would not pass: the second sequence attends to the first
    with torch.no_grad():
        crossing = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            cu_seq_lens_q=torch.tensor([0, 23], dtype=torch.int32),
            cu_seq_lens_k=torch.tensor([0, 23], dtype=torch.int32),
            max_length_q=23,
            max_length_k=23,
        ).logits[0]
    assert (crossing[5:].float() - alone[5:].float()).abs().max() > 0.05


def test_padded_rows_are_refused_with_the_fix(varlen_stand_in):
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    config._attn_implementation = attention.VARLEN
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 97, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    with pytest.raises(ValueError, match="padding-free micro-batches only"):
        model(input_ids=ids, attention_mask=mask)


def test_kernel_options_follow_the_installed_signature():
    def older(q, k, v, cu_q, cu_k, max_q, max_k, is_causal=False, scale=None):
        pass

    def newer(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
        pass

    assert attention.kernel_options(older, 0.5, gqa=False) == {"is_causal": True, "scale": 0.5}
    assert attention.kernel_options(newer, None, gqa=True) == {"window_size": (-1, 0), "enable_gqa": True}
    with pytest.raises(RuntimeError, match="neither is_causal nor window_size"):
        attention.kernel_options(lambda q, k, v, a, b, c, d: None, None, gqa=False)


def test_auto_choice_on_a_cpu():
    assert attention.choose("auto", padding_free=True)[0] == "sdpa"
    assert attention.choose("auto", padding_free=False) == ("sdpa", "padded micro-batches")
    assert attention.choose("varlen", padding_free=False) == ("varlen", "set")
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        TrainConfig(attn_implementation="flash")
