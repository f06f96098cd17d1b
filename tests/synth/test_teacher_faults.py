"""Chat teachers that misbehave, through ``python -m synth.run``'s ``main`` against ``FakeReasoningAPI``
stand-ins (hosted APIs cannot be reached here), with the real BM25 search: teacher text that quotes tool
results or talks about tags stays data (rows parse, tags counted), a still malformed trajectory is named,
unreachable / 500 / hanging / garbage teachers end in one line and a documented exit code, a 4xx fails
over to a healthy endpoint, rows an engine failure ended are retried on a re-run, budgets report their
overshoot, and bad settings are refused before anything starts."""

from __future__ import annotations

import fcntl
import json

import pytest

from coa.formats import AUTOCOA, SEARCH_R1, control_tags, neutralise
from coa.trajectory import read_table
from synth.run import main
from synth.teacher import TeacherConfig
from tests.fixtures.chat_api import GARBAGE, FakeReasoningAPI


def args(out, urls, index_dir, *extra, fmt="search_r1"):
    urls = urls if isinstance(urls, list) else [urls]
    return [
        "mode=coa",
        f"format={fmt}",
        f"search.index={index_dir}",
        f"out={out}",
        f"teacher.base_url=[{', '.join(urls)}]",
        "teacher.api=chat",
        "teacher.model=fake-reasoner",
        "teacher.retries=0",
        "progress=false",
        "search.max_tokens=4000",
        "concurrency=1",
        *extra,
    ]


def write_questions(path, *tags: str):
    path.write_text(
        "".join(
            json.dumps(
                {"id": f"q{i}", "question": f"Where is Alnwick Castle? {tag}", "golden_answers": ["Northumberland"]}
            )
            + "\n"
            for i, tag in enumerate(tags)
        )
    )
    return path


def summary(out) -> dict:
    return json.loads((out / "summary.json").read_text())


def rows(out) -> dict[str, dict]:
    return {r["question_id"]: r for r in read_table(out).to_pylist()}


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---- 3: teacher text is data, not markup ----------------------------------------------------------------


def test_neutralise_makes_every_presets_tags_plain_text():
    for fmt in (SEARCH_R1, AUTOCOA):
        for tag in control_tags():
            text, n = neutralise(f"a {tag} b")
            assert (
                n == 1
                and tag not in text
                and fmt.parse(f"{fmt.think_open}{text}{fmt.think_close}\n{fmt.answer_text('x')}").well_formed
            ), (fmt.name, tag)
    assert neutralise("no tags, 3 < 4 > 2 and {braces}") == ("no tags, 3 < 4 > 2 and {braces}", 0)


@pytest.mark.parametrize("fmt", ["search_r1", "autocoa"])
def test_a_teacher_quoting_results_and_tags_in_its_reasoning_writes_rows_that_parse(fmt, index_dir, tmp_path, capsys):
    out = tmp_path / "out"
    with FakeReasoningAPI(quote_results=True, tag_talk=True) as api:
        assert main(args(out, api.url, index_dir, "limit=3", fmt=fmt)) == 0
    preset = SEARCH_R1 if fmt == "search_r1" else AUTOCOA
    tool_results = [m["content"] for body in api.requests for m in body["messages"] if m["role"] == "tool"]
    assert tool_results and not any(tag in t for t in tool_results for tag in control_tags())  # plain result text
    s = summary(out)
    assert s["dataset"]["well_formed"] == 1.0 and s["run"]["finish_reasons"] == {"answer": 3}
    assert s["run"]["neutralised_tags"] == 3 * (3 * 12 + 1)  # 3 rows: TAG_TALK's 12 tags in 3 turns, 1 in the prose
    for r in rows(out).values():
        completion = "".join(seg["text"] for seg in r["segments"])
        assert "The result began: " in completion  # the quote is kept, as plain text
        assert "\u2039answer\u203a x \u2039/answer\u203a" in completion
        assert "no more \u2039search\u203a needed" in completion
        assert preset.parse(completion).well_formed and r["n_actions"] == 2
    assert "format tags in its reasoning or prose made plain text" in capsys.readouterr().out


def test_a_trajectory_that_still_does_not_parse_is_named_malformed(index_dir, tmp_path):
    """``tags`` mode: the content is format text by contract, so a stray close tag there stays; the row ends
    with finish reason ``malformed`` and the well-formed share says so."""
    out = tmp_path / "out"
    questions = write_questions(tmp_path / "q.jsonl", "", "[malformed]")
    with FakeReasoningAPI(reasoning_key=None) as api:
        argv = args(out, api.url, index_dir, f"questions={questions}", "teacher.tools=tags", "prompt.prefill=")
        assert main(argv) == 0
    s = summary(out)
    assert s["run"]["finish_reasons"] == {"answer": 1, "malformed": 1} and s["dataset"]["well_formed"] == 0.5
    assert rows(out)["q1"]["answer"]  # the answer is kept; the reason says the text does not parse


# ---- 7, 8: unreachable, failing, hanging or garbage teachers ---------------------------------------------


@pytest.mark.parametrize("fault", ["unreachable", "status_500", "hanging", "html_models", "foo_models"])
def test_a_teacher_that_fails_its_start_check_is_one_line_and_exit_3(fault, index_dir, tmp_path, capsys):
    out = tmp_path / "out"
    if fault == "unreachable":
        assert main(args(out, "http://127.0.0.1:9/v1", index_dir, "limit=2")) == 3
    else:
        kw = {
            "status_500": {"fail_status": 500},
            "hanging": {"hang_s": 30},
            "html_models": {"garbage": "html"},
            "foo_models": {"garbage": "foo"},
        }[fault]
        with FakeReasoningAPI(fail_models=True, **kw) as api:
            assert main(args(out, api.url, index_dir, "limit=2", "teacher.timeout_s=1")) == 3
            assert not api.requests  # nothing was generated
    err = one_line(capsys.readouterr().err)
    assert err.startswith("synth: teacher unavailable at start: ")
    assert not out.exists()  # the folder this run made (lock, fingerprint) goes again
    assert {
        "unreachable": "APIConnectionError",
        "status_500": "answered 500",
        "hanging": "APITimeoutError",
        "html_models": "/models answered something that is not JSON",
        "foo_models": "/models answered something that is not a model list",
    }[fault] in err
    assert not list(out.glob("*.parquet"))


def test_each_kind_of_garbage_ends_only_its_row_with_a_named_reason(index_dir, tmp_path):
    out = tmp_path / "out"
    questions = write_questions(tmp_path / "q.jsonl", "", *[f"[garbage:{kind}]" for kind in GARBAGE])
    with FakeReasoningAPI() as api:
        assert main(args(out, api.url, index_dir, f"questions={questions}")) == 0
    s = summary(out)
    assert s["run"]["finish_reasons"] == {"answer": 1, "bad_response": len(GARBAGE)}
    assert s["run"]["endpoints"][api.url]["bad_responses"] == len(GARBAGE)
    assert s["run"]["prompt_tokens"] >= 0 and s["run"]["completion_tokens"] >= 0  # no negative usage counted
    errors = {
        r["question"].split("[garbage:")[-1].rstrip("]"): json.loads(r["transcript"])["error"]
        for r in rows(out).values()
        if r["finish_reason"] == "bad_response"
    }
    assert "not JSON but text: '<!doctype html>" in errors["html"]
    assert "not valid JSON" in errors["invalid_json"]
    assert "no choices (its keys: foo)" in errors["foo"] and "no choices" in errors["no_choices"]
    assert "message is null" in errors["null_message"]
    assert "prompt_tokens=-500" in errors["negative_usage"]


@pytest.mark.parametrize("stream", [False, True])
def test_garbage_from_the_first_reply_on_stops_the_run_in_one_line(stream, index_dir, tmp_path, capsys):
    out = tmp_path / "out"
    with FakeReasoningAPI(garbage="html") as api:
        rc = main(args(out, api.url, index_dir, "limit=3", f"teacher.stream={str(stream).lower()}"))
    assert rc == 3 and len(api.requests) == 1  # nothing more is sent to it
    err = one_line(capsys.readouterr().err)
    assert "the teacher's first reply was unusable" in err and api.url in err
    assert not list(out.glob("*.parquet"))


# ---- 9: 4xx fail-over, and retrying rows an engine failure ended ------------------------------------------


def test_a_4xx_from_one_endpoint_fails_over_to_a_healthy_one(index_dir, tmp_path):
    out = tmp_path / "out"
    with FakeReasoningAPI(fail_status=400) as bad, FakeReasoningAPI() as good:
        assert main(args(out, [bad.url, good.url], index_dir, "limit=3", "teacher.backoff_s=60")) == 0
    run = summary(out)["run"]
    assert run["finish_reasons"] == {"answer": 3}
    assert run["endpoints"][bad.url]["rejected"] == 1  # refused once, then left out while the other serves


def test_rows_an_engine_failure_ended_are_retried_unless_kept(index_dir, tmp_path):
    out = tmp_path / "out"
    with FakeReasoningAPI(fail_status=400, fail_first=1) as api:  # the very first request is refused
        assert main(args(out, api.url, index_dir, "limit=3")) == 0
        assert summary(out)["run"]["finish_reasons"] == {"error": 1, "answer": 2}
        error_row = next(r for r in rows(out).values() if r["finish_reason"] == "error")
        assert "failing on cue (400)" in json.loads(error_row["transcript"])["error"]
        assert main(args(out, api.url, index_dir, "limit=3", "retry_errors=false")) == 0
        assert summary(out)["run"]["skipped_done"] == 3 and summary(out)["dataset"]["finish_reasons"]["error"] == 1
        assert main(args(out, api.url, index_dir, "limit=3")) == 0
    s = summary(out)
    assert s["run"]["retried_errors"] == 1 and s["run"]["finished"] == 1
    ids = read_table(out).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 3 and s["dataset"]["finish_reasons"] == {"answer": 3}


# ---- 10, 11, 12, 19 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value", [("price_prompt", "-3"), ("price_completion", "-0.5"), ("backoff_s", "-1")])
def test_negative_prices_and_backoff_are_refused_before_anything_starts(key, value, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(args(out, "http://127.0.0.1:9/v1", tmp_path / "no-index", f"teacher.{key}={value}")) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"synth: teacher.{key} must be >= 0 (") and f"got {float(value)}: set teacher.{key}=0" in err
    assert not out.exists()
    with pytest.raises(ValueError, match=r"teacher.price_prompt must be >= 0 .*got -3"):
        TeacherConfig(price_prompt=-3, max_cost_usd=1)


@pytest.mark.parametrize(
    "setting",
    [
        "teacher.price_prompt=nan",
        "teacher.price_completion=nan",
        "teacher.max_cost_usd=nan",
        "teacher.max_cost_usd=inf",
        "temperature=inf",
        "temperature=nan",
    ],
)
def test_nan_and_infinity_are_refused_naming_the_key(setting, tmp_path, capsys):
    """Issue 48: NaN passed every ``>= 0`` check and switched the cost budget off (summary.json held
    ``"cost": NaN``); a NaN or infinite temperature was sent and the teacher blamed (exit 3)."""
    out = tmp_path / "out"
    key, value = setting.split("=")
    assert main(args(out, "http://127.0.0.1:9/v1", tmp_path / "no-index", setting)) == 2
    assert one_line(capsys.readouterr().err) == f"synth.{key}: expected a finite number, got {value!r}\n"
    assert not out.exists()


def test_a_native_chat_teacher_without_base_url_is_refused_with_the_fix(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["mode=coa", "teacher.api=chat", f"out={out}", "check=true"]) == 2
    err = one_line(capsys.readouterr().err)
    assert "teacher.api=chat with native tool calls needs teacher.base_url" in err
    assert "python -m synth.serve chat_template=tools tool_call_parser=hermes" in err and not out.exists()


def test_a_token_budget_reports_its_overshoot(index_dir, tmp_path):
    """The budget is checked before each trajectory starts; those in flight finish (here 2 at once), and
    summary.json says by how much the output went over."""
    out = tmp_path / "out"
    with FakeReasoningAPI(latency_s=0.05) as api:
        assert main(args(out, api.url, index_dir, "limit=6", "concurrency=2", "teacher.max_total_tokens=1")) == 3
    s = summary(out)
    spent = s["dataset"]["prompt_tokens"] + s["dataset"]["completion_tokens"]
    assert s["run"]["finished"] == 2 and s["run"]["tokens_over_budget"] == spent - 1 > 0


def test_a_second_writer_into_the_same_out_is_one_line_and_exit_2(index_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "w") as held:  # another synth.run writing there
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(args(out, "http://127.0.0.1:9/v1", index_dir, "limit=1")) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"synth: out={out} is being written by another process") and "pick another out=" in err
