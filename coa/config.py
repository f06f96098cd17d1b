"""One way to configure every stage: a dataclass, its ``params.yaml`` section, ``key=value`` overrides.

    cfg = load_config(SynthConfig, "synth", sys.argv[1:])

Precedence: dataclass defaults < ``params.yaml`` section < command-line ``key=value`` (dotted keys
reach nested fields). Unknown keys fail with the list of valid ones.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence, TypeVar

import yaml

T = TypeVar("T")
PARAMS_FILE = os.environ.get("COA_PARAMS", "params.yaml")


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _apply(cls, values: dict, where: str):
    kwargs = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in hints:
            raise ValueError(f"{where}: unknown key {key!r}; valid keys: {', '.join(_field_names(cls))}")
        kwargs[key] = value
    return kwargs


def _coerce(value: str):
    """``key=value`` strings become YAML scalars/lists (``n=4`` → 4, ``x=[1,2]`` → list)."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def parse_overrides(argv: Sequence[str]) -> dict:
    out: dict = {}
    for arg in argv:
        if "=" not in arg:
            raise ValueError(f"expected key=value, got {arg!r}")
        key, value = arg.split("=", 1)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _coerce(value)
    return out


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def params_section(section: str, params_file: str | Path | None = None) -> dict:
    path = Path(params_file or PARAMS_FILE)
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return data.get(section) or {}


def load_config(cls: type[T], section: str | None, argv: Sequence[str] = (),
                params_file: str | Path | None = None) -> T:
    values = params_section(section, params_file) if section else {}
    values = _merge(values, parse_overrides(argv))
    return build(cls, values, section or cls.__name__)


def build(cls: type[T], values: dict, where: str) -> T:
    kwargs = _apply(cls, values, where)
    for f in dataclasses.fields(cls):
        if f.name in kwargs and dataclasses.is_dataclass(f.type if isinstance(f.type, type) else None):
            kwargs[f.name] = build(f.type, kwargs[f.name], f"{where}.{f.name}")
        elif f.name in kwargs and isinstance(kwargs[f.name], dict):
            nested = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(nested):
                kwargs[f.name] = build(type(nested), kwargs[f.name], f"{where}.{f.name}")
    return cls(**kwargs)


def cli(cls: type[T], section: str | None, argv: Sequence[str], doc: str = "") -> T:
    """The one entry-point parser: ``--help`` prints ``doc`` and every key; ``--print-config`` prints the
    resolved configuration as YAML; both exit 0. Bad keys or values exit 2 with the message."""
    import sys

    argv = list(argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print((doc or cls.__doc__ or "").rstrip() + "\n")
        for f in dataclasses.fields(cls):
            print(f"  {f.name}  {f.metadata.get('help', '')}")
        raise SystemExit(0)
    show = "--print-config" in argv
    argv = [a for a in argv if a != "--print-config"]
    try:
        cfg = load_config(cls, section, argv)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"{section or cls.__name__}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if show:
        print(yaml.safe_dump({section or cls.__name__: dataclasses.asdict(cfg)}, sort_keys=False))
        raise SystemExit(0)
    return cfg
