"""Exports of a real curate run to TRL, LLaMA-Factory and verl layouts, and back."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from coa.formats import get_format, result_text
from coa.questions import DEFAULT_QUESTIONS, load_questions
from coa.tools import tool_class
from data_cards import export, formats
from tests.data_cards.conftest import ROOT


def run_export(tmp_path, curate_run, *args):
    sets = curate_run / "runs" / "curate" / "sets"
    assert export.main([f"sets_dir={sets}", f"out={tmp_path}", *args]) == 0
    return sets


def test_trl_preference_rows_are_the_pairs(curate_run, tmp_path):
    sets = run_export(tmp_path, curate_run, "to=trl_preference")
    got = pq.read_table(tmp_path / "preference.parquet").to_pylist()
    pairs = pq.read_table(sets / "pairs.parquet").to_pylist()
    assert len(got) == len(pairs) > 0
    assert got == [{k: p[k] for k in ("id", "prompt", "chosen", "rejected")} for p in pairs]


def test_trl_sft_keeps_the_observation_mask(curate_run, tmp_path):
    sets = run_export(tmp_path, curate_run, "to=trl_sft")
    for name in ("coa", "cot"):
        got = pq.read_table(tmp_path / f"sft_{name}.parquet").to_pylist()
        source = pq.read_table(sets / f"{name}.parquet").to_pylist()
        assert len(got) == len(source) > 0
        for row, traj in zip(got, source):
            assert row["prompt"] == traj["prompt"]
            assert formats.sft_segments(row) == [{"kind": s["kind"], "text": s["text"]} for s in traj["segments"]]
            f = get_format(traj["format"])
            for start, end in row["observation_spans"]:  # each span is exactly one environment observation
                assert f.result_open in row["completion"][start:end] and row["completion"][end - 1] != ""
        spans = sum(len(r["observation_spans"]) for r in got)
        assert (spans > 0) == (name == "coa")  # CoT rows never search


def test_trl_tools_rows_are_tool_calling_conversations(curate_run, tmp_path):
    """The curated sets as TRL's conversational tool-calling rows: every observation is a tool message
    answering the call id of the assistant turn before it, and each turn's content plus its call (in the
    preset's markup) is exactly the text the teacher wrote."""
    sets = run_export(tmp_path, curate_run, "to=trl_tools")
    for name in ("coa", "cot"):
        got = pq.read_table(tmp_path / f"tools_{name}.parquet").to_pylist()
        source = pq.read_table(sets / f"{name}.parquet").to_pylist()
        assert len(got) == len(source) > 0
        calls = 0
        for row, traj in zip(got, source):
            fmt, messages = get_format(traj["format"]), row["messages"]
            observations = [s for s in traj["segments"] if s["kind"] == "observation"]
            assert [m["role"] for m in messages] == ["user"] + ["assistant", "tool"] * len(observations) + ["assistant"]
            assert messages[0]["content"] == traj["prompt"]
            for call, result, obs in zip(messages[1::2], messages[2::2], observations):
                (tool_call,) = call["tool_calls"]
                assert result["tool_call_id"] == tool_call["id"] and result["content"] == result_text(obs["text"], fmt)
                assert json.loads(tool_call["function"]["arguments"]) == {"query": obs["query"]}
            assert json.loads(row["tools"]) == ([tool_class("search").schema()] if observations else [])
            calls += len(observations)
        assert (calls > 0) == (name == "coa")  # CoT rows never search


def test_trl_tools_carries_every_tool_and_rebuilds_the_text():
    """A trajectory that searches, opens a document and runs code: each call becomes an OpenAI-style tool
    call of that tool, declared in ``tools``, and content + call markup + observation give back the text."""
    from coa.trajectory import Trajectory, segment

    fmt = get_format("search_r1")
    calls = [
        ("search", {"query": "Maria Golovin"}),
        ("open", {"doc": "Maria Golovin"}),
        ("python", {"code": "print(1958 + 1)"}),
    ]
    bodies = [
        "Doc 1(Title: Maria Golovin) An opera by Menotti.",
        "Maria Golovin (page 1 of 1)\nAn opera of 1958.",
        "1959",
    ]
    segments, steps = [], []
    for (name, args), body in zip(calls, bodies):
        steps.append(f"<think>Next I use {name}.</think>\n" + fmt.tool_call(name, args))
        segments.append(segment("model", steps[-1]))
        text = fmt.wrap_observation(body) if name == "search" else fmt.tool_result(body)
        segments.append(
            segment("observation", text, query=args["query"])
            if name == "search"
            else segment("observation", text, tool=name, args=json.dumps(args))
        )
    segments.append(segment("model", "<think>So 1959.</think>\n" + fmt.answer_text("1959")))
    row = Trajectory(
        id="t", question_id="q", question="Q?", golden_answers=["1959"], prompt="P", format=fmt.name, segments=segments
    ).to_row()
    (got,) = formats.trl_tools([row])
    assert [t["function"]["name"] for t in json.loads(got["tools"])] == ["search", "open", "python"]
    turns = got["messages"][1:-1]
    for (call, result), (name, args), body, step in zip(zip(turns[::2], turns[1::2]), calls, bodies, steps):
        function = call["tool_calls"][0]["function"]
        assert (function["name"], json.loads(function["arguments"])) == (name, args)
        assert call["content"] + fmt.tool_call(name, args) == step and result["content"] == body
    assert got["messages"][-1] == {"role": "assistant", "content": segments[-1]["text"]}
    # the same row in LLaMA-Factory's function-call layout: the thought in think tags before each call's JSON
    (lf,) = formats.llamafactory_tools([row])
    assert [m["role"] for m in lf["messages"]] == ["user"] + ["function_call", "observation"] * 3 + ["assistant"]
    for call, result, (name, args), body in zip(lf["messages"][1:-1:2], lf["messages"][2:-1:2], calls, bodies):
        thought, _, payload = call["content"].partition("\n</think>\n\n")
        assert thought == f"<think>\nNext I use {name}."
        assert json.loads(payload) == {"name": name, "arguments": args} and result["content"] == body
    assert lf["messages"][-1] == got["messages"][-1] and lf["tools"] == got["tools"]
    info = formats.llamafactory_dataset_info({"tools_coa": "tools_coa.json"})["autocoa_tools_coa"]
    assert info["columns"] == {"messages": "messages", "tools": "tools"}
    assert (info["tags"]["function_tag"], info["tags"]["observation_tag"]) == ("function_call", "observation")


def test_llamafactory_files_in_autocoa_shape(curate_run, tmp_path):
    sets = run_export(tmp_path, curate_run, "to=llamafactory")
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["autocoa_pairs"]["ranking"] is True
    assert info["autocoa_pairs"]["columns"] == {"messages": "conversation", "chosen": "chosen", "rejected": "rejected"}
    assert (
        info["autocoa_coa"]["columns"] == {"messages": "messages"} and info["autocoa_coa"]["formatting"] == "sharegpt"
    )
    for entry in info.values():
        assert (tmp_path / entry["file_name"]).exists()
    coa = json.loads((tmp_path / "coa.json").read_text())
    source = pq.read_table(sets / "coa.parquet").to_pylist()
    for row, traj in zip(coa, source):
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][1]["content"] == "".join(s["text"] for s in traj["segments"])  # observations inside
    pairs = json.loads((tmp_path / "pairs.json").read_text())
    assert pairs and all(p["chosen"]["role"] == p["rejected"]["role"] == "assistant" for p in pairs)


def test_verl_parquet_round_trips_to_questions(tmp_path, curate_run):
    questions = load_questions(DEFAULT_QUESTIONS)[:25]
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps(q) + "\n" for q in questions))
    run_export(tmp_path / "verl", curate_run, "to=verl", f"input={src}", "split=test")
    table = pq.read_table(tmp_path / "verl" / "test.parquet")
    assert table.schema.field("prompt").type == pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    row = table.slice(0, 1).to_pylist()[0]
    assert row["reward_model"]["style"] == "rule" and row["extra_info"]["split"] == "test" and row["ability"]
    assert row["data_source"] == "hotpotqa" and questions[0]["question"] in row["prompt"][0]["content"]
    # verl's tool config beside it: the enabled tools (search by default), each this toolkit's tool behind verl's
    # BaseTool contract (tests/data_cards/test_verl_tool.py runs it)
    config = yaml.safe_load((tmp_path / "verl" / "tool_config.yaml").read_text())
    (entry,) = config["tools"]
    assert entry["class_name"] == "data_cards.verl_tool.VerlTool" and entry["config"]["tool"] == "search"
    assert entry["tool_schema"] == tool_class("search").schema() and entry["config"]["type"] == "native"
    run_export(tmp_path / "back", curate_run, "to=questions", f"input={tmp_path / 'verl' / 'test.parquet'}")
    back = [json.loads(line) for line in (tmp_path / "back" / "questions.jsonl").read_text().splitlines()]
    assert [(b["id"], b["question"], b["golden_answers"]) for b in back] == [
        (q["id"], q["question"], q["golden_answers"]) for q in questions
    ]
    assert load_questions(tmp_path / "back" / "questions.jsonl")[0]["id"] == questions[0]["id"]  # FlashRAG-readable


def test_autocoa_rl_parquet_to_questions(tmp_path, curate_run):
    """AutoCoA's own RL file (no extra_info.question): the question is read back from the instruction."""
    source = ROOT / "data/raw/autocoa/hotpot_qa_dev.parquet"
    run_export(tmp_path, curate_run, "to=questions", f"input={source}")
    back = [json.loads(line) for line in (tmp_path / "questions.jsonl").read_text().splitlines()]
    rows = pq.read_table(source).to_pylist()
    assert len(back) == len(rows) and back[0]["id"] == rows[0]["_id"]
    assert all(b["golden_answers"] == [r["reward_model"]["ground_truth"]] for b, r in zip(back, rows))
    # the split falls exactly at the end of their template: what precedes the question is one fixed text
    contents = [r["prompt"][0]["content"] for r in rows]
    assert all(c.rstrip().endswith(b["question"]) and "\n" not in b["question"] for c, b in zip(contents, back))
    assert len({c[: c.rindex(b["question"])].rstrip() for c, b in zip(contents, back)}) == 1
    assert back[0]["question"].startswith("What American author born in 1915")


def test_bad_input_is_named(tmp_path, curate_run, capsys):
    assert export.main(["to=alpaca"]) == 2
    assert "to must be one of trl_preference" in capsys.readouterr().err
    broken = tmp_path / "broken.parquet"
    pq.write_table(pa.table({"data_source": ["x"], "prompt": [[{"role": "user", "content": "Q?"}]]}), broken)
    assert export.main(["to=questions", f"input={broken}", f"out={tmp_path}"]) == 2
    assert f"{broken}: row 0 lacks column(s) reward_model" in capsys.readouterr().err
