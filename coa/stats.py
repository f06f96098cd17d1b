"""Statistics every stage reports with: bootstrap intervals, paired differences and power.

Values are per question (0/1 EM, F1 in [0, 1]) in the same question order for the models compared, so
differences are paired: two models answered the same questions.

    bootstrap_ci(em)                           # 95% percentile interval of the mean, questions resampled
    paired_difference(em_sft2, em_sft3)        # {"diff": mean(b - a), "ci95": [lo, hi], "n"}
    min_detectable_difference(100, sd=0.4)     # smallest paired EM difference seen at 80% power
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Sequence

import numpy as np


def bootstrap_ci(values: list[float], resamples: int = 2000, seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of the mean (questions resampled with replacement)."""
    x = np.asarray(values, dtype=float)
    if not len(x) or resamples <= 0:
        return [float("nan"), float("nan")]
    means = x[np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def paired_difference(a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of ``b - a`` over the same questions with its 95% paired bootstrap interval (questions are
    resampled, each keeping both models' answers)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same questions: {len(a)} vs {len(b)}")
    d = [y - x for x, y in zip(a, b)]
    return {"diff": round(sum(d) / len(d), 4) if d else None, "ci95": bootstrap_ci(d, resamples, seed), "n": len(d)}


def min_detectable_difference(n: int, sd: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest true mean difference a two-sided paired z-test at level ``alpha`` detects with ``power``:
    (z_{1-α/2} + z_{power}) · sd / √n, ``sd`` the standard deviation of the per-question differences.

    >>> round(min_detectable_difference(100, 0.5), 4)
    0.1401
    """
    if n <= 0:
        return None
    z = NormalDist()
    return (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * sd / n**0.5


def difference_sd(a: Sequence[float], b: Sequence[float]) -> float:
    """Sample standard deviation of the per-question differences (0 for fewer than two questions)."""
    d = [y - x for x, y in zip(a, b)]
    if len(d) < 2:
        return 0.0
    mean = sum(d) / len(d)
    return (sum((x - mean) ** 2 for x in d) / (len(d) - 1)) ** 0.5


def power_statement(n: int, sd: float, basis: str) -> dict:
    """The run's detectable EM difference, with how ``sd`` was obtained (``basis``)."""
    mdd = min_detectable_difference(n, sd)
    text = (
        f"With n = {n} held-out questions, the smallest EM difference detectable at 80% power (two-sided "
        f"α = 0.05, paired) is {mdd:.3f}"
        if mdd is not None
        else "No held-out questions: no power"
    )
    return {
        "n": n,
        "sd_of_differences": round(sd, 4),
        "basis": basis,
        "min_detectable_em_difference": None if mdd is None else round(mdd, 4),
        "text": f"{text} (sd of per-question differences {sd:.3f}, {basis}).",
    }
