"""The review stack's secrets and bad input, without starting the whole stack: the real argilla_server
database steps on a temporary folder, the real credentials file, the real command line."""

from __future__ import annotations

import json
import socket
import sqlite3
import stat
import subprocess

import pytest

from annotate import credentials, serve
from annotate.run import main as annotate_main
from annotate.serve import ReviewStack, ReviewServerConfig
from coa.procs import free_ports


@pytest.fixture(autouse=True)
def _no_secrets_in_env(monkeypatch):
    for env in (*credentials.ENV.values(), "ARGILLA_API_KEY"):
        monkeypatch.delenv(env, raising=False)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
def test_the_owner_secrets_never_reach_a_command_line_and_the_database_is_private(tmp_path, monkeypatch):
    stack = ReviewStack(ReviewServerConfig(data_dir=str(tmp_path / "argilla")))
    stack.data.mkdir()
    secrets = credentials.load_or_create(stack.data)
    argvs, real_run = [], subprocess.run

    def recording_run(argv, *args, **kwargs):  # what `ps` would show, then the real command
        argvs.append(" ".join(argv))
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(serve.subprocess, "run", recording_run)
    stack.init_database(secrets)
    assert len(argvs) == 2
    assert not [a for a in argvs for value in secrets.values() if value in a]
    db = stack.data / "argilla.db"
    assert mode(db) == 0o600
    with sqlite3.connect(db) as con:
        assert con.execute("select api_key from users where username = 'argilla'").fetchone() == (
            secrets["owner_api_key"],
        )


def test_a_readable_credentials_file_becomes_private_when_secrets_are_added(tmp_path):
    path = tmp_path / credentials.FILE
    path.write_text(json.dumps({"owner_api_key": "k" * 20}))
    path.chmod(0o644)
    values = credentials.load_or_create(tmp_path)  # the two passwords are generated and written into it
    assert mode(path) == 0o600
    assert values["owner_api_key"] == "k" * 20 and set(json.loads(path.read_text())) == set(credentials.ENV)
    assert [p.name for p in tmp_path.iterdir()] == [credentials.FILE]  # no temporary left


def test_a_readable_credentials_file_becomes_private_when_read(tmp_path):
    path = tmp_path / credentials.FILE
    path.write_text(json.dumps({name: "s" * 20 for name in credentials.ENV}))
    path.chmod(0o644)
    assert credentials.owner_api_key(tmp_path) == "s" * 20
    assert mode(path) == 0o600


def test_no_api_key_is_one_line_and_exit_2(tmp_path, capsys):
    assert annotate_main(["status", f"data_dir={tmp_path}", "api_url=http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("annotate: no Argilla API key") and str(tmp_path) in err


def test_pull_refuses_a_folder_it_did_not_write(tmp_path):
    """The review table goes into a folder pull marks as its own; anything else needs overwrite=true."""
    import polars as pl

    from annotate.pull import PULL_TOOL, write
    from coa.io import NotOurs, owned_files

    (tmp_path / "notes.md").write_text("mine")
    table = pl.DataFrame({"row_id": ["r1"]})
    with pytest.raises(NotOurs, match=r"folder is not empty and annotate.run action=pull did not write it"):
        with owned_files(tmp_path, PULL_TOOL, "overwrite=true"):
            write(table, {}, tmp_path / "review.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md"]


def test_the_committed_review_folder_is_pulls_own():
    from pathlib import Path

    from annotate.pull import PULL_TOOL
    from coa.io import claim_folder

    review = Path(__file__).resolve().parents[2] / "data" / "review"
    assert set(claim_folder(review, PULL_TOOL, "overwrite=true")) == {"metrics.json", "review.parquet"}


def test_two_services_on_one_port_is_one_line_and_exit_2(tmp_path, capsys):
    argv = ["action=start", f"data_dir={tmp_path / 'argilla'}", "search_port=7001", "redis_port=7001"]
    assert serve.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must differ" in err and "7001, 7001" in err
    assert not (tmp_path / "argilla").exists()


def test_a_port_in_use_is_refused_before_any_service_starts(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        api, search = free_ports(2)
        data = tmp_path / "argilla"
        argv = ["action=start", f"data_dir={data}", f"port={api}", f"search_port={search}", f"redis_port={port}"]
        assert serve.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"port {port} on 127.0.0.1 is already in use" in err and "redis_port=N" in err
    assert not (data / "logs").exists() and not (data / "pids.json").exists()
