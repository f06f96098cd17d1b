"""An SFT stage with an empty set: a clear error by default, or a loud pass-through when asked."""

import json

import pytest
from safetensors.torch import load_file

from train.run import main


def test_empty_set_is_an_error_by_default(empty_sets, tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="has no rows; an empty set cannot be trained on"):
        main(
            [
                "stage=sft2",
                f"model={tiny_dir}",
                f"sets_dir={empty_sets}",
                f"runs_dir={tmp_path / 'runs'}",
                f"base_model={tiny_dir}",
            ]
        )


def test_pass_through_saves_the_start_unchanged(empty_sets, tiny_dir, tmp_path, capsys):
    (metrics,) = main(
        [
            "stage=sft1",
            f"model={tiny_dir}",
            f"sets_dir={empty_sets}",
            f"runs_dir={tmp_path / 'runs'}",
            f"base_model={tiny_dir}",
            "on_empty_set=pass_through",
        ]
    )
    assert "WARNING: sft1" in capsys.readouterr().err
    out = tmp_path / "runs/sft1"
    assert metrics["steps"] == 0 and "empty set" in json.loads((out / "metrics.json").read_text())["skipped"]
    before, after = load_file(tiny_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    assert all((before[k].float() - after[k].float()).abs().max() < 1e-2 for k in before)  # bf16 round trip


def test_a_stage_outside_the_chain_passes_its_start_through(empty_sets, tiny_dir, tmp_path, capsys):
    # the ablation arm "SFT-2 only": sft1 is not trained (its empty set is never read), the base goes on
    (metrics,) = main(
        [
            "stage=sft1",
            f"model={tiny_dir}",
            f"sets_dir={empty_sets}",
            f"runs_dir={tmp_path / 'runs'}",
            f"base_model={tiny_dir}",
            "chain=[sft2]",
        ]
    )
    assert "not in train.chain ['sft2']" in capsys.readouterr().err
    assert metrics["steps"] == 0 and metrics["skipped"] == "not in train.chain ['sft2']"
    before, after = load_file(tiny_dir / "model.safetensors"), load_file(tmp_path / "runs/sft1/model.safetensors")
    assert all(before[k].float().equal(after[k].float()) for k in before)


def test_chain_names_known_stages():
    from coa.config import build
    from train.config import TrainConfig

    with pytest.raises(ValueError, match=r"chain must list stages among sft1, sft2, sft3, rl1, rl2; got \['sft4'\]"):
        build(TrainConfig, {"chain": ["sft4"]}, "test")
