import pytest

from coa.agent import search_query
from coa.formats import AUTOCOA, SEARCH_R1, get_format
from coa.search.types import Doc

DOCS = [
    Doc("hp8", '"Maria Golovin"\nMaria Golovin is an English language opera by Gian Carlo Menotti.', 14.0),
    Doc("hp2", '"Gian Carlo Menotti"\nGian Carlo Menotti was an Italian-American composer.', 10.2),
]


def realistic(fmt):
    return (
        f"{fmt.think_open}\nI need to find who wrote Maria Golovin.\n"
        f"{fmt.search_call('Maria Golovin opera composer')}{fmt.observation(DOCS)}"
        f"The opera is by Gian Carlo Menotti.\n{fmt.think_close}\n{fmt.answer_text('Gian Carlo Menotti')}"
    )


@pytest.mark.parametrize("fmt", [AUTOCOA, SEARCH_R1])
def test_round_trip_realistic(fmt):
    text = realistic(fmt)
    parsed = fmt.parse(text)
    assert parsed.well_formed, parsed.errors
    assert "".join(s.text for s in parsed.steps) == text  # lossless
    assert parsed.queries == ("Maria Golovin opera composer",)
    assert parsed.answer == "Gian Carlo Menotti"
    kinds = [s.kind for s in parsed.steps]
    assert kinds.count("observation") == 1 and kinds.count("search") == 1


def test_autocoa_exact_strings():
    assert AUTOCOA.search_call("q") == "<begin_search> q </end_search>"
    obs = AUTOCOA.observation(DOCS)
    assert obs.startswith('\n\n<search_result> result 1: "Maria Golovin"\nMaria Golovin is')
    assert obs.endswith(" </search_result>\n\n")
    assert '\nresult 2: "Gian Carlo Menotti"\n' in obs
    assert AUTOCOA.stop_strings == ["</end_search>"]
    assert SEARCH_R1.observation(DOCS).startswith("\n\n<information>Doc 1(Title: Maria Golovin) Maria Golovin is")


@pytest.mark.parametrize(
    "text,error",
    [
        ("<think>no close \\boxed{x}", "unclosed <think>"),
        ("<think>a <begin_search> q </think>\\boxed{x}", "unclosed <begin_search>"),
        ("<think>a</think>", "no answer"),
        ("<think>a</think>\\boxed{x}<begin_search> q </end_search>", "search after the answer"),
        ("<think>a</think> <begin_search> q </end_search>\\boxed{x}", "search after </think>"),
        ("<think>a <begin_search>  </end_search></think>\\boxed{x}", "empty search query"),
        ("<think>a</end_search></think>\\boxed{x}", "stray </end_search>"),
        ("<think>a</think>\\boxed{x", "unclosed \\boxed{"),
    ],
)
def test_malformed_says_what_is_wrong(text, error):
    parsed = AUTOCOA.parse(text)
    assert not parsed.well_formed
    assert any(error in e for e in parsed.errors), parsed.errors
    assert "".join(s.text for s in parsed.steps) == text  # still lossless


@pytest.mark.parametrize("fmt", [AUTOCOA, SEARCH_R1])
def test_a_reopened_call_is_read_from_its_last_opening_as_the_loop_reads_it(fmt):
    """A model may open a search, ramble and open it again before closing: the query is what the agent
    loop sends (``search_query``), and the first opening is reported unclosed."""
    step = f"{fmt.think_open}x {fmt.search_open}Exoplanet\n{fmt.think_open}\n{fmt.search_call('A Venetian')}"
    parsed = fmt.parse(step)
    assert parsed.queries == (search_query(step, fmt),) == ("A Venetian",)
    assert any(f"unclosed {fmt.search_open}" in e for e in parsed.errors)
    assert "".join(s.text for s in parsed.steps) == step


def test_search_r1_malformed():
    parsed = SEARCH_R1.parse("<think>x</think><search>q</search><answer>y")
    assert any("unclosed <answer>" in e for e in parsed.errors)
    assert parsed.queries == ("q",)


def test_boxed_nested_and_text():
    assert AUTOCOA.extract_answer("<think>x</think>\\boxed{\\text{Paris}}") == "Paris"
    assert AUTOCOA.extract_answer("<think>x</think>\\boxed{a {b} c}") == "a {b} c"
    assert AUTOCOA.extract_answer("<think>x</think>\\boxed{1}\\boxed{2}") == "2"
    assert SEARCH_R1.extract_answer("<think>x</think><answer> Beijing </answer>") == "Beijing"


@pytest.mark.parametrize("fmt", [AUTOCOA, SEARCH_R1])
def test_split_segments_recovers_observations(fmt):
    text = realistic(fmt)
    segs = fmt.split_segments(text)
    assert [s["kind"] for s in segs] == ["model", "observation", "model"]
    assert segs[0]["text"].endswith(fmt.search_close)
    assert segs[1]["text"] == fmt.observation(DOCS)
    assert "".join(s["text"] for s in segs) == text


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown format preset 'react'"):
        get_format("react")


@pytest.mark.parametrize("fmt", [AUTOCOA, SEARCH_R1])
def test_documents_is_the_inverse_of_observation(fmt):
    docs = [
        Doc("a", '"Foo (band)"\nThe band.\nA second line that says Doc 2 and result 2: inside.'),
        Doc("b", '"Bar"\nbar text'),
        Doc("c", '"Empty"\n'),
    ]
    assert fmt.documents(fmt.observation(docs)) == [(d.title, d.text) for d in docs]
    assert fmt.documents(fmt.observation(DOCS)) == [(d.title, d.text) for d in DOCS]
    # a model-written observation without the text around the tags parses the same
    assert fmt.documents(fmt.observation(docs).strip()) == [(d.title, d.text) for d in docs]
    assert fmt.documents(fmt.observation([])) == [] and fmt.documents(fmt.budget_observation()) == []
    assert fmt.documents("no observation here") == []
