"""The tool seam (issue 39, first part): the contract and its registry, argument checks and budgets as
observations, search and open against the real index, python through the real sandbox, the CLI, and a new
tool that is one class plus its registration (``DateDiff`` below, registered at test time)."""

import datetime as dt
import json
import subprocess
import sys
from collections import Counter

import pytest

from coa.errors import BadInput
from coa.formats import AUTOCOA, SEARCH_R1
from coa.search import DocumentStore, build_index, load_searcher
from coa.tools import (
    TOOLS,
    Observation,
    Tool,
    ToolBudget,
    ToolContext,
    known_tools,
    load_builtins,
    make_tool,
    register,
    tool_class,
)
from coa.tools.__main__ import main
from coa.tools.open_doc import OpenSettings, OpenTool
from coa.tools.sandbox import SandboxSettings
from coa.tools.search import SearchTool, observation_body
from coa.tools.toolbox import Call, Toolbox, check_arguments


# ---- a new tool: one class and its registration ----------------------------------------------------------
class DateDiff(Tool):
    """Days (or whole years) between two ISO dates: what a comparison question needs from two snippets."""

    description = "Days or whole years between two dates (YYYY-MM-DD)."
    parameters = {
        "type": "object",
        "properties": {
            "start": {"type": "string"},
            "end": {"type": "string"},
            "unit": {"type": "string", "enum": ["days", "years"]},
        },
        "required": ["start", "end"],
        "additionalProperties": False,
    }
    batched = True
    batches: list[int] = []

    def execute(self, args: dict) -> Observation:
        try:
            start, end = dt.date.fromisoformat(args["start"]), dt.date.fromisoformat(args["end"])
        except ValueError as e:
            return Observation(f"Not a date: {e}.", error="bad_arguments")
        days = (end - start).days
        if args.get("unit") == "years":
            years = end.year - start.year - ((end.month, end.day) < (start.month, start.day))
            return Observation(f"{years} years", {"days": days})
        return Observation(f"{days} days", {"days": days})

    def execute_batch(self, calls):
        self.batches.append(len(calls))
        return [self.execute(a) for a in calls]


@pytest.fixture
def date_diff():
    register("date_diff")(DateDiff)
    DateDiff.batches = []
    yield DateDiff
    TOOLS.pop("date_diff")


def test_a_new_tool_is_a_class_and_its_registration(date_diff, capsys):
    assert "date_diff" in known_tools() and tool_class("date_diff") is DateDiff
    tool = make_tool("date_diff")
    assert tool.schema() == {
        "type": "function",
        "function": {
            "name": "date_diff",
            "description": "Days or whole years between two dates (YYYY-MM-DD).",
            "parameters": DateDiff.parameters,
        },
    }
    box = Toolbox([tool])
    assert box.call("date_diff", '{"start": "1813-10-10", "end": "1901-01-27", "unit": "years"}') == Observation(
        "87 years", {"days": 31885}
    )
    assert box.call("date_diff", {"start": "1813-10-10", "end": "1901-01-27", "unit": "decades"}).text == (
        'Bad arguments for date_diff: \'unit\' must be one of "days", "years", got "decades". '
        "Parameters: start (string, required), end (string, required), unit (string)."
    )
    assert main(["list"]) == 0  # the CLI lists it beside the built-ins, and calls it
    assert "date_diff: Days or whole years between two dates" in capsys.readouterr().out
    assert main(["call", "date_diff", '{"start": "2000-01-01", "end": "2000-03-01"}']) == 0
    out = capsys.readouterr()
    assert out.out == "60 days\n" and json.loads(out.err) == {"error": "", "provenance": {"days": 60}}


def test_registry_names_its_tools_and_refuses_others():
    assert {"search", "open", "python"} <= set(known_tools())
    with pytest.raises(BadInput, match=r"^unknown tool 'serach'; known: open, python, search$"):
        tool_class("serach")
    with pytest.raises(TypeError, match="decorates a coa.tools.Tool subclass"):
        register("x")(object)
    for name in load_builtins():
        declared = tool_class(name).schema()
        params = declared["function"]["parameters"]
        assert declared["type"] == "function" and declared["function"]["name"] == name
        assert params["type"] == "object" and params["additionalProperties"] is False
        assert set(params["required"]) <= set(params["properties"])


def test_a_tool_without_its_resource_says_which():
    with pytest.raises(BadInput, match=r"^tool 'search' needs a searcher, and none was given \(search.index=DIR\)$"):
        make_tool("search", ToolContext())
    with pytest.raises(BadInput, match="tool 'open' needs a store"):
        make_tool("open")


# ---- what the policy reads when it gets a call wrong --------------------------------------------------------
@pytest.fixture
def box(date_diff):
    return Toolbox([make_tool("date_diff")], ToolBudget(max_calls=3, per_tool={"date_diff": 2}))


@pytest.mark.parametrize(
    "name, arguments, error, text",
    [
        ("date_dif", "{}", "unknown_tool", "Unknown tool 'date_dif'. Available tools: date_diff."),
        (
            "date_diff",
            '{"start": "2000-01-01",',
            "bad_json",
            "The arguments of date_diff are not valid JSON (Expecting property name enclosed in double quotes at character "
            '23); write one JSON object, e.g. {"start": "...", "end": "..."}.',
        ),
        (
            "date_diff",
            '["2000-01-01"]',
            "bad_json",
            'The arguments of date_diff must be one JSON object, e.g. {"start": "...", "end": "..."}; got ["2000-01-01"].',
        ),
        (
            "date_diff",
            '{"start": 2000, "end": "x"}',
            "bad_arguments",
            "Bad arguments for date_diff: 'start' must be a string, got 2000. "
            "Parameters: start (string, required), end (string, required), unit (string).",
        ),
        (
            "date_diff",
            '{"end": "x", "days": 3}',
            "bad_arguments",
            "Bad arguments for date_diff: missing required argument 'start'; unknown argument 'days' (known: start, end, "
            "unit). Parameters: start (string, required), end (string, required), unit (string).",
        ),
    ],
)
def test_bad_calls_become_observations_that_say_so(box, name, arguments, error, text):
    used = Counter()
    refused = box.prepare(name, arguments, used)
    assert refused == Observation(text, error=error)
    assert used == Counter()  # a refused call is not counted


def test_budgets_per_tool_and_in_total(box, date_diff):
    used = Counter()
    args = '{"start": "2000-01-01", "end": "2000-01-02"}'
    assert [box.call("date_diff", args, used).text for _ in range(3)] == [
        "1 days",
        "1 days",
        "Reached the limit of 2 date_diff calls; use another tool or answer.",
    ]
    assert used == Counter(date_diff=2)
    total = ToolBudget(max_calls=2)
    assert (
        total.refusal("search", {"date_diff": 1, "open": 1})
        == "Reached the limit of 2 tool calls; answer with what you have."
    )
    assert total.refusal("search", {"date_diff": 1}) is None
    with pytest.raises(ValueError, match=r"^tool budget per_tool.python must be an integer >= 0, got -1$"):
        ToolBudget(per_tool={"python": -1})


def test_schema_checks_numbers_and_lengths():
    open_schema, python_schema = OpenTool.parameters, tool_class("python").parameters
    assert check_arguments(OpenTool, {"doc": "x", "page": 2.0}) == {"doc": "x", "page": 2.0}  # 2.0 is an integer
    assert check_arguments(OpenTool, {"doc": "x", "page": True}).text.startswith(
        "Bad arguments for open: 'page' must be an integer, got true."
    )
    assert "'page' must be at least 1, got 0" in check_arguments(OpenTool, {"doc": "x", "page": 0}).text
    assert (
        "'code' must have at most 20,000 characters, got 20,001"
        in check_arguments(tool_class("python"), {"code": "x" * 20_001}).text
    )
    assert open_schema["required"] == ["doc"] and python_schema["required"] == ["code"]


def test_a_whole_call_written_as_json(box):
    assert box.prepare_json('{"name": "date_diff", "arguments": {"start": "2000-01-01", "end": "2000-01-03"}}') == Call(
        "date_diff", {"start": "2000-01-01", "end": "2000-01-03"}
    )
    assert box.prepare_json('{"name": "date_diff", "arguments": ').error == "bad_json"
    assert box.prepare_json('{"arguments": {}}').text == (
        'A tool call is one JSON object with a "name" and its "arguments", e.g. '
        '{"name": "search", "arguments": {"query": "..."}}; got {"arguments": {}}.'
    )


def test_run_batches_each_tools_calls_and_keeps_their_order(box, index_dir, date_diff):
    searcher = CountingSearcher(load_searcher(index_dir))
    both = Toolbox([make_tool("date_diff"), SearchTool(searcher)], ToolBudget(max_calls=10))
    calls = [
        both.prepare("search", {"query": "Maria Golovin"}),
        both.prepare("date_diff", {"start": "2000-01-01", "end": "2000-01-05"}),
        both.prepare("search", {"query": "Gaetano Donizetti"}),
    ]
    observations = both.run(calls)
    assert [o.provenance["doc_ids"][0] for o in (observations[0], observations[2])] == ["hp8", "hp90"]
    assert observations[1].text == "4 days"
    assert searcher.calls == [2] and DateDiff.batches == [1]


# ---- search ------------------------------------------------------------------------------------------------
class CountingSearcher:
    def __init__(self, searcher):
        self.searcher, self.name, self.calls = searcher, searcher.name, []

    def search(self, queries, k):
        self.calls.append(len(queries))
        return self.searcher.search(queries, k)


@pytest.mark.parametrize("fmt", [SEARCH_R1, AUTOCOA], ids=lambda f: f.name)
def test_search_keeps_todays_observation_byte_for_byte(index_dir, fmt):
    searcher = load_searcher(index_dir)
    tool = make_tool("search", ToolContext(fmt=fmt, topk=3, searcher=searcher))
    for query in ("Maria Golovin opera composer", "the of and"):  # the second matches nothing
        docs = searcher.search([query], 3)[0]
        obs = tool.execute({"query": query})
        assert fmt.wrap_observation(obs.text) == fmt.observation(docs)
        assert obs == Observation(observation_body(fmt, docs), {"doc_ids": [d.id for d in docs]})
    assert tool.execute({"query": "the of and"}).text == fmt.failure_text


def test_search_runs_a_batch_as_one_searcher_call(index_dir):
    searcher = CountingSearcher(load_searcher(index_dir))
    tool = SearchTool(searcher, topk=2)
    out = tool.execute_batch([{"query": "Maria Golovin"}, {"query": "Gaetano Donizetti composer"}])
    assert searcher.calls == [2] and [o.provenance["doc_ids"][0] for o in out] == ["hp8", "hp90"]


# ---- open --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(index_dir):
    return DocumentStore(index_dir)


def test_open_reads_a_document_by_title_or_id_in_pages(store):
    tool = OpenTool(store, OpenSettings(window_tokens=20))
    text = store.get("hp8").split("\n", 1)[1]
    words = text.split()
    first = tool.execute({"doc": "Maria Golovin"})
    assert first.text == f"Maria Golovin (page 1 of 4)\n{' '.join(words[:20])}\n[continued on page 2 of 4]"
    assert first.provenance == {"doc_ids": ["hp8"], "title": "Maria Golovin", "page": 1, "pages": 4}
    pages = [tool.execute({"doc": "hp8", "page": p}).text.split("\n")[1] for p in range(1, 5)]
    assert " ".join(pages).split() == words  # every word once, in order
    for other in ("maria golovin", ' "Maria Golovin" ', "MARIA GOLOVIN"):
        assert tool.execute({"doc": other}) == first
    assert (
        make_tool("open", ToolContext(store=store)).execute({"doc": "hp8"}).text
        == f"Maria Golovin (page 1 of 1)\n{text}"
    )


def test_open_names_the_nearest_titles_and_the_last_page(store):
    tool = OpenTool(store)
    missing = tool.execute({"doc": "Marai Golovine"})
    assert missing.error == "not_found" and missing.text.startswith(
        "No document has the id or title 'Marai Golovine'. Nearest titles: Maria Golovin; "
    )
    assert len(missing.provenance["nearest"]) == 3
    assert tool.execute({"doc": "Maria Golovin", "page": 2}) == Observation(
        "'Maria Golovin' has 1 page; there is no page 2.", {"title": "Maria Golovin", "pages": 1}, error="bad_page"
    )


@pytest.fixture(scope="module")
def passage_index(tmp_path_factory):
    """A wiki-18-style corpus: one article cut into three passages (kept apart by another article)."""
    folder = tmp_path_factory.mktemp("passages")
    rows = [
        ("p1", "Ada Lovelace", "Ada Lovelace was an English mathematician."),
        ("q1", "Charles Babbage", "Charles Babbage designed the Analytical Engine."),
        ("p2", "Ada Lovelace", "She wrote the first algorithm for that engine."),
        ("p3", "Ada Lovelace", "She died in 1852 in London."),
    ]
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "contents": f'"{t}"\n{x}'}) + "\n" for i, t, x in rows))
    return build_index(corpus, folder / "index", show_progress=False)


def test_open_on_a_passage_corpus_reads_the_whole_article(passage_index):
    tool = OpenTool(DocumentStore(passage_index), OpenSettings(window_tokens=8))
    first = tool.execute({"doc": "p2"})  # any passage opens its article, from the start
    assert first.text == (
        "Ada Lovelace (page 1 of 3)\nAda Lovelace was an English mathematician.\n\nShe wrote\n"
        "[continued on page 2 of 3]"
    )
    assert first.provenance["doc_ids"] == ["p1", "p2"]
    middle = tool.execute({"doc": "Ada Lovelace", "page": 2})
    assert middle.text.split("\n", 1)[1] == (
        "the first algorithm for that engine.\n\nShe died\n[continued on page 3 of 3]"
    )
    assert middle.provenance["doc_ids"] == ["p2", "p3"]
    last = tool.execute({"doc": "Ada Lovelace", "page": 3})
    assert last.text == "Ada Lovelace (page 3 of 3)\nin 1852 in London." and last.provenance["doc_ids"] == ["p3"]


@pytest.mark.model
def test_open_pages_count_the_students_tokens(store, tokenizer):
    tool = make_tool("open", ToolContext(store=store, tokenizer=tokenizer, settings={"open": {"window_tokens": 16}}))
    first = tool.execute({"doc": "hp8"})
    pages = first.provenance["pages"]
    bodies = [tool.execute({"doc": "hp8", "page": p}).text.split("\n")[1] for p in range(1, pages + 1)]
    assert all(len(tokenizer(b, add_special_tokens=False)["input_ids"]) <= 17 for b in bodies)  # a space may merge
    assert pages == -(-len(tokenizer(store.get("hp8").split("\n", 1)[1], add_special_tokens=False)["input_ids"]) // 16)


# ---- python (the sandbox's own attack list is tests/core/test_sandbox.py) ------------------------------------
def test_python_runs_code_and_reports_what_went_wrong():
    tool = make_tool("python", ToolContext(settings={"python": SandboxSettings(wall_s=60)}))
    ok = tool.execute({"code": "import statistics\nprint(statistics.mean([1901, 1813]))"})
    assert ok.text == "1857" and ok.error == "" and ok.provenance["exit_code"] == 0
    failed = tool.execute({"code": "print('before')\n1 / 0"})
    assert failed.error == "exception" and failed.text == (
        'before\nTraceback (most recent call last):\n  File "<python>", line 2, in <module>\n'
        "ZeroDivisionError: division by zero"
    )
    batch = tool.execute_batch([{"code": f"print({i} * {i})"} for i in range(5)])
    assert [o.text for o in batch] == ["0", "1", "4", "9", "16"]


# ---- the command line ----------------------------------------------------------------------------------------
def test_cli_call_prints_the_observation_the_policy_reads(index_dir, capsys):
    assert (
        main(
            [
                "call",
                "search",
                '{"query": "Maria Golovin opera composer"}',
                f"search.index={index_dir}",
                "search.topk=2",
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    docs = load_searcher(index_dir).search(["Maria Golovin opera composer"], 2)[0]
    assert out.out == observation_body(SEARCH_R1, docs) + "\n"
    assert json.loads(out.err) == {"error": "", "provenance": {"doc_ids": [d.id for d in docs]}}
    assert main(["call", "open", '{"doc": "nobody here"}', f"search.index={index_dir}"]) == 0  # the policy's miss
    assert capsys.readouterr().out.startswith("No document has the id or title 'nobody here'.")


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["call", "search", '{"query": 3}'],
            "python -m coa.tools: Bad arguments for search: 'query' must be a string, got 3. "
            "Parameters: query (string, required).",
        ),
        (["call", "serach", "{}"], "python -m coa.tools: unknown tool 'serach'; known: open, python, search"),
        (
            ["call", "search"],
            "python -m coa.tools: call needs a tool name and its JSON arguments: python -m coa.tools "
            'call search \'{"query": "..."}\' [key=value ...]',
        ),
        (
            ["call", "open", '{"doc": "x"}', "search.index=/nonexistent/index"],
            "python -m coa.tools: /nonexistent/index/corpus.arrow: missing (the index folder has no documents); "
            "rebuild the index: python -m coa.search build --out /nonexistent/index",
        ),
        (["call", "python", '{"code": "1"}', "python.wall_s=0"], "CallConfig: python.wall_s must be > 0, got 0.0"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == message


def test_cli_lists_every_tool_with_its_schema():
    listed = subprocess.run(
        [sys.executable, "-m", "coa.tools", "list", "--json"], capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    assert [s["function"]["name"] for s in json.loads(listed.stdout)] == ["open", "python", "search"]
    bad = subprocess.run(
        [sys.executable, "-m", "coa.tools", "call", "python", "{code"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert (
        bad.stderr.startswith("python -m coa.tools: The arguments of python are not valid JSON")
        and bad.stderr.count("\n") == 1
    )
