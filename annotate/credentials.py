"""The review server's secrets: from the environment, else generated once into a 0600 file.

  owner_api_key       ARGILLA_OWNER_API_KEY       the owner (user ``argilla``): push, pull, status, admin
  owner_password      ARGILLA_OWNER_PASSWORD      the owner's UI login
  annotator_password  ARGILLA_ANNOTATOR_PASSWORD  every annotator's UI login

A value set in the environment always wins and is never written to disk; a missing one is generated
(``secrets.token_urlsafe``) and stored in ``<data_dir>/credentials.json`` so restarts keep working. That file
is only ever readable by its owner: written whole with mode 0600 (also over an older, readable one), and
an existing file found readable by others is set to 0600 when read.
Nothing here prints a secret: ``describe`` says where each one comes from, ``redact`` masks them in
text that is about to be shown (a failing subprocess's output).
"""

from __future__ import annotations

import json
import os
import secrets as _secrets
import stat
from pathlib import Path

from coa.errors import BadInput
from coa.io import write_json

OWNER = "argilla"  # the username argilla_server's `users create_default` gives the owner
ENV = {
    "owner_api_key": "ARGILLA_OWNER_API_KEY",
    "owner_password": "ARGILLA_OWNER_PASSWORD",
    "annotator_password": "ARGILLA_ANNOTATOR_PASSWORD",
}
FILE = "credentials.json"


def load_or_create(data_dir: str | Path) -> dict:
    """Every secret, from the environment or the file; missing ones are generated and stored."""
    path = Path(data_dir) / FILE
    stored = _read(path)
    values, changed = {}, False
    for name, env in ENV.items():
        if os.environ.get(env):
            values[name] = os.environ[env]
        else:
            if not stored.get(name):
                stored[name] = _secrets.token_urlsafe(24)
                changed = True
            values[name] = stored[name]
    if changed:
        write_json(path, stored, mode=0o600)  # a new file, 0600 from its creation, renamed over the old one
    return values


def _read(path: Path) -> dict:
    """The stored secrets ({} without a file); a file others can read is made private first."""
    if not path.exists():
        return {}
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        path.chmod(0o600)
    return json.loads(path.read_text())


def owner_api_key(data_dir: str | Path) -> str:
    """The key push/pull/status use: ``ARGILLA_API_KEY`` or ``ARGILLA_OWNER_API_KEY``, else the file."""
    for env in ("ARGILLA_API_KEY", ENV["owner_api_key"]):
        if os.environ.get(env):
            return os.environ[env]
    path = Path(data_dir) / FILE
    key = _read(path).get("owner_api_key")
    if key:
        return key
    raise BadInput(
        f"no Argilla API key: set ARGILLA_API_KEY (or ARGILLA_OWNER_API_KEY), or point data_dir= "
        f"at the folder `python -m annotate.serve` wrote {FILE} into (looked in {path})"
    )


def source(data_dir: str | Path, name: str) -> str:
    env = ENV[name]
    return f"${env}" if os.environ.get(env) else f"{Path(data_dir) / FILE} ({name})"


def describe(data_dir: str | Path, annotators: list[str]) -> str:
    lines = [
        f"owner: {OWNER} (role owner); API key: {source(data_dir, 'owner_api_key')}; "
        f"password: {source(data_dir, 'owner_password')}"
    ]
    for user in annotators:
        lines.append(f"annotator: {user} (role annotator); password: {source(data_dir, 'annotator_password')}")
    return "\n".join(lines)


def redact(text: str, values: dict) -> str:
    for value in values.values():
        if value:
            text = text.replace(value, "***")
    return text


def ensure_annotators(api_url: str, values: dict, usernames: list[str], workspace: str) -> None:
    """Create the annotator users (if missing) and put them and the owner in ``workspace``."""
    import warnings

    import argilla as rg

    warnings.filterwarnings("ignore", message="User with username")  # a missing user is what we check for
    client = rg.Argilla(api_url=api_url, api_key=values["owner_api_key"])
    ws = client.workspaces(workspace) or rg.Workspace(name=workspace, client=client).create()
    members = {u.username for u in ws.users}
    for name in usernames:
        user = client.users(username=name)
        if user is None:
            user = rg.User(
                username=name, password=values["annotator_password"], role="annotator", client=client
            ).create()
        if name not in members:
            ws.add_user(user)
    if OWNER not in members:
        ws.add_user(client.users(username=OWNER))
