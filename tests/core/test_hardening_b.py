"""Issue 48, part B: the third probe's inputs, each one line on stderr and exit 2 where it is bad input, and no
output folder left by a run that stopped before its first row. Every test reproduces the probe's input."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest

import coa.config
from coa.questions import load_questions
from tests.fixtures.local_http import LocalServer


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


# ---- (e) a failure is one line on stderr; a run that stops before its first row leaves no folder ------------


class FlakyRetriever(LocalServer):
    """A /retrieve server answering from a real index for its first ``good`` requests, then with a web page."""

    def __init__(self, searcher, good: int):
        state = {"answered": 0}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                asked = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if state["answered"] < good:
                    state["answered"] += 1
                    found = searcher.search(asked["queries"], asked["topk"])
                    docs = [
                        [{"document": {"id": d.id, "contents": d.contents}, "score": d.score} for d in r] for r in found
                    ]
                    body, kind = json.dumps({"result": docs}).encode(), "application/json"
                else:
                    body, kind = b"<html><body>Welcome to nginx!</body></html>", "text/html"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)


def synth_argv(url: str, out, limit: int) -> list[str]:
    return [
        "mode=coa",
        f"limit={limit}",
        "teacher.kind=reference",
        "reference.memory=0",
        "progress=false",
        "concurrency=1",
        f"search.retriever_url={url}",
        f"out={out}",
    ]


def test_a_retriever_failing_from_the_start_is_one_line_on_stderr_and_leaves_no_folder(searcher, tmp_path, capsys):
    """The probe: the line went to stdout, and a 0-row folder (part-empty.parquet, summary.json, fingerprint.json,
    .lock) stayed behind, where a failing teacher's run removes its folder."""
    from synth.run import main

    with FlakyRetriever(searcher, good=0) as retriever:
        assert main(synth_argv(retriever.url, tmp_path / "runs" / "coa", 2)) == 3
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, (out, err)
    assert err.startswith(f"synth: retriever unavailable: retrieval server {retriever.url} answered 200 with text/html")
    assert not (tmp_path / "runs").exists()  # nor the parent it made


def test_a_retriever_failing_mid_run_says_so_on_stderr_and_keeps_the_rows(searcher, tmp_path, capsys):
    from coa.trajectory import read_table
    from synth.run import main

    out_dir = tmp_path / "coa"
    with FlakyRetriever(searcher, good=6) as retriever:
        assert main(synth_argv(retriever.url, out_dir, 8)) == 3
    out, err = capsys.readouterr()
    assert "STOPPED EARLY: retriever unavailable" in out  # the report stays on stdout
    assert err.strip() == (
        f"synth: stopped early: retriever unavailable: retrieval server {retriever.url} answered 200 with "
        "text/html, not the /retrieve API's JSON ('<html><body>Welcome to nginx!</body></html>'): is it a "
        f"coa.search or Search-R1 retrieval server?; finished rows are kept in {out_dir}; re-run the same command "
        "to finish"
    )
    assert 1 <= read_table(out_dir).num_rows < 8


def test_an_interrupt_during_start_up_does_not_claim_rows_are_kept(index_dir, tmp_path, capsys, monkeypatch):
    """The probe: Ctrl-C while the embedded teacher started said "finished rows are kept in DIR", DIR removed."""
    import contextlib

    import synth.run

    @contextlib.contextmanager
    def interrupted_start(serve):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(synth.run, "embedded_teacher", interrupted_start)
    out_dir = tmp_path / "coa"
    argv = ["mode=coa", "limit=2", "teacher.kind=llm", "progress=false", f"search.index={index_dir}", f"out={out_dir}"]
    assert synth.run.main(argv) == 130
    assert capsys.readouterr().err == "synth: interrupted; no row was finished; nothing is kept\n"
    assert not out_dir.exists()


def test_evaluate_stopped_by_its_retriever_before_a_row_leaves_no_folder(searcher, tokenizer, tmp_path):
    """evaluate.run's rows writer, as synth's: a retriever gone before the first row leaves nothing (it left the
    trajectories folder with only its fingerprint and lock). The reference teacher answers: it searches first."""
    from coa.config import build
    from coa.engines import EngineUnavailable, make_engine
    from coa.formats import get_format
    from coa.questions import DEFAULT_QUESTIONS
    from evaluate.run import EvalConfig, generate
    from synth.reference import ReferenceConfig

    engine = make_engine(
        "reference",
        cfg=ReferenceConfig(memory=0),
        fmt=get_format("search_r1"),
        tokenizer=tokenizer,
        questions=[],
        passages=None,
        max_actions=3,
    )
    out = tmp_path / "eval" / "probe" / "trajectories" / "hotpotqa"
    with FlakyRetriever(searcher, good=0) as retriever:
        cfg = build(EvalConfig, {"name": "probe", "search": {"retriever_url": retriever.url}}, "evaluate")
        with pytest.raises(EngineUnavailable, match="retriever unavailable"):
            generate(cfg, engine, load_questions(DEFAULT_QUESTIONS, limit=2), out)
    assert not (tmp_path / "eval").exists()


# ---- one writer at a time: a second is refused as busy, naming the folder -----------------------------------


def test_a_second_build_into_one_out_is_refused_while_the_first_runs(tmp_path, capsys):
    """The probe: two concurrent builds into one --out both exited 0, and one build was silently lost."""
    import subprocess
    import sys
    import time

    from coa.search import DEFAULT_CORPUS
    from coa.search.__main__ import main

    out, lock = tmp_path / "idx", tmp_path / ".idx.lock"
    argv = ["build", "--corpus", str(DEFAULT_CORPUS), "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "coa.search", *argv], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert main(argv) == 2  # while the first holds the lock (its build takes seconds)
    finally:
        assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    assert one_line(capsys) == (
        f"python -m coa.search: {out} is being written by another process (it holds {lock}): wait for it to "
        "finish, or pick another folder"
    )
    assert (out / "index.json").is_file() and not lock.exists()


def test_a_split_into_a_folder_another_split_is_writing_is_refused_as_busy(tmp_path, capsys):
    """The probe: the second of two concurrent splits was refused as if the folder were someone else's (the
    first had written a file but not yet its owner marker)."""
    import subprocess
    import sys

    from coa.questions import DEFAULT_QUESTIONS
    from coa.questions import main as split

    out = tmp_path / "split"
    writing = (  # what a split holds while it writes: the folder's lock, a first file, no owner marker yet
        "import sys, time; from pathlib import Path; from coa.io import locked_beside\n"
        "with locked_beside(sys.argv[1]):\n"
        "    Path(sys.argv[1]).mkdir(); Path(sys.argv[1], 'train.jsonl').write_text('')\n"
        "    print('writing', flush=True); time.sleep(60)\n"
    )
    first = subprocess.Popen([sys.executable, "-c", writing, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline() == "writing\n"
        assert split(["split", f"questions={DEFAULT_QUESTIONS}", f"out={out}", "heldout=10", "train=10"]) == 2
    finally:
        first.kill()
        first.wait()
    assert one_line(capsys) == (
        f"coa.questions: {out} is being written by another process (it holds {tmp_path / '.split.lock'}): wait "
        "for it to finish, or pick another folder"
    )


def test_a_busy_rows_folder_names_no_particular_tool(tmp_path):
    """The probe: evaluate.run refused as busy said "a synth.run holding ..."; any rows writer holds that lock."""
    from coa.io import OutputBusy
    from synth.shards import ShardWriter

    out = tmp_path / "trajectories"
    with ShardWriter(out):
        with pytest.raises(OutputBusy) as refused:
            ShardWriter(out).__enter__()
    assert str(refused.value) == (
        f"out={out} is being written by another process (it holds {out / '.lock'}): wait for it to finish, or "
        "pick another out="
    )
