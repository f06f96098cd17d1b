"""Issue 48, part A: a refused run deletes nothing, NaN never switches a limit off, names stay names.

The rules, each enforced in the one place every entry point passes: rows are deleted only holding their
folder's writer lock (``coa.fingerprint.remove_rows``); every float setting is finite (``coa.config``'s
reader); a setting that becomes a file name is a name (``coa.paths.file_name``); JSON files hold no NaN
(``coa.io.write_json``). Each probe of the issue is reproduced with the real command."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing

import pytest

import coa.config
from coa.config import cli
from coa.errors import BadInput
from coa.fingerprint import FINGERPRINT_FILE, claim_rows
from coa.io import OutputBusy, write_json
from coa.paths import file_name
from coa.trajectory import Trajectory
from synth.shards import ShardWriter
from tests.test_settings import sections


@pytest.fixture(autouse=True)
def no_params_file(monkeypatch):
    monkeypatch.setenv("COA_PARAMS", "none")
    monkeypatch.setattr(coa.config, "PARAMS_FILE", "none")


# ---- a refused overwrite deletes nothing -----------------------------------------------------------------


def snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def written_rows(out, fingerprint: dict, n: int) -> None:
    """What a run leaves: shards of ``n`` rows, its fingerprint and a summary."""
    with ShardWriter(out, rows_per_shard=2, fingerprint=fingerprint) as writer:
        for i in range(n):
            writer.add(Trajectory(question_id=f"q{i}", question="?", golden_answers=["a"], prompt="p"))
    (out / "summary.json").write_text('{"rows": %d}\n' % n)


def test_claim_rows_with_overwrite_deletes_nothing_while_a_writer_holds_the_folder(tmp_path):
    out = tmp_path / "out"
    written_rows(out, {"sampling": {"temperature": 0.7}}, 4)
    before = snapshot(out)
    with ShardWriter(out, fingerprint={"sampling": {"temperature": 0.7}}):  # the resumed run, still writing
        with pytest.raises(OutputBusy, match="being written by another process"):
            claim_rows(out, {"sampling": {"temperature": 0.1}}, "synth", overwrite=True)
        assert snapshot(out) == before
    claim_rows(out, {"sampling": {"temperature": 0.1}}, "synth", overwrite=True)  # once it is done: replaced
    assert not list(out.glob("*.parquet")) and not (out / FINGERPRINT_FILE).exists()


def test_a_writer_refuses_a_fingerprint_recorded_since_its_claim(tmp_path):
    """Two runs claim the same empty ``out`` (each before loading its model): the one that locks second
    finds the other's fingerprint and refuses, so their rows never mix."""
    out = tmp_path / "out"
    claim_rows(out, {"sampling": {"temperature": 0.7}}, "evaluate")
    claim_rows(out, {"sampling": {"temperature": 0.1}}, "evaluate")
    written_rows(out, {"sampling": {"temperature": 0.7}}, 2)
    before = snapshot(out)
    with pytest.raises(BadInput, match=r"another run recorded other settings .*sampling.temperature: 0.7 -> 0.1"):
        ShardWriter(out, fingerprint={"sampling": {"temperature": 0.1}}).__enter__()
    assert snapshot(out) == before
    ShardWriter(out).__enter__()  # and the lock was let go


def test_evaluate_overwrite_while_another_evaluation_writes_deletes_nothing(tmp_path, capsys):
    """The probe: ``evaluate.run overwrite=true`` into an output another evaluation is writing was refused
    only after it had deleted that evaluation's rows (which then exited 0 with metrics over 4 of 6)."""
    from evaluate.run import main

    questions = tmp_path / "heldout.jsonl"
    questions.write_text(
        "".join(json.dumps({"id": f"q{i}", "question": "Who?", "golden_answers": ["x"]}) + "\n" for i in range(6))
    )
    trajectories = tmp_path / "eval" / "api" / "trajectories" / "heldout"
    written_rows(trajectories, {"writer": "evaluate.run", "sampling": {"temperature": 0.0}}, 4)
    before = snapshot(trajectories)
    argv = [
        "name=api",
        f"out_root={tmp_path / 'eval'}",
        f"questions=[{questions}]",
        "teacher.base_url=http://127.0.0.1:9/v1",
        "teacher.model=m",
        f"search.index={tmp_path / 'no-index'}",
        "overwrite=true",
    ]
    with ShardWriter(trajectories):  # the other evaluation, resumed and still writing
        assert main(argv) == 2
        assert snapshot(trajectories) == before
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is being written by another process" in err, err


# ---- NaN and infinity --------------------------------------------------------------------------------

BAD_FLOATS = ("nan", "NaN", "inf", "-inf", "Infinity", "1e999")


def entry_points() -> dict:
    """Every entry point's (section, dataclass): the pipeline's sections and the command-line tools'."""
    from annotate.serve import ReviewServerConfig
    from coa.search.__main__ import COMMANDS
    from coa.tools.__main__ import CallConfig

    return {
        **sections(),
        "annotate_server": ReviewServerConfig,
        "coa.tools call": CallConfig,
        **{f"coa.search {name}": cls for name, cls in COMMANDS.items()},
    }


def is_float(tp) -> bool:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(is_float(a) for a in typing.get_args(tp))
    return tp is float


def float_keys(cls, prefix: str = "") -> list[str]:
    """The dotted key of every float field of ``cls`` and of the dataclasses nested in it."""
    keys, hints = [], typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += float_keys(tp, f"{prefix}{f.name}.")
        elif f.init and is_float(tp):
            keys.append(prefix + f.name)
    return keys


FLOAT_SETTINGS = [(section, key) for section, cls in entry_points().items() for key in float_keys(cls)]


def test_the_float_settings_are_found():
    """Not vacuous: the probe's keys are among them."""
    found = set(FLOAT_SETTINGS)
    assert len(found) > 40, len(found)
    for key in ("teacher.price_prompt", "teacher.price_completion", "teacher.max_cost_usd", "temperature"):
        assert ("synth", key) in found, key


@pytest.mark.parametrize("section, key", FLOAT_SETTINGS, ids=[f"{s}:{k}" for s, k in FLOAT_SETTINGS])
def test_every_float_setting_refuses_nan_and_infinity_naming_the_key(section, key, capsys):
    cls = entry_points()[section]
    for bad in BAD_FLOATS:
        with pytest.raises(SystemExit) as exit_:
            cli(cls, None if section.startswith("coa.") else section, [f"{key}={bad}"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1, (bad, err)
        assert f"{key}: expected a finite number, got '{bad}'" in err, err


@pytest.mark.parametrize("section, key", FLOAT_SETTINGS, ids=[f"{s}:{k}" for s, k in FLOAT_SETTINGS])
def test_a_non_finite_python_value_is_refused_too(section, key):
    """``build`` reads Python values (a dict of evaluate's teacher settings, say) the same way."""
    *parents, leaf = key.split(".")
    for value in (math.nan, math.inf, -math.inf):
        values: dict = {leaf: value}
        for parent in reversed(parents):
            values = {parent: values}
        with pytest.raises(ValueError, match=f"{section}.{key}: expected a finite number"):
            coa.config.build(entry_points()[section], values, section)


def test_json_files_never_hold_nan_or_infinity(tmp_path):
    """A NaN reaching a summary is written as null: the file stays JSON any strict reader parses."""
    path = write_json(tmp_path / "summary.json", {"cost": math.nan, "spent": [math.inf, -math.inf, 1.5], "n": 3})

    def refuse(constant):
        raise AssertionError(f"{constant} in {path}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"cost": None, "spent": [None, None, 1.5], "n": 3}


# ---- names -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", " ", ".", "..", "../../x", "/abs/path", "a/b", "a\\b", "x/", "nul\0"])
def test_a_path_is_not_a_name(value):
    with pytest.raises(BadInput, match="must be a name, not a path"):
        file_name(value, "name")


@pytest.mark.parametrize("value", ["sft2", "rl2.v1", "..hidden-ish", "base model"])
def test_a_name_is_kept(value):
    assert file_name(value, "name") == value


# every setting that becomes a file or folder name, on its entry point's command line
NAME_SETTINGS = [
    ("evaluate", "name", "{}"),
    ("evaluate", "names", "[base, {}]"),
    ("report", "names", "[{}]"),
    ("report", "power_pair", "[sft2, {}]"),
    ("report", "fidelity", "[{}]"),
    ("checks", "names", "[{}]"),
    ("checks", "stages", "[{}]"),
    ("ablation", "stage", "{}"),
    ("annotate", "sets", "[coa, {}]"),
    ("export", "split", "{}"),
]


@pytest.mark.parametrize("section, key, form", NAME_SETTINGS)
@pytest.mark.parametrize("path", ["../../x", "/abs/path", "a/b"])
def test_every_setting_used_as_a_file_name_refuses_a_path(section, key, form, path, capsys):
    extra = ["to=verl"] if section == "export" else []
    with pytest.raises(SystemExit) as exit_:
        cli(entry_points()[section], section, [*extra, f"{key}={form.format(path)}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"{key}={path!r}: must be a name, not a path" in err, err


@pytest.mark.parametrize("name", ["../../x", "{root}/abs"])
def test_evaluate_name_outside_out_root_is_refused_and_writes_nothing(name, tmp_path, capsys):
    """The probe: ``evaluate.run name=../../x`` (or an absolute path) wrote outside ``out_root``."""
    from evaluate.run import main

    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    name = name.format(root=tmp_path)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "q0", "question": "Who?", "golden_answers": ["x"]}) + "\n")
    before = sorted(tmp_path.rglob("*"))
    argv = [f"name={name}", f"out_root={work}", f"questions=[{questions}]", "teacher.base_url=http://127.0.0.1:9/v1"]
    assert main(argv) == 2
    assert f"evaluate: name={name!r}: must be a name, not a path" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before
