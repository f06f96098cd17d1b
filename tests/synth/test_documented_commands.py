"""Every ``python -m synth.run`` command that README.md, the docs pages (``docs/**/*.md``) and ``synth/run.py``'s
docstring document, run with ``check=true`` against the project's own ``params.yaml``: its settings are valid, and the teacher it
resolves is the one the command names (``teacher.api`` / ``teacher.base_url`` / ``teacher.model`` on the
command line pick an LLM teacher even though params.yaml says ``kind: reference``). Nothing is started."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import coa.config
import synth.run
from synth.run import main

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDERS = {"P_IN": "0.27", "P_OUT": "1.10"}  # README's "your current prices" (floats)


def fill(arg: str) -> str:
    key, _, value = arg.partition("=")
    return f"{key}={PLACEHOLDERS[value]}" if value in PLACEHOLDERS else arg


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of each synth.run command in the code blocks of README.md and the docs pages, and in
    synth/run.py's docstring."""
    pages = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))]
    sources = {page: "\n".join(re.findall(r"```bash\n(.*?)```", (ROOT / page).read_text(), re.S)) for page in pages}
    sources["synth/run.py"] = synth.run.__doc__
    commands = []
    for where, text in sources.items():
        text = text.replace("\\\n", " ")  # continuation lines
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("python -m synth.run"):
                continue
            line = re.sub(r"\s#.*$", "", line).rstrip(" &")
            commands.append((f"{where}: {line}", [fill(a) for a in shlex.split(line)[3:]]))
    return commands


COMMANDS = documented_commands()


def expected_teacher(argv: list[str]) -> tuple[str, list[str]]:
    """(engine, URLs) the command names: params.yaml's reference teacher unless it names an LLM teacher."""
    kv = dict(a.split("=", 1) for a in argv)
    names_llm = any(k in kv for k in ("teacher.base_url", "teacher.api", "teacher.model"))
    if kv.get("teacher.kind") == "reference" or (kv.get("teacher.kind") != "llm" and not names_llm):
        return "reference", []
    urls = [u.strip() for u in kv.get("teacher.base_url", "").strip("[]").split(",") if u.strip()]
    return kv.get("teacher.api", "completions"), urls


@pytest.fixture
def project_params(monkeypatch):
    monkeypatch.setattr(coa.config, "PARAMS_FILE", str(ROOT / "params.yaml"))


def test_the_docs_document_the_teachers():
    engines = {expected_teacher(argv)[0] for _, argv in COMMANDS}
    assert len(COMMANDS) >= 10 and engines == {"reference", "completions", "chat"}
    assert not [where for where, argv in COMMANDS if "..." in argv], "a documented command holds a placeholder"


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_each_documented_command_resolves_the_teacher_it_names(
    where, argv, project_params, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # relative outputs would land here; check=true must create none
    assert main([*argv, "check=true"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    teacher = re.search(r"^  teacher   (\w+): (.*)$", out, re.M)
    engine, urls = expected_teacher(argv)
    assert teacher and teacher.group(1) == engine, out
    if engine != "reference":
        assert all(u in teacher.group(2) for u in urls) and (urls or "the embedded" in teacher.group(2)), out
        model = dict(a.split("=", 1) for a in argv).get("teacher.model")
        assert model is None or f"model {model!r}" in teacher.group(2), out
    assert "nothing was started or written" in out and not list(tmp_path.iterdir())


def test_the_readme_chat_command_runs_the_chat_teacher_not_the_reference(project_params, index_dir, tmp_path, capsys):
    """The reported case: params.yaml's ``kind: reference`` used to win silently over these keys."""
    argv = [
        "mode=coa",
        "teacher.api=chat",
        "teacher.base_url=http://127.0.0.1:9/v1",
        "teacher.model=M",
        f"out={tmp_path / 'out'}",
        "teacher.retries=0",
        "progress=false",
        f"search.index={index_dir}",
    ]
    assert main([*argv, "check=true"]) == 0
    assert "  teacher   chat: model 'M' at http://127.0.0.1:9/v1" in capsys.readouterr().out
    assert main(argv) == 3  # and run for real, it asks that (unreachable) server: one line, exit 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "http://127.0.0.1:9/v1" in err and not list((tmp_path / "out").glob("*.parquet"))


@pytest.mark.parametrize(
    "extra, named",
    [
        (["teacher.kind=reference", "teacher.base_url=http://gpu:8000/v1"], "teacher.base_url=http://gpu:8000/v1"),
        (["teacher.max_total_tokens=2000000"], "teacher.max_total_tokens=2000000"),
        (["teacher.retries=1", "teacher.price_prompt=1"], "teacher.retries=1, teacher.price_prompt=1.0"),
    ],
)
def test_llm_keys_with_the_reference_teacher_are_refused_not_ignored(extra, named, project_params, capsys):
    assert main(["mode=coa", *extra, "check=true"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"teacher.kind is 'reference' (the templated teacher), which does not use {named}" in err
    assert "set teacher.kind=llm" in err
