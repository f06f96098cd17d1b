"""One real review stack for the whole test session (noida-db, redis-server, argilla-server 2.8 and its
worker on free loopback ports, data in a temp folder), stopped after; and one small real curation run.

No stack installed → the fixture raises (the tests fail, they do not skip): CI installs it through
./install.sh.
"""

from __future__ import annotations

import pytest

from annotate.serve import ReviewStack, ReviewServerConfig
from coa.procs import free_ports

ANNOTATORS = ["annotator", "annotator2"]


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    port, search_port, redis_port = free_ports(3)
    cfg = ReviewServerConfig(
        data_dir=str(tmp_path_factory.mktemp("argilla")),
        port=port,
        search_port=search_port,
        redis_port=redis_port,
        annotators=ANNOTATORS,
    )
    with ReviewStack(cfg) as running:
        yield running


@pytest.fixture(scope="session")
def sample(index_dir, tmp_path_factory):
    """score/, pairs/ and sets/ of a real curation run over 24 real questions (48 CoA, 48 CoT rows)."""
    from tests.fixtures.review_run import build
    from coa.questions import DEFAULT_QUESTIONS, load_questions
    from coa.search import load_searcher

    return build(tmp_path_factory.mktemp("sample"), load_questions(DEFAULT_QUESTIONS)[:24], load_searcher(index_dir))
