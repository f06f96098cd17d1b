"""CoA / CoT / branch synthesis against the real embedded vLLM CPU teacher and the real BM25 index.

The CoA run uses the ``search_r1`` tags with the search-open tag prefilled: the 135M model closes
about half of those calls by itself (it almost never writes AutoCoA's ``</end_search>``), enough to
exercise stopping, searching and continuing on every run.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from coa.environment import SearchEnvConfig
from coa.formats import get_format
from coa.prompts import PromptConfig, prompt_hash
from coa.search import load_searcher
from coa.tokenize import MODEL, OBSERVATION, PROMPT, tokenize_segments
from coa.trajectory import FINISH_REASONS, read_trajectories, segment, write_trajectories
from synth.config import SynthConfig
from synth.run import branch, main, run
from synth.teacher import TeacherConfig

pytestmark = [pytest.mark.model, pytest.mark.server, pytest.mark.slow]

PREFILL = "<think>\nI need to search.\n<search>"


def config(teacher_url, index_dir, out, **over) -> SynthConfig:
    base = dict(
        mode="coa",
        format="search_r1",
        limit=10,
        out=str(out),
        search=SearchEnvConfig(index=str(index_dir), max_tokens=160, max_actions=4),
        teacher=TeacherConfig(base_url=teacher_url, retries=1),
        progress=False,
        concurrency=10,
        prompt=PromptConfig(prefill=PREFILL, demonstrations=True),
    )
    return SynthConfig(**base | over)


@pytest.fixture(scope="module")
def coa_run(teacher_url, index_dir, tmp_path_factory):
    cfg = config(teacher_url, index_dir, tmp_path_factory.mktemp("coa"))
    summary = run(cfg)
    rows = read_trajectories(cfg.out_dir)
    assert any(t.n_actions for t in rows), "no trajectory searched: nothing below would be tested"
    return cfg, summary, rows


def test_model_segment_stops_at_the_search_tag(coa_run):
    cfg, _, rows = coa_run
    fmt = get_format(cfg.format)
    for t in rows:
        for i, (before, seg) in enumerate(zip(t.segments, t.segments[1:])):
            if seg["kind"] == "observation":
                assert before["kind"] == "model" and before["text"].endswith(fmt.search_close)
                so_far = "".join(s["text"] for s in t.segments[: i + 1])  # the open tag may be the prefill's
                assert seg["query"] == fmt.parse(so_far).queries[-1]
        assert t.n_actions == sum(s["kind"] == "observation" for s in t.segments)


def test_observation_is_exactly_what_the_search_environment_returned(coa_run, index_dir):
    cfg, _, rows = coa_run
    fmt, searcher = get_format(cfg.format), load_searcher(index_dir)
    observations = [s for t in rows for s in t.segments if s["kind"] == "observation"]
    assert observations
    for obs in observations:
        docs = searcher.search([obs["query"]], cfg.search.topk)[0]
        assert obs["text"] == fmt.observation(docs)
        assert obs["doc_ids"] == [d.id for d in docs]


def kind_text(seg: dict) -> tuple[str, str]:
    return seg["kind"], seg["text"]


def test_continuation_sends_the_ids_so_far(coa_run, tokenizer):
    """Each call's prompt is the ids so far: the billed prompt tokens are the sum over calls."""
    cfg, _, rows = coa_run
    continued = [
        t
        for t in rows
        if any(a["kind"] == "observation" and b["kind"] == "model" for a, b in zip(t.segments, t.segments[1:]))
    ]
    assert continued, "no trajectory continued after a search result"
    for t in rows:
        assert (t.segments[0]["kind"], t.segments[0]["text"]) == ("prefill", PREFILL)
        tok = tokenize_segments(tokenizer, t.prompt, t.segments)
        ends = [i for i, s in enumerate(t.segments) if i == 0 or s["kind"] == "observation"]
        billed = [sum(1 for j in tok.segment_index if j <= end) for end in ends]
        # after the last observation the loop calls again unless the budget is spent; a call that generated
        # nothing leaves no segment, so a trajectory ending in an observation was billed for it or not
        allowed = {sum(billed), sum(billed[:-1])} if t.segments[-1]["kind"] == "observation" else {sum(billed)}
        assert t.prompt_tokens in allowed, (t.id, t.prompt_tokens, allowed, t.finish_reason)


def test_token_segments_line_up_with_the_engine(coa_run, tokenizer, teacher_url, index_dir, tmp_path):
    """The ids the served model saw at every call (vLLM's own ``prompt_token_ids``) are a prefix of the ids
    SFT trains on for the stored trajectory: one tokenisation from synthesis/evaluation to training."""
    from coa.engines.completions import CompletionsEngine

    class Recording(CompletionsEngine):
        """The real completions engine, keeping what the server says it received."""

        seen: list = []

        def _generation(self, r, request):
            self.seen.append((request.episode.question["id"], r.choices[0].model_extra["prompt_token_ids"]))
            return super()._generation(r, request)

    cfg = config(teacher_url, index_dir, tmp_path / "rec", limit=6)
    engine = Recording(teacher_url, cfg.teacher.model, tokenizer, retries=1, temperature=cfg.temperature)
    run(cfg, engine)
    rows = {t.question_id: t for t in read_trajectories(cfg.out_dir)}
    assert engine.vllm and engine.token_prompts  # a vLLM server gets ids, not text
    assert len(engine.seen) > len(rows)  # searches made the loop call again
    for qid, served in engine.seen:
        t = rows[qid]
        trained = tokenize_segments(tokenizer, t.prompt, t.segments)
        assert trained.input_ids[: len(served)] == served
    for t in rows.values():
        tok = tokenize_segments(tokenizer, t.prompt, t.segments)
        for i, seg in enumerate(t.segments):
            ids = [x for x, j in zip(tok.input_ids, tok.segment_index) if j == i]
            assert ids == seg["token_ids"] and tokenizer.decode(ids) == seg["text"]
            assert {lab for lab, j in zip(tok.segment_labels, tok.segment_index) if j == i} == {
                {"model": MODEL, "prefill": PROMPT, "observation": OBSERVATION}[seg["kind"]]
            }


def test_every_row_carries_its_provenance(coa_run):
    cfg, summary, rows = coa_run
    assert len(rows) == len({t.id for t in rows}) == cfg.limit
    for t in rows:
        sampling = json.loads(t.sampling)
        assert (t.mode, t.format, t.teacher, t.retriever) == ("coa", "search_r1", "SmolLM2-135M-Instruct", "bm25:k=3")
        assert (t.prompt_id, t.prompt_hash) == ("search_r1/coa+demo", prompt_hash(cfg.prompt))
        assert sampling["temperature"] == 0.7 and sampling["max_tokens"] == 160 and isinstance(sampling["seed"], int)
        assert t.finish_reason in FINISH_REASONS and t.completion_tokens > 0 and t.prompt_tokens > 0
        assert t.latency_s > 0 and datetime.fromisoformat(t.created_at)
        assert t.answer == get_format("search_r1").extract_answer(t.completion)
    assert summary["dataset"]["rows"] == cfg.limit and summary["run"]["complete"]
    assert summary["run"]["search_calls"] == sum(t.n_actions for t in rows)
    on_disk = json.loads((Path(cfg.out_dir) / "summary.json").read_text())
    assert on_disk["dataset"]["completion_tokens"] == sum(t.completion_tokens for t in rows)


def test_rerun_skips_done_rows(coa_run):
    cfg, _, rows = coa_run
    again = run(cfg)
    assert (again["run"]["finished"], again["run"]["skipped_done"]) == (0, cfg.limit)
    assert len(read_trajectories(cfg.out_dir)) == len(rows)


def test_cot_cli_has_no_tool_and_keeps_the_key_secret(teacher_url, tmp_path, monkeypatch, capsys):
    secret = "sk-test-never-print-this"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    out = tmp_path / "cot"
    assert (
        main(
            [
                "mode=cot",
                "format=autocoa",
                "limit=4",
                "n=2",
                "search.max_tokens=96",
                "prompt.demonstrations=true",
                f"out={out}",
                f"teacher.base_url={teacher_url}",
                "progress=false",
            ]
        )
        == 0
    )
    rows = read_trajectories(out)
    assert len(rows) == 8 and sorted({t.sample for t in rows}) == [0, 1]
    for t in rows:
        assert t.prompt_id == "autocoa/cot+demo" and t.retriever == "" and t.n_actions == 0
        assert [s["kind"] for s in t.segments][:1] == ["prefill"] and {s["kind"] for s in t.segments[1:]} <= {"model"}
        if get_format("autocoa").search_close in t.completion:
            assert t.finish_reason == "forbidden_search"
    printed = capsys.readouterr()
    files = "".join(p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file())
    assert secret not in printed.out + printed.err + files


def test_branches_continue_the_prefix_forbidden_and_forced(coa_run, teacher_url, index_dir, tmp_path):
    """Through the Python API (as curation calls it), then the CLI on a decisions file."""
    cfg, _, rows = coa_run
    fmt = get_format("search_r1")
    parent = max(rows, key=lambda r: r.n_actions)
    prefix = [segment("model", parent.segments[0]["text"].split(fmt.search_open)[0])]
    decision = parent.to_row() | {
        "id": "d",
        "mode": "decision",
        "parent_id": parent.id,
        "segments": prefix,
        "decision_index": 1,
    }
    bcfg = config(teacher_url, index_dir, tmp_path / "branch", mode="branch", n=2)
    table = branch([decision], bcfg)
    got = read_trajectories(bcfg.out_dir)
    assert table.num_rows == len(got) == 4
    for t in got:
        kind = t.branch_id.rsplit(":", 1)[1]
        assert t.branch_id == f"{parent.id}:1:{kind}" and t.parent_id == parent.id and t.decision_index == 1
        assert kind_text(t.segments[0]) == kind_text(prefix[0])
        if kind == "force":  # the forced open tag is the toolkit's prefill; the model writes the query on
            assert kind_text(t.segments[1]) == ("prefill", fmt.search_open) and t.segments[2]["kind"] == "model"
        else:
            assert all(s["kind"] == "model" for s in t.segments)
            assert (fmt.search_close in t.segments[1]["text"]) == (t.finish_reason == "forbidden_search")
    path = write_trajectories(tmp_path / "decisions.parquet", [decision])
    assert (
        main(
            [
                "mode=branch",
                f"decisions={path}",
                "branches=force",
                "format=search_r1",
                "search.max_tokens=64",
                f"search.index={index_dir}",
                f"out={tmp_path / 'cli'}",
                f"teacher.base_url={teacher_url}",
                "progress=false",
            ]
        )
        == 0
    )
    (row,) = read_trajectories(tmp_path / "cli")
    assert row.branch_id == f"{parent.id}:1:force" and kind_text(row.segments[0]) == kind_text(prefix[0])
