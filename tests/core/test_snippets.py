"""``search.snippet_tokens``: each retrieved passage is cut to its title and first N tokens of text (the real
index, the student's real tokenizer), and ``open`` still reads the whole document, so it adds what a snippet
left out (issue 39 §2). Off by default: whole passages, the searcher unwrapped."""

from __future__ import annotations

import pytest

from coa.environment import SearchEnvConfig
from coa.formats import SEARCH_R1
from coa.search.snippets import ELLIPSIS, SnippetSearcher

QUERY = "Maria Golovin opera composer"


def test_snippets_keep_the_title_and_the_first_tokens(index_dir, tokenizer):
    whole = SearchEnvConfig(index=str(index_dir)).searcher()
    assert not isinstance(whole, SnippetSearcher)  # 0: whole passages
    cut = SearchEnvConfig(index=str(index_dir), snippet_tokens=12).searcher()
    (full_docs,), (snippets,) = whole.search([QUERY], 3), cut.search([QUERY], 3)
    assert [d.id for d in snippets] == [d.id for d in full_docs]  # the same ranking, shorter texts
    shortened = 0
    for full, short in zip(full_docs, snippets):
        title, _, text = full.contents.partition("\n")
        s_title, _, s_text = short.contents.partition("\n")
        assert s_title == title
        if short.contents == full.contents:  # fits in 12 tokens already
            assert len(tokenizer.encode(text, add_special_tokens=False)) <= 12
            continue
        shortened += 1
        assert s_text.endswith(ELLIPSIS) and text.startswith(s_text[: -len(ELLIPSIS)])
        assert len(tokenizer.encode(s_text[: -len(ELLIPSIS)], add_special_tokens=False)) <= 12
    assert shortened >= 2  # HotpotQA paragraphs are longer than 12 tokens
    assert len(SEARCH_R1.observation(snippets)) < len(SEARCH_R1.observation(full_docs)) / 2


def test_open_reads_what_the_snippet_left_out(index_dir):
    env = SearchEnvConfig(index=str(index_dir), snippet_tokens=12, tools=["search", "open"])
    box = env.toolbox(SEARCH_R1)
    try:
        (found,) = box.tools["search"].searcher.search([QUERY], 1)
        page = box.tools["open"].execute({"doc": found[0].title})
    finally:
        box.close()
    assert not page.error and found[0].contents.partition("\n")[2].removesuffix(ELLIPSIS) in page.text
    assert len(page.text) > len(found[0].contents)


def test_a_negative_snippet_length_is_refused():
    with pytest.raises(ValueError, match="snippet_tokens must be >= 0"):
        SearchEnvConfig(snippet_tokens=-1)
