"""Issue 48, part B: the third probe's inputs, each one line on stderr and exit 2 where it is bad input, and no
output folder left by a run that stopped before its first row. Every test reproduces the probe's input."""

from __future__ import annotations

import json

import pytest

import coa.config
from coa.questions import load_questions


@pytest.fixture(autouse=True)
def no_pipeline_params(monkeypatch):
    """Only the settings each test gives: the pipeline's params.yaml stays out."""
    monkeypatch.setenv("COA_PARAMS", "none")
    monkeypatch.setattr(coa.config, "PARAMS_FILE", "none")
    monkeypatch.delenv("COA_DEBUG", raising=False)


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# ---- (d) a question file that is not what it claims: one line naming it, in every reader -------------------

CORRUPT_GZIP = {
    "probe": b"\x1f\x8b\x08\x00garbage",  # the probe's bytes: a header cut short
    "deflate": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage garbage garbage",  # whole header, bad data: zlib.error
}


@pytest.mark.parametrize("content", CORRUPT_GZIP.values(), ids=CORRUPT_GZIP)
def test_a_corrupt_gzip_question_file_is_one_line_in_every_reader(tmp_path, capsys, content):
    from coa.questions import main as split
    from synth.questions.__main__ import main as synth_questions
    from synth.run import main as synth_run

    questions = tmp_path / "q.jsonl.gz"
    questions.write_bytes(content)
    runs = {
        "coa.questions": lambda: split(["split", f"questions={questions}", f"out={tmp_path / 'split'}"]),
        "synth.questions": lambda: synth_questions([f"questions={questions}", f"out={tmp_path / 'sq'}"]),
        "synth": lambda: synth_run([f"questions={questions}", f"out={tmp_path / 'sr'}"]),
    }
    for prog, run in runs.items():
        assert run() == 2, prog
        assert one_line(capsys).startswith(f"{prog}: {questions}:1: unreadable (")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.jsonl.gz"]  # no output folder


# ---- (f) ids: one id, one question, in every reader ---------------------------------------------------------


def test_seed_questions_sharing_an_id_are_refused_as_split_refuses_them(tmp_path, capsys):
    """The probe: ten seeds under one id were silently merged into one by synth.questions."""
    from synth.questions.__main__ import main as synth_questions

    seeds = tmp_path / "seeds.jsonl"
    rows = [{"id": "same", "question": f"Who wrote book {k}?", "golden_answers": [f"A{k}"]} for k in range(10)]
    seeds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    message = f"{seeds}: question id 'same' used for two different questions"
    with pytest.raises(ValueError, match=message):
        load_questions(seeds)
    assert synth_questions([f"questions={seeds}", f"out={tmp_path / 'q'}"]) == 2
    assert one_line(capsys) == f"synth.questions: {message}"
    assert not (tmp_path / "q").exists()


# ---- coa.tools call: settings and arguments with bounds ------------------------------------------------------


@pytest.mark.parametrize("topk", ["0", "-3"])
def test_search_topk_below_one_is_refused_naming_the_key(index_dir, capsys, topk):
    """The probe: topk=0 answered "Retrieval failed.", -3 numpy's "negative dimensions are not allowed"."""
    from coa.tools.__main__ import main

    argv = ["call", "search", '{"query": "Maria Golovin"}', f"search.index={index_dir}", f"search.topk={topk}"]
    assert main(argv) == 2
    assert one_line(capsys).endswith(f"search.topk must be >= 1 (documents per search), got {topk}")


def test_open_refuses_a_page_past_any_bound_without_echoing_it(index_dir, capsys):
    """The probe: page 1e308 passed as an integer and came back as a 309-digit number."""
    from coa.tools.__main__ import main

    assert main(["call", "open", '{"doc": "Maria Golovin", "page": 1e308}', f"search.index={index_dir}"]) == 2
    assert one_line(capsys) == (
        "python -m coa.tools: Bad arguments for open: 'page' must be at most 100000, got 1e+308. "
        "Parameters: doc (string, required), page (integer)."
    )


def test_an_empty_query_is_an_error_observation(index_dir, capsys):
    """The probe: an empty query answered "Retrieval failed." with no error."""
    from coa.search import load_searcher
    from coa.tools.__main__ import main
    from coa.tools.search import EMPTY_QUERY, SearchTool

    assert main(["call", "search", '{"query": ""}', f"search.index={index_dir}"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == EMPTY_QUERY and json.loads(err)["error"] == "empty_query"
    found, blank = SearchTool(load_searcher(index_dir)).execute_batch([{"query": "Maria Golovin"}, {"query": "  "}])
    assert found.ok and found.provenance["doc_ids"] and (blank.error, blank.text) == ("empty_query", EMPTY_QUERY)


# ---- (d) a checkpoint folder without weights ------------------------------------------------------------------


def test_evaluate_names_a_model_folder_without_weights_before_any_engine_starts(model_dir, tmp_path, capsys):
    """The probe: config.json and the tokenizer but no weight file gave vLLM's 103-line traceback, exit 1."""
    import shutil

    from evaluate.run import main

    folder = tmp_path / "no_weights"
    folder.mkdir()
    for f in model_dir.iterdir():
        if f.is_file() and f.suffix not in (".safetensors", ".bin"):
            shutil.copy(f, folder / f.name)
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert main([f"model={folder}", "name=probe", f"out_root={tmp_path / 'eval'}", "limit=2"]) == 2
    assert one_line(capsys) == (
        f"evaluate: {folder}: no weight files (*.safetensors or *.bin) beside its config.json; "
        "copy or download the model's weights into it"
    )
    assert not (tmp_path / "eval").exists()
