"""The settings reference, generated from the config dataclasses (``docs/reference/settings.md``).

    python docs/gen_settings.py            # print the Markdown (mkdocs runs it through docs/hooks.py)

Every entry point parses its settings with ``coa.config.cli(ConfigClass, section, argv, doc)``. This
script finds those calls in the packages' source (no list to keep in step), imports each config class
from the module that defines it (so ``train.config``, not the torch-importing ``train.run``), and writes
one table per entry point with the rows ``--help`` prints (``coa.config.describe``: nested dataclasses
as dotted keys), plus the value ``params.yaml`` sets where it sets one.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from pathlib import Path

import yaml

from coa.config import describe  # the rows --help prints
from coa.environment import SearchEnvConfig
from coa.prompts import PromptConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("coa", "synth", "curate", "train", "evaluate", "annotate", "data_cards")  # floors, bottom up
SHARED = ("format", "prompt", "search")  # top-level params.yaml keys every stage reads (coa.config)


@dataclasses.dataclass
class EntryPoint:
    command: str  # "python -m synth.run"
    module: str  # where the cli() call is
    cls: type
    section: str | None  # params.yaml section, None: command line only
    doc: str


def _first_paragraph(text: str) -> str:
    return " ".join((text or "").strip().split("\n\n")[0].split())


def _imports(tree: ast.Module, module: str) -> dict[str, tuple[str, str]]:
    """name -> (module, attribute) for ``from X import A [as B]`` and classes defined in ``module``."""
    names: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = (node.module, alias.name)
        elif isinstance(node, ast.ClassDef):
            names[node.name] = (module, node.name)
    return names


def _resolve(name: str, names: dict[str, tuple[str, str]]) -> type:
    where, attr = names[name]
    return getattr(importlib.import_module(where), attr)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts)


def _command(module: str) -> str:
    return "python -m " + module.removesuffix(".__main__")


def _subcommand(module: str, doc: str) -> str:
    """``split`` for a doc that starts ``python -m coa.questions split key=value``."""
    m = re.search(rf"python -m {re.escape(module.removesuffix('.__main__'))} ([a-z_]+)\b(?![|=])", doc)
    return f" {m.group(1)}" if m else ""


def entry_points() -> list[EntryPoint]:
    """Every ``cli(...)`` call in the packages, in floor order (bottom up), then by module."""
    found: list[EntryPoint] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            module = _module_name(path)
            calls = [
                n
                for n in ast.walk(tree)
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "cli" and n.args
            ]
            if not calls:
                continue
            names = _imports(tree, module)
            module_doc = ast.get_docstring(tree) or ""
            for call in calls:
                found += _from_call(call, module, names, module_doc, tree)
    if not found:
        raise RuntimeError(f"no cli(...) call found under {ROOT} in {', '.join(PACKAGES)}")
    return found


def _from_call(call: ast.Call, module: str, names: dict, module_doc: str, tree: ast.Module) -> list[EntryPoint]:
    target, section_node = call.args[0], call.args[1] if len(call.args) > 1 else None
    section = section_node.value if isinstance(section_node, ast.Constant) else None
    doc_node = call.args[3] if len(call.args) > 3 else next((k.value for k in call.keywords if k.arg == "doc"), None)
    if isinstance(target, ast.Name) and target.id in names:
        cls = _resolve(target.id, names)
        doc = module_doc if isinstance(doc_node, ast.Name) and doc_node.id == "__doc__" else (cls.__doc__ or "")
        doc = _first_paragraph(doc)
        return [EntryPoint(_command(module) + _subcommand(module, doc), module, cls, section, doc)]
    # a class chosen at run time from a module-level table (coa.search: COMMANDS = {"build": BuildConfig, ...})
    out = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for key, value in zip(node.value.keys, node.value.values):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Name) and value.id in names:
                    cls = _resolve(value.id, names)
                    if dataclasses.is_dataclass(cls):
                        doc = _first_paragraph(cls.__doc__ or "").split(": ", 1)[-1]
                        out.append(EntryPoint(f"{_command(module)} {key.value}", module, cls, section, doc))
    if not out:
        raise RuntimeError(f"{module}: cli({ast.unparse(target)}, ...) names no config class this script can find")
    return out


# ---- Markdown -----------------------------------------------------------------------------------------

_CODE = re.compile(r"(`+).+?\1")  # a code span: a run of backticks, text, the same run


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("*", "\\*")


def cell(text: str) -> str:
    """Markdown for a table cell: code spans kept; elsewhere HTML, emphasis and pipes escaped."""
    text, out, at = str(text).replace("\n", " "), [], 0
    for span in _CODE.finditer(text):
        out += [_escape(text[at : span.start()]), span.group(0)]
        at = span.end()
    return "".join(out + [_escape(text[at:])])


def code(value: str) -> str:
    """A value as a code span (backticks inside it widen the fence)."""
    value = str(value).replace("\n", " ")
    fence = "``" if "`" in value else "`"
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def _params_value(params: dict, section: str | None, key: str):
    """What ``params.yaml`` sets for ``key`` of ``section`` (shared keys at the top level), else None."""
    parts = key.split(".")
    roots = []
    if section:
        node = params
        for part in section.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        roots.append(node)
    if parts[0] in SHARED:
        roots.append(params)
    for node in roots:
        for part in parts:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None


def _describe(cls) -> list[tuple[str, str, str, str]]:
    rows = []
    for key, kind_default, text in describe(cls):
        kind, _, default = kind_default.partition(" = ")
        default = default.replace(str(ROOT) + "/", "")  # paths the code builds from the checkout: relative
        rows.append((key, kind, default, text))
    return rows


def table(cls, section: str | None, params: dict) -> list[str]:
    with_params = section is not None
    head = "| key | type | default | params.yaml | help |" if with_params else "| key | type | default | help |"
    lines = [head, "|---" * head.count(" | ") + "|---|"]
    for key, kind, default, text in _describe(cls):
        row = [code(key), cell(kind), code(default)]
        if with_params:
            value = _params_value(params, section, key)
            row.append("" if value is None else code(repr(value)))
        row.append(cell(text))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def settings_markdown() -> str:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8")) or {}
    out = [
        "## Shared keys (top of `params.yaml`)",
        "",
        "Read by every stage that has the field; no section may set its own "
        "(`key=value` on one command line still overrides it for that run).",
        "",
        f"- `format`: the one format preset, `autocoa` or `search_r1` (params.yaml: `{params.get('format')}`).",
        f"- `preset`: a file applied over `params.yaml` (`paper` = `presets/paper.yaml`; params.yaml: "
        f"`{'null' if params.get('preset') is None else params.get('preset')}`).",
        *[
            f"- `data.{key}`: the dataset's {key} file, read by `dvc.yaml` and by the stage that takes it "
            f"(params.yaml: `{value}`)."
            for key, value in (params.get("data") or {}).items()
        ],
        "",
        "### `search`: the search environment (`coa.environment.SearchEnvConfig`)",
        "",
        *table(SearchEnvConfig, "search", params),
        "",
        "### `prompt`: the prompt (`coa.prompts.PromptConfig`)",
        "",
        *table(PromptConfig, "prompt", params),
        "",
    ]
    for ep in entry_points():
        where = (
            f"params.yaml section `{ep.section}`, then a preset, then `key=value`"
            if ep.section
            else "`key=value` (or `--key value`) on the command line only"
        )
        out += [
            f"## `{ep.command}`",
            "",
            cell(ep.doc),
            "",
            f"Config: `{ep.cls.__module__}.{ep.cls.__qualname__}`; settings from {where}.",
            "",
            *table(ep.cls, ep.section, params),
            "",
        ]
    return "\n".join(out)


if __name__ == "__main__":
    print(settings_markdown())
