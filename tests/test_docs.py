"""The docs site builds in strict mode (a broken link or anchor, a page outside the nav, a config the settings
reference cannot import: each fails the build), into a temporary folder so the checkout stays clean; and
the README stays a short front page whose links land on files that exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_site_builds_in_strict_mode(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    if mkdocs is None:
        pytest.fail("mkdocs is not installed: pip install -e '.[dev]' (mkdocs-material)")
    site = tmp_path / "site"
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    settings = (site / "reference" / "settings" / "index.html").read_text()
    for command in (
        "python -m synth.run",
        "python -m train.run",
        "python -m evaluate.run",
        "python -m coa.search build",
    ):
        assert command in settings, f"the settings reference has no section for {command}"
    assert not (ROOT / "site").exists()


def test_readme_is_a_front_page_whose_links_exist():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200, "README.md is the front page: move details into docs/"
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
