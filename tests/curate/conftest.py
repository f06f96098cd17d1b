"""Real data for the curation tests: real HotpotQA questions, the real corpus through the real BM25
index, rendered in the autocoa preset (tests/fixtures/trajectories.py); hand-made rows only where a case must be exact."""

from __future__ import annotations

import pytest

from coa.trajectory import write_trajectories
from tests.fixtures.trajectories import realistic_trajectories


@pytest.fixture(scope="session")
def real_rows(questions, searcher):
    """CoT + CoA rows (2 samples each) for 80 real questions: 640 trajectories."""
    return realistic_trajectories(questions[:80], searcher)


@pytest.fixture(scope="session")
def real_file(real_rows, tmp_path_factory):
    return write_trajectories(tmp_path_factory.mktemp("traj") / "part-000.parquet", real_rows)
