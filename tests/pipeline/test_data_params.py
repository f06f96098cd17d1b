"""The data are params: params.yaml's top-level ``data`` names the corpus and the questions, dvc.yaml reads
them through DVC templating and ``coa.questions split`` through its config, and nothing in the pipeline
names the embedded HotpotQA files itself (so ``dvc exp run -S data.corpus=… -S data.questions=…`` moves
the whole method to another dataset; tests/pipeline/test_pipeline.py runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from coa.config import load_config
from coa.questions import SplitConfig
from tests.pipeline.test_paths import ROOT, load_stages, stage_path, under

OWN = {"corpus": "data/own/passages.jsonl", "questions": "data/own/questions.parquet"}


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_the_data_section_names_the_embedded_dataset(params):
    assert set(params["data"]) == {"corpus", "questions"}
    assert all((ROOT / path).is_file() for path in params["data"].values())
    assert "questions" not in params["split"]  # one home: data.questions


def test_dvc_yaml_reads_the_data_from_params(params):
    default = load_stages()
    own = load_stages({**params, "data": OWN})
    cmd, deps, _ = own["index"]
    assert f"--corpus {OWN['corpus']} " in cmd and OWN["corpus"] in deps
    assert OWN["questions"] in own["split"][1]
    for path in params["data"].values():  # the embedded files appear only where the params put them
        assert [n for n, (c, d, _) in default.items() if path in str(c) or path in d] in (["index"], ["split"])
        assert not [n for n, (c, d, _) in own.items() if path in str(c) or path in d], path
    assert set(own) == set(default)


def test_split_reads_data_questions(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"data": OWN, "split": {"heldout": 5}}))
    cfg = load_config(SplitConfig, "split", params_file=path)
    assert (cfg.questions, cfg.heldout) == (OWN["questions"], 5)
    assert load_config(SplitConfig, "split", ["questions=mine.jsonl"], params_file=path).questions == "mine.jsonl"
    assert (
        Path(load_config(SplitConfig, "split", params_file="none").questions).name
        == "hotpotqa_dev_union_flashrag.jsonl.gz"
    )  # no params file: the embedded questions


def test_split_may_not_set_its_own_questions(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"data": OWN, "split": {"questions": "other.jsonl"}}))
    with pytest.raises(
        ValueError,
        match=r"^.*params.yaml: split.questions: set once, at the top level "
        r"\(`data.questions`\), which dvc.yaml reads too; remove it from the section$",
    ):
        load_config(SplitConfig, "split", params_file=path)


def test_synthesised_questions_are_a_stage_only_when_asked_for(params):
    """``question_sets`` (empty by default) adds one ``questions@NAME`` stage per entry; pointing data.questions
    at its file puts it in front of split (docs/how-to/questions.md), with no cycle: its seeds are its own."""
    assert params["question_sets"] == {} and not [n for n in load_stages() if n.startswith("questions")]
    seeds, composed = params["data"]["questions"], "runs/questions/compose/questions.jsonl"
    stages = load_stages(
        {**params, "question_sets": {"compose": {"seeds": seeds}}, "data": {**params["data"], "questions": composed}}
    )
    cmd, deps, outs = stages["questions@compose"]
    assert cmd == f"python -m synth.questions questions={seeds} out=runs/questions/compose"
    assert seeds in deps and "runs/index" in deps
    assert composed in outs and composed in stages["split"][1]
    assert all(under(o, stage_path("questions@compose")) for o in outs), outs
    assert not [n for n, (c, d, _) in stages.items() if n != "questions@compose" and (seeds in str(c) or seeds in d)]
