"""Retrain, then re-evaluate into the same folder: the old model's trajectories are never reported as the
new one's. ``evaluate.run`` drives the agent loop itself and claims its output by fingerprint."""

from __future__ import annotations

import shutil

import pytest

from coa.fingerprint import FINGERPRINT_FILE
from coa.questions import DEFAULT_QUESTIONS
from evaluate.run import main

pytestmark = [pytest.mark.model, pytest.mark.slow]


def perturb(folder) -> None:
    """A 'retrained' checkpoint: same path, same file size, other weights."""
    from safetensors.torch import load_file, save_file

    path = next(folder.glob("*.safetensors"))
    weights = load_file(path)
    name = next(k for k in weights if k.endswith("norm.weight"))
    weights[name] = weights[name] * 1.5
    save_file(weights, path, metadata={"format": "pt"})


def shards(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.parquet"))}


def test_retrain_then_reevaluate_is_refused_until_overwrite(model_dir, index_dir, tmp_path, capsys):
    checkpoint = tmp_path / "sft2"
    shutil.copytree(model_dir, checkpoint)
    args = [
        "name=sft2",
        f"model={checkpoint}",
        "engine=hf",
        "limit=2",
        f"questions=[{DEFAULT_QUESTIONS}]",
        f"search.index={index_dir}",
        "search.max_tokens=48",
        f"out_root={tmp_path / 'eval'}",
    ]
    trajectories = tmp_path / "eval" / "sft2" / "trajectories" / "hotpotqa_dev_union_flashrag"

    assert main(args) == 0
    first = shards(trajectories)
    assert first and (trajectories / FINGERPRINT_FILE).is_file()

    assert main(args) == 0  # same model, same settings: resumes, nothing regenerated
    assert shards(trajectories) == first

    perturb(checkpoint)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.weights:" in err and "overwrite=true" in err, err
    assert shards(trajectories) == first  # the refused run wrote nothing

    assert main([*args, "overwrite=true"]) == 0
    assert set(shards(trajectories)).isdisjoint(first)  # every row is the retrained model's


@pytest.mark.parametrize(
    "model, message",
    [
        ("missing_folder", "not a model folder"),
        ("truncated", "truncated or not a safetensors file"),
        ("unmarked_checkpoint", "incomplete checkpoint"),
    ],
)
def test_a_bad_model_folder_is_refused_before_anything_starts(model_dir, tmp_path, capsys, model, message):
    folder = tmp_path / model
    if model != "missing_folder":
        shutil.copytree(model_dir, folder)
    if model == "truncated":
        weights = next(folder.glob("*.safetensors"))
        weights.write_bytes(weights.read_bytes()[:1000])
    if model == "unmarked_checkpoint":  # train.run wrote it (metrics beside the weights) but never finished
        (folder / "metrics.json").write_text("{}")
    out_root = tmp_path / "eval"
    assert main(["name=x", f"model={folder}", f"out_root={out_root}", "limit=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out_root.exists()  # validated before any folder was made


def test_bad_settings_are_refused_before_anything_starts(tmp_path, capsys):
    assert main(["name=x", "limit=-1", f"out_root={tmp_path / 'eval'}"]) == 2
    assert "limit must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()
