"""One way to configure every stage: a dataclass, its ``params.yaml`` section, a preset, ``key=value``.

    cfg = cli(SynthConfig, "synth", sys.argv[1:], __doc__)   # an entry point: --help, --print-config
    cfg = load_config(SynthConfig, "synth", ["n=4"])          # from Python

Precedence: dataclass defaults < ``params.yaml`` section < preset < command-line ``key=value``. The dataclass
defaults are the embedded default run, the values ``params.yaml`` sets (``tests/test_settings.py`` keeps them
equal), so ``COA_PARAMS=none`` runs the same settings; a preset only overrides them. Dotted
keys reach nested fields (``sft2.learning_rate=5e-5``); unknown keys fail with the list of valid ones.

Values are read by the type of the field they set, the same way from ``params.yaml`` and from the
command line: ``5e-5`` is a float for a float field, ``no`` stays the string "no" for a string field,
booleans are true/false/yes/no/1/0, lists ``[a, b]``, mappings ``{k: v}``, and ``null``/``none`` is
None where a field allows it. A bad value names the key, the value and the expected type. A float is
finite: ``nan`` and ``inf`` would pass every ``>= 0`` check and switch a limit off (a cost budget, say).

Shared keys at the top of ``params.yaml`` (not inside a section):
  ``format``  the one format preset (autocoa | search_r1) of every stage that has a ``format`` field;
              a section may not set its own, so synth, curate, train and evaluate cannot disagree
              (``format=`` on one command line still overrides it for that run).
  ``prompt``  prompt defaults (demonstrations, prefill, system) that a section's ``prompt`` refines.
  ``search``  the one search environment (``coa.environment.SearchEnvConfig``: index, retriever, top-k,
              action and token budgets) of synthesis, RL and evaluation; like ``format``, no section
              may set its own (``search.topk=5`` on one command line overrides it for that run).
  ``preset``  a file of the same shape applied over ``params.yaml``: a name (``paper`` →
              ``presets/paper.yaml``) or a path; ``preset=NAME`` on any entry point does the same.
  ``data``    the dataset the method runs on (``data.corpus``, ``data.questions``), which ``dvc.yaml``
              also reads. A field declared ``field(..., metadata={"shared": "data.questions"})`` takes
              that top-level value; like ``format``, its section may not set its own (the command line may).

The params file is ``params.yaml`` in the working directory, or ``$COA_PARAMS``. A missing file is an
error (a run from the wrong folder must not silently use other settings); ``COA_PARAMS=none`` runs on
the dataclass defaults, the preset and the command line only.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from coa.errors import report

T = TypeVar("T")
PARAMS_FILE = os.environ.get("COA_PARAMS", "params.yaml")
PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"
NO_FILE = ("", "none", "null")
NULLS = ("", "null", "none", "~")
SHARED_KEYS = ("format", "prompt", "search", "preset", "data")
TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")
# YAML 1.1 (PyYAML) reads 5e-5 as a string: untyped values (trl_args, list items) still get a float
_FLOAT_EXP = re.compile(r"[-+]?(\d[\d_]*\.?\d*|\.\d+)[eE][-+]?\d+")


class Text(str):
    """Unquoted text (a plain YAML scalar or a command-line value) not yet read by a field's type."""


class _Loader(yaml.SafeLoader):
    """YAML whose plain scalars stay ``Text``: the target field's type decides what they mean."""


_Loader.yaml_implicit_resolvers = {}  # no implicit bool/int/float/null: every plain scalar is text


def _construct_text(loader: _Loader, node: yaml.ScalarNode) -> str:
    value = loader.construct_scalar(node)
    return Text(value) if node.style is None else value


_Loader.add_constructor("tag:yaml.org,2002:str", _construct_text)


def _yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, _Loader)
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None


def plain(value: Any) -> Any:
    """What standard YAML makes of ``value`` where no field type says more (list items, dict values)."""
    if isinstance(value, Text):
        if _FLOAT_EXP.fullmatch(value.strip()):
            return float(value)
        return yaml.safe_load(value) if value.strip() else None
    if isinstance(value, dict):
        return {(str(k) if isinstance(k, Text) else k): plain(v) for k, v in value.items()}  # keys are names
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    return {
        bool: "a boolean (true/false/yes/no/1/0)",
        int: "an integer",
        float: "a float (e.g. 0.5, 5e-5)",
        str: "a string",
        list: "a list ([a, b])",
        dict: "a mapping ({key: value})",
        type(None): "null",
    }.get(typing.get_origin(tp) or tp, getattr(tp, "__name__", str(tp)))


class NotFinite(ValueError):
    """A float setting given NaN or an infinity: refused, whatever other type the field also allows."""


def read_value(value: Any, tp: Any, key: str) -> Any:
    """``value`` (text from YAML or the command line, or a Python value) as type ``tp``."""
    shown = str(value) if isinstance(value, Text) else value

    def bad() -> ValueError:
        return ValueError(f"{key}: expected {_describe(tp)}, got {shown!r}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if type(None) in options and (value is None or isinstance(value, str) and value.strip().lower() in NULLS):
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return read_value(value, option, key)
            except NotFinite:
                raise
            except ValueError:
                pass
        raise bad()
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and str(value).strip().lower() in TRUE + FALSE:
            return str(value).strip().lower() in TRUE
        raise bad()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d[\d_]*\s*", value):
            return int(value)
        raise bad()
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise bad()
        if not math.isfinite(number):
            raise NotFinite(f"{key}: expected a finite number, got {shown!r}")
        return number
    if tp is str:
        if isinstance(value, Text) and value[:1] in ('"', "'"):  # a quoted command-line value: YAML escapes
            value = _yaml(value, key)
        if isinstance(value, str):
            return str(value)
        raise bad()
    if tp is list or origin is list:
        if isinstance(value, Text):
            # [a, b] is YAML; a,b or a single item are the short forms
            value = _yaml(value, key) if value.lstrip()[:1] == "[" else [Text(v.strip()) for v in value.split(",")]
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, str):  # a single quoted item
            value = [value]
        if not isinstance(value, list):
            raise bad()
        item = typing.get_args(tp)[0] if typing.get_args(tp) else None
        return [plain(v) if item is None else read_value(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if isinstance(value, Text):
            value = _yaml(value, key) if value.strip() else {}
        if not isinstance(value, dict):
            raise bad()
        return plain(value)
    return plain(value)  # Any or an annotation this reader does not know: standard YAML


def _hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a class defined where its annotations cannot be resolved: use the defaults' types
        out = {}
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            out[f.name] = Any if default in (None, dataclasses.MISSING) else type(default)
        return out


def _init_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def build(cls: type[T], values: dict, where: str) -> T:
    """``cls(**values)`` with every value read by its field's type and nested dataclasses built too."""
    if isinstance(values, Text):
        values = _yaml(values, where) if values.strip() else {}
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping of keys ({{key: value}}), got {values!r}")
    hints, names = _hints(cls), [f.name for f in _init_fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"{where}: unknown key {key!r}; valid keys: {', '.join(names)}")
        tp = hints.get(key, Any)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            kwargs[key] = value if isinstance(value, tp) else build(tp, value, f"{where}.{key}")
        else:
            kwargs[key] = read_value(value, tp, f"{where}.{key}")
    return cls(**kwargs)


def parse_overrides(argv: Sequence[str]) -> dict:
    """``["a.b=1", "c=x"]`` → ``{"a": {"b": Text("1")}, "c": Text("x")}`` (read later by field type)."""
    out: dict = {}
    for arg in argv:
        if "=" not in arg:
            raise ValueError(f"expected key=value, got {arg!r} (--help lists the keys)")
        key, value = arg.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"{key}: {p} is given a value and nested keys at once")
        node[parts[-1]] = Text(value)
    return out


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def params_path(params_file: str | Path | None = None) -> Path | None:
    """The params file in use, or None for ``COA_PARAMS=none``."""
    value = str(params_file if params_file is not None else PARAMS_FILE)
    return None if value.strip().lower() in NO_FILE else Path(value)


def read_yaml(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path.resolve()}")
    data = _yaml(path.read_text(), str(path)) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections at the top level")
    return data


def read_params(params_file: str | Path | None = None) -> dict:
    path = params_path(params_file)
    if path is None:
        return {}
    if not path.is_file():
        raise FileNotFoundError(
            f"params file not found: {path.resolve()} (run from the project root, set COA_PARAMS=PATH, "
            "or COA_PARAMS=none to run on the built-in defaults and the command line only)"
        )
    return read_yaml(path, "params file")


def preset_path(name: str) -> Path | None:
    """``paper`` → ``presets/paper.yaml``; a path ending in .yaml/.yml is used as it is; none → None."""
    name = str(name).strip()
    if name.lower() in NULLS:
        return None
    path = Path(name) if name.endswith((".yaml", ".yml")) else PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"preset {name!r} not found: {path} (known presets: {', '.join(known) or 'none'})")
    return path


def _section(data: dict, section: str, where: str) -> dict:
    node: Any = data
    for part in section.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, Text) and not node.strip():
        node = None
    if node is not None and not isinstance(node, dict):
        raise ValueError(f"{where}: section {section!r} must be a mapping of keys, got {node!r}")
    return dict(node or {})


def _layer(cls, data: dict, section: str, where: str) -> dict:
    """One file's values for ``section``: the section, plus the shared top-level keys ``cls`` has."""
    values = _section(data, section, where)
    for name, found in (
        (f"{section}.format", "format" in values),
        (f"{section}.prompt.format", "format" in (values.get("prompt") or {})),
    ):
        if found:
            raise ValueError(
                f"{where}: {name}: the format is set once, at the top level (`format: ...`), so "
                "synth, curate, train and evaluate agree; remove it from the section"
            )
    if "search" in values:
        raise ValueError(
            f"{where}: {section}.search: the search environment is set once, at the top level "
            "(`search: ...`), so synthesis, RL and evaluation use one environment; remove it"
        )
    names = {f.name for f in _init_fields(cls)}
    shared = {}
    if "search" in names and data.get("search") is not None:
        shared["search"] = data["search"]
    if "format" in names and data.get("format") is not None:
        shared["format"] = data["format"]
    if "prompt" in names and isinstance(data.get("prompt"), dict):
        if "format" in data["prompt"]:
            raise ValueError(f"{where}: prompt.format: set the top-level `format` instead (prompts follow it)")
        shared["prompt"] = data["prompt"]
    for f in _init_fields(cls):
        key = f.metadata.get("shared")  # the field's one home is a top-level key such as data.questions
        if not key:
            continue
        if f.name in values:
            raise ValueError(
                f"{where}: {section}.{f.name}: set once, at the top level (`{key}`), which dvc.yaml "
                "reads too; remove it from the section"
            )
        parent, _, leaf = key.rpartition(".")
        node = _section(data, parent, where) if parent else data
        if node.get(leaf) is not None:
            shared[f.name] = node[leaf]
    return _merge(shared, values)


def _rename(values: dict, aliases: dict | None, where: str) -> dict:
    """``in=`` for a field named ``input`` (a Python keyword), in params, presets and on the command line."""
    for alias, name in (aliases or {}).items():
        if alias in values:
            if name in values:
                raise ValueError(f"{where}: give either {alias!r} or {name!r}, not both")
            values = {(name if k == alias else k): v for k, v in values.items()}
    return values


def resolve(
    cls,
    section: str | None,
    argv: Sequence[str] = (),
    params_file: str | Path | None = None,
    aliases: dict | None = None,
) -> tuple[dict, Path | None]:
    """The merged values for ``cls`` (defaults not included) and the preset file applied, if any."""
    overrides = _rename(parse_overrides(argv), aliases, "command line")
    if "format" in (overrides.get("prompt") if isinstance(overrides.get("prompt"), dict) else {}):
        raise ValueError("prompt.format: set format= instead (the prompt follows the format)")
    if section is None:
        return overrides, None
    params = read_params(params_file)
    preset_name = overrides.pop("preset", params.get("preset"))
    preset = preset_path(preset_name) if preset_name is not None else None
    where = str(params_path(params_file))
    values = _rename(_layer(cls, params, section, where), aliases, where)
    if preset is not None:
        values = _merge(
            values, _rename(_layer(cls, read_yaml(preset, "preset"), section, str(preset)), aliases, str(preset))
        )
    return _merge(values, overrides), preset


def params_section(section: str, params_file: str | Path | None = None) -> dict:
    """The raw values of one ``params.yaml`` section (with the shared top-level keys it cannot set)."""
    return _section(read_params(params_file), section, str(params_path(params_file)))


def load_config(
    cls: type[T],
    section: str | None,
    argv: Sequence[str] = (),
    params_file: str | Path | None = None,
    aliases: dict | None = None,
) -> T:
    values, _ = resolve(cls, section, argv, params_file, aliases)
    return build(cls, values, section or cls.__name__)


# ---- entry points ----------------------------------------------------------------------------------


def _help_of(cls, name: str) -> str:
    """A field's help; a subclass that only changes a default keeps its parent's help."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata.get("help"):
            return f.metadata["help"]
    return ""


def describe(cls, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(dotted key, type and default, help)`` for every field, nested dataclasses as dotted keys."""
    rows, hints = [], _hints(cls)
    for f in _init_fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            rows += describe(type(default), f"{prefix}{f.name}.")
            continue
        kind = _describe(hints.get(f.name, Any)).split(" (")[0].replace("a ", "").replace("an ", "")
        shown = "(required)" if default is dataclasses.MISSING else repr(default)
        rows.append((prefix + f.name, f"{kind} = {shown}", _help_of(cls, f.name)))
    return rows


def help_text(cls, section: str | None, doc: str = "") -> str:
    lines = [(doc or cls.__doc__ or "").rstrip(), ""]
    source = (
        f"params.yaml section `{section}`, then a preset, then key=value on the command line"
        if section
        else "key=value on the command line"
    )
    lines.append(f"keys ({source}):")
    for key, kind, text in describe(cls):
        lines.append(f"  {key:<32} {kind}")
        if text:
            lines.append(f"  {'':<32}   {text}")
    lines += ["", "also: --help, --print-config (print the resolved settings as YAML and exit)"]
    if section:
        lines.append("      preset=NAME (presets/NAME.yaml over params.yaml); COA_PARAMS=PATH or none (no params file)")
    return "\n".join(lines)


def _yaml_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _yaml_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_yaml_safe(v) for v in obj]
    return obj if obj is None or isinstance(obj, (bool, int, float, str)) else str(obj)


def config_yaml(cfg: Any, section: str | None, preset: Path | None = None) -> str:
    body: Any = _yaml_safe(dataclasses.asdict(cfg))
    for part in reversed((section or type(cfg).__name__).split(".")):
        body = {part: body}
    head = f"# preset: {preset}\n" if preset else ""
    return head + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def cli(cls: type[T], section: str | None, argv: Sequence[str], doc: str = "", *, aliases: dict | None = None) -> T:
    """The one entry-point parser: ``--help`` prints ``doc`` and every key; ``--print-config`` prints the
    resolved configuration as YAML; both exit 0. Bad keys or values exit 2 with the message."""
    argv = list(argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(help_text(cls, section, doc))
        raise SystemExit(0)
    show = "--print-config" in argv
    argv = [a for a in argv if a != "--print-config"]
    try:
        values, preset = resolve(cls, section, argv, aliases=aliases)
        cfg = build(cls, values, section or cls.__name__)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise SystemExit(report(section or cls.__name__, e)) from None
    if show:
        print(config_yaml(cfg, section, preset), end="")
        raise SystemExit(0)
    return cfg
