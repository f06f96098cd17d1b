"""What committed outputs record for a model folder (``coa.model.model_label``): nothing machine-specific."""

from __future__ import annotations

import coa.model
from coa.model import DEFAULT_NAME, model_label


def test_the_embedded_model_by_name_a_run_folder_relative_another_as_given(tmp_path, monkeypatch):
    monkeypatch.setenv("COA_MODELS_DIR", str(tmp_path / "machine" / "models"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/train/sft1").mkdir(parents=True)
    assert model_label(coa.model.models_dir() / DEFAULT_NAME) == DEFAULT_NAME
    assert model_label(tmp_path / "runs/train/sft1") == "runs/train/sft1"
    assert model_label("runs/train/sft1") == "runs/train/sft1"
    assert model_label("/elsewhere/ckpt") == "/elsewhere/ckpt"
