"""The house rules CI checks on every change: the import floors (``[tool.importlinter]`` in
pyproject.toml), lint and format (``[tool.ruff]``), and project imports at module level (a function-local import
of a project module is allowed only for a heavy optional dependency, with its reason on the line)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("coa", "synth", "curate", "train", "evaluate", "annotate", "data_cards")


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return path


def test_packages_import_only_downwards():
    result = run(tool("lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_lint_passes():
    result = run(tool("ruff"), "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_format_is_applied():
    result = run(tool("ruff"), "format", "--check", "--no-cache", ".")
    assert result.returncode == 0, "run `ruff format .`:\n" + result.stdout[-4000:] + result.stderr[-2000:]


def function_local_project_imports() -> list[str]:
    """``file:line module`` of each project import inside a function without a reason comment."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = path.read_text().splitlines()
            for fn in ast.walk(ast.parse("\n".join(lines))):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(fn):
                    if (
                        isinstance(node, ast.ImportFrom)
                        and (node.module or "").split(".")[0] in PACKAGES
                        and "# heavy:" not in lines[node.lineno - 1]
                    ):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
    return sorted(set(found))


def test_project_imports_sit_at_module_level():
    assert function_local_project_imports() == []


def test_benches_remove_their_scratch_folders():
    """A bench's scratch (indexes, sets, GBs of checkpoints) goes with it: ``tempfile.TemporaryDirectory``, never a
    bare ``mkdtemp`` that stays under /tmp after every run (CI shares the disk)."""
    leaks = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "bench").glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "mkdtemp(" in line
    ]
    assert not leaks, f"bench scratch folders left behind (use tempfile.TemporaryDirectory): {leaks}"
