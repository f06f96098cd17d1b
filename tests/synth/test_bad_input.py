"""``python -m synth.run`` on bad input: one line naming the file, line or key, exit 2, and no output
folder left behind (the real command, the reference teacher, no LLM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def synth(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "COA_DEBUG"}, "PYTHONPATH": str(ROOT), "COA_PARAMS": "none"}
    argv = [
        sys.executable,
        "-m",
        "synth.run",
        "mode=coa",
        "teacher.kind=reference",
        "reference.memory=0",
        "limit=2",
        f"out={tmp_path / 'out'}",
        *args,
    ]
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_question_line_that_is_not_an_object_is_named(tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "a", "question": "Who?", "golden_answers": ["x"]}) + "\n[1, 2]\n")
    proc = synth(tmp_path, f"questions={questions}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr == (
        f"synth: {questions}:2: expected a JSON object with 'id', 'question', 'golden_answers', got list [1, 2]\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_wrong_search_index_is_one_line_and_leaves_no_output_folder(tmp_path):
    proc = synth(tmp_path, f"search.index={tmp_path / 'missing'}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr == f"synth: search.index={tmp_path / 'missing'}: not a coa.search index (no index.json)\n"
    assert not (tmp_path / "out").exists()
