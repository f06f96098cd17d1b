"""dvc.yaml's stage outputs are the paths ``coa/paths.py`` gives each stage, its ``runs/…`` inputs are some
stage's outputs, and params.yaml's ``runs/…`` values are among them (dvc.yaml is parsed by DVC itself, its
``foreach`` and ``${…}`` templating expanded; nothing runs)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from coa import paths

ROOT = Path(__file__).resolve().parents[2]
PER_ITEM = {
    "train": paths.train,
    "evaluate": paths.evaluation,
    "fidelity": paths.fidelity,
    "reward_probe": paths.reward_probe,
    "questions": paths.questions,
    "onpolicy": paths.onpolicy,
    "onpolicy_train": paths.onpolicy,
    "evaluate_onpolicy": lambda name: paths.evaluation(f"onpolicy_{name}"),
}
SINGLE = {
    "index": paths.INDEX,
    "split": paths.SPLIT,
    "report": paths.EVAL_TABLE,
    "checks": paths.CHECKS,
    "when_to_act": paths.WHEN_TO_ACT,
    "run_report": paths.REPORT,
}


def stage_path(name: str) -> str:
    """The ``coa.paths`` path of a dvc.yaml stage: ``synth_coa`` → runs/synth/coa, ``train@sft2`` → runs/train/sft2."""
    base, _, item = name.partition("@")
    if base.startswith("synth_"):
        return paths.synth(base.removeprefix("synth_"))
    if base.startswith("curate_"):
        return paths.curate(base.removeprefix("curate_"))
    if item and base in PER_ITEM:
        return PER_ITEM[base](item)
    if base in SINGLE:
        return SINGLE[base]
    raise AssertionError(f"dvc.yaml stage {name!r} has no path in coa/paths.py: add one there and in stage_path()")


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def load_stages(params: dict | None = None) -> dict:
    """``{stage name: (cmd, deps, outs)}`` of the project's dvc.yaml as DVC resolves it against the project's
    params.yaml or ``params``. DVC reads it in a scratch repository, so the checkout gets no ``.dvc/tmp``."""
    from dvc.repo import Repo

    text = yaml.safe_dump(params) if params else (ROOT / "params.yaml").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        Repo.init(tmp, no_scm=True)
        shutil.copy(ROOT / "dvc.yaml", Path(tmp) / "dvc.yaml")
        (Path(tmp) / "params.yaml").write_text(text)
        with Repo(tmp) as repo:
            return {
                s.name: (s.cmd, [str(d.def_path) for d in s.deps], [str(o.def_path) for o in s.outs])
                for s in repo.index.stages
            }


@pytest.fixture(scope="module")
def stages() -> dict:
    return load_stages()


def test_every_stage_writes_under_its_coa_paths_path(stages):
    assert stages, "dvc.yaml has no stages"
    wrong = []
    for name, (_, _, outs) in stages.items():
        root = stage_path(name)
        for out in outs:
            # metrics/<stage>*.json|csv: the git-tracked copy of the stage's own metrics (evaluate's: eval_<model>)
            prefix = name.replace("@", "_").replace("evaluate_", "eval_")
            copy = under(out, paths.METRICS) and Path(out).name.startswith(prefix)
            if not (under(out, root) or copy):
                wrong.append(f"{name}: {out} is not under {root}")
    assert not wrong, "\n".join(wrong)


def test_every_run_input_is_some_stages_output(stages):
    outs = [o for _, _, stage_outs in stages.values() for o in stage_outs]
    missing = [
        f"{name}: {dep}"
        for name, (_, deps, _) in stages.items()
        for dep in deps
        if under(dep, paths.RUNS) and not any(under(dep, o) or under(o, dep) for o in outs)
    ]
    assert not missing, "inputs under runs/ that no stage writes:\n" + "\n".join(missing)


def run_values(node, key: str = "") -> list[tuple[str, str]]:
    """(dotted key, value) of every ``runs/…`` string in a params tree."""
    if isinstance(node, dict):
        return [kv for k, v in node.items() for kv in run_values(v, f"{key}.{k}" if key else str(k))]
    if isinstance(node, list):
        return [kv for i, v in enumerate(node) for kv in run_values(v, f"{key}[{i}]")]
    return [(key, node)] if isinstance(node, str) and under(node, paths.RUNS) else []


def test_params_name_runs_paths_that_stages_write(stages):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    roots = [stage_path(name) for name in stages] + [paths.TRAIN]  # train.runs_dir: the stages' parent
    values = run_values(params)
    assert ("search.index", paths.INDEX) in values and ("train.sets_dir", paths.curate("sets")) in values
    stray = [f"{k}: {v}" for k, v in values if not any(under(v, r) for r in roots)]
    assert not stray, "params.yaml runs/ values no stage writes:\n" + "\n".join(stray)


def test_the_package_defaults_are_the_stage_paths():
    from coa.environment import SearchEnvConfig
    from coa.questions import SplitConfig
    from curate.config import CurateConfig
    from evaluate.checks import ChecksConfig
    from evaluate.report import ReportConfig

    assert SearchEnvConfig().index == paths.INDEX
    assert SplitConfig().out == paths.SPLIT
    assert CurateConfig(step="sets").out_dir == paths.curate("sets")
    assert paths.SPLIT_HELDOUT in CurateConfig().eval_sets
    assert (ChecksConfig().out, ReportConfig().out) == (paths.CHECKS, paths.REPORT)
