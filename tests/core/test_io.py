"""coa.io: an output is the complete new one or the previous one, never half of either."""

from __future__ import annotations

import json

import pytest

from coa.io import atomic_output, write_json


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_output(target) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 2}


def test_a_folder_is_replaced_only_once_the_new_one_is_complete(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_output(target, folder=True) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_output(target, folder=True) as tmp:
            (tmp / "a").write_text("new")
            assert (target / "a").read_text() == "old"  # still the old one while the new one is written
            raise RuntimeError("crash")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"] and (target / "a").read_text() == "old"
    with atomic_output(target, folder=True) as tmp:
        (tmp / "b").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b"]  # replaced, not merged


def test_a_temporary_left_by_a_dead_process_is_cleared(tmp_path):
    stale = tmp_path / ".idx.tmp-999999999"  # no such process
    stale.mkdir()
    with atomic_output(tmp_path / "idx", folder=True) as tmp:
        (tmp / "index.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_an_index_build_that_fails_leaves_the_previous_index(tmp_path):
    from coa.search import build_index, load_searcher

    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "d0", "contents": '"Apple"\napple text'}) + "\n")
    build_index(corpus, tmp_path / "idx", show_progress=False)
    corpus.write_text('{"id": "d1", "contents": "x"}\n{oops\n')
    with pytest.raises(ValueError, match="not valid JSON"):
        build_index(corpus, tmp_path / "idx", show_progress=False)
    assert load_searcher(tmp_path / "idx", "bm25").search(["apple"], 1)[0][0].id == "d0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "idx"]
