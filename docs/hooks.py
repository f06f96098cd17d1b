"""mkdocs hooks (``mkdocs.yml``: ``hooks: [docs/hooks.py]``).

``reference/settings.md`` holds the marker ``<!-- settings -->``; at build time it is replaced by the tables
``docs/gen_settings.py`` writes from the config dataclasses, so the reference cannot go stale. A config
that fails to import fails the build.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen_settings  # noqa: E402  (docs/gen_settings.py, beside this file)

MARKER = "<!-- settings -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != "reference/settings.md":
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"reference/settings.md: the marker {MARKER} is missing")
    return markdown.replace(MARKER, gen_settings.settings_markdown())
