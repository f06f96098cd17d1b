"""The one configuration surface: values read by the field's type, params.yaml checked the same way,
the shared top-level format, presets, --help and --print-config on every entry point."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import yaml

import coa.config
from coa.config import cli, load_config


@dataclasses.dataclass
class Inner:
    base_url: str = dataclasses.field(default="", metadata={"help": "where the server answers"})
    model: str = "m"


@dataclasses.dataclass
class Cfg:
    """A test config."""

    lr: float = dataclasses.field(default=1e-3, metadata={"help": "the learning rate"})
    steps: int = 1
    flag: bool = False
    name: str = "x"
    limit: int | None = None
    items: list = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)
    format: str = "autocoa"
    inner: Inner = dataclasses.field(default_factory=Inner)


@pytest.fixture
def params(tmp_path, monkeypatch):
    path = tmp_path / "params.yaml"
    monkeypatch.setattr(coa.config, "PARAMS_FILE", str(path))
    return path


def test_command_line_values_are_read_by_the_fields_type(params):
    params.write_text("stage: {}\n")
    cfg = load_config(
        Cfg,
        "stage",
        [
            "lr=5e-5",
            "steps=1_000",
            "flag=yes",
            "name=no",
            "limit=none",
            "items=[a, 2]",
            "extra={k: 1e-3, on: true}",
            "inner.model=1e3",
        ],
    )
    assert (cfg.lr, cfg.steps, cfg.flag, cfg.name, cfg.limit) == (5e-5, 1000, True, "no", None)
    assert cfg.items == ["a", 2] and cfg.extra == {"k": 1e-3, "on": True} and cfg.inner.model == "1e3"
    assert isinstance(cfg.lr, float)
    for text, value in (("1", 1.0), ("0.5", 0.5), (".5", 0.5), ("-2E-3", -2e-3), ("1e3", 1000.0)):
        assert load_config(Cfg, "stage", [f"lr={text}"]).lr == value
    for text, value in (("true", True), ("no", False), ("1", True), ("0", False), ("False", False)):
        assert load_config(Cfg, "stage", [f"flag={text}"]).flag is value
    assert load_config(Cfg, "stage", ["items=a,b"]).items == ["a", "b"]
    assert load_config(Cfg, "stage", ["limit=7"]).limit == 7
    assert load_config(Cfg, "stage", ['name="<think>\\n"']).name == "<think>\n"  # quoted: YAML escapes


def test_params_yaml_values_are_read_the_same_way(params):
    # PyYAML alone reads 5e-5 as a string and no as False: here both follow the field's type
    params.write_text("stage:\n  lr: 5e-5\n  name: no\n  flag: yes\n  limit: null\n  inner: {model: 12}\n")
    cfg = load_config(Cfg, "stage")
    assert (cfg.lr, cfg.name, cfg.flag, cfg.limit, cfg.inner.model) == (5e-5, "no", True, None, "12")


@pytest.mark.parametrize(
    "arg, message",
    [
        ("lr=fast", r"stage\.lr: expected a float \(e\.g\. 0\.5, 5e-5\), got 'fast'"),
        ("steps=1.5", r"stage\.steps: expected an integer, got '1\.5'"),
        ("flag=maybe", r"stage\.flag: expected a boolean \(true/false/yes/no/1/0\), got 'maybe'"),
        ("limit=many", r"stage\.limit: expected an integer or null, got 'many'"),
        ("extra=[1]", r"stage\.extra: expected a mapping \(\{key: value\}\), got '\[1\]'"),
        ("inner.nope=1", r"stage\.inner: unknown key 'nope'; valid keys: base_url, model"),
    ],
)
def test_a_bad_value_names_the_key_the_value_and_the_type(params, arg, message):
    params.write_text("stage: {}\n")
    with pytest.raises(ValueError, match=message):
        load_config(Cfg, "stage", [arg])


def test_a_bad_value_in_params_yaml_is_caught_too(params):
    params.write_text("stage:\n  steps: many\n")
    with pytest.raises(ValueError, match=r"stage\.steps: expected an integer, got 'many'"):
        load_config(Cfg, "stage")


def test_a_missing_params_file_fails_unless_none_is_asked_for(tmp_path, monkeypatch):
    monkeypatch.setattr(coa.config, "PARAMS_FILE", str(tmp_path / "nowhere.yaml"))
    with pytest.raises(
        FileNotFoundError,
        match=r"params file not found: .*nowhere\.yaml \(run from the project "
        r"root, set COA_PARAMS=PATH, or COA_PARAMS=none",
    ):
        load_config(Cfg, "stage")
    monkeypatch.setattr(coa.config, "PARAMS_FILE", "none")
    assert load_config(Cfg, "stage", ["steps=3"]).steps == 3


def test_format_is_set_once_at_the_top(params):
    params.write_text("format: search_r1\nstage: {steps: 2}\n")
    assert load_config(Cfg, "stage").format == "search_r1"
    assert load_config(Cfg, "stage", ["format=autocoa"]).format == "autocoa"  # one run may override it
    params.write_text("format: search_r1\nstage: {format: autocoa}\n")
    with pytest.raises(ValueError, match=r"params\.yaml: stage\.format: the format is set once, at the top level"):
        load_config(Cfg, "stage")


def test_precedence_defaults_params_preset_command_line(params, tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("format: search_r1\nstage: {steps: 3, name: from_preset}\n")
    params.write_text(f"preset: {preset}\nstage: {{steps: 2, name: from_params, flag: true}}\n")
    cfg = load_config(Cfg, "stage", ["name=from_cli"])
    assert (cfg.lr, cfg.flag, cfg.steps, cfg.name, cfg.format) == (1e-3, True, 3, "from_cli", "search_r1")
    assert load_config(Cfg, "stage", ["preset=none"]).steps == 2
    with pytest.raises(
        FileNotFoundError,
        match=r"preset 'nope' not found: .*presets/nope\.yaml \(known presets: "
        r"paper\)",
    ):
        load_config(Cfg, "stage", ["preset=nope"])


def test_help_lists_every_dotted_key_with_default_and_help(params, capsys):
    with pytest.raises(SystemExit) as e:
        cli(Cfg, "stage", ["--help"], "DOC LINE")
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("DOC LINE")
    assert "  lr                               float = 0.001\n" in out and "the learning rate" in out
    assert "inner.base_url" in out and "where the server answers" in out and "inner.model" in out


def test_print_config_is_yaml_of_the_resolved_settings(params, capsys):
    params.write_text("format: search_r1\nstage: {steps: 2}\n")
    with pytest.raises(SystemExit) as e:
        cli(Cfg, "stage", ["--print-config", "lr=5e-5", "inner.model=no"])
    printed = yaml.safe_load(capsys.readouterr().out)["stage"]
    assert e.value.code == 0
    assert (printed["lr"], printed["steps"], printed["format"], printed["inner"]["model"]) == (
        5e-5,
        2,
        "search_r1",
        "no",
    )


def test_bad_settings_exit_2_with_the_message(params, capsys):
    params.write_text("stage: {}\n")
    with pytest.raises(SystemExit) as e:
        cli(Cfg, "stage", ["steps=x"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == "stage.steps: expected an integer, got 'x'"


ENTRY_POINTS = [  # (module, argv before the switch, params section printed)
    ("coa.search.__main__", ["build"], "BuildConfig"),
    ("coa.search.__main__", ["serve"], "SearchServerConfig"),
    ("coa.search.__main__", ["query", "a question"], "QueryConfig"),
    ("coa.questions", ["split"], "split"),
    ("synth.run", [], "synth"),
    ("synth.serve", [], "synth"),
    ("curate.run", [], "curate"),
    ("train.run", [], "train"),
    ("evaluate.run", [], "evaluate"),
]


@pytest.mark.parametrize("module, head, section", ENTRY_POINTS)
def test_every_entry_point_has_help_and_print_config(module, head, section, capsys, monkeypatch):
    monkeypatch.setattr(coa.config, "PARAMS_FILE", "params.yaml")  # the project's own file
    main = importlib.import_module(module).main

    def run(argv):
        try:
            return main(argv)
        except SystemExit as e:  # train.run raises it; the others return their exit code
            return e.code

    assert run(head + ["--help"]) == 0
    out = capsys.readouterr().out
    assert "keys (" in out and "--print-config" in out
    assert run(head + ["--print-config"]) == 0
    assert section in yaml.safe_load(capsys.readouterr().out)
    assert run(head + ["no_such_key=1"]) == 2
    assert "unknown key 'no_such_key'; valid keys: " in capsys.readouterr().err


def test_train_run_reads_a_learning_rate_in_e_notation_as_a_float(capsys):
    from train.run import main

    with pytest.raises(SystemExit):
        main(["stage=sft2", "sft2.learning_rate=5e-5", "--print-config"])
    assert yaml.safe_load(capsys.readouterr().out)["train"]["sft2"]["learning_rate"] == 5e-5


def test_every_setting_has_help():
    from coa.config import describe
    from coa.questions import SplitConfig
    from coa.search.__main__ import COMMANDS
    from curate.config import CurateConfig
    from evaluate.run import EvalConfig
    from synth.config import SynthConfig
    from train.config import TrainConfig

    missing = [
        f"{cls.__name__}.{key}"
        for cls in (SplitConfig, SynthConfig, CurateConfig, TrainConfig, EvalConfig, *COMMANDS.values())
        for key, _, text in describe(cls)
        if not text
    ]
    assert missing == []
