"""A data card of rows the optional LLM wrote names its licence (the wheels state none; upstream is Apache-2.0)."""

from __future__ import annotations

import pyarrow as pa

from coa.model import LLM_NAME
from data_cards.card import _teachers
from data_cards.run_facts import RunFacts


def facts_of(teacher: str) -> RunFacts:
    rows = pa.table({"teacher": [teacher], "prompt_id": ["p"], "prompt_hash": ["abc"], "format": ["search_r1"]})
    return RunFacts(
        sets={"coa": rows}, set_files={}, metrics={}, plots=[], index={}, params={}, dvc_outs={}, git_commit=""
    )


def test_rows_of_the_real_llm_carry_its_upstream_licence():
    text = _teachers(facts_of(LLM_NAME))
    assert f"**{LLM_NAME}**" in text and "Apache-2.0 upstream" in text and "state no licence" in text


def test_other_teachers_get_no_licence_line():
    assert "Apache-2.0" not in _teachers(facts_of("gpt-4o-mini"))
