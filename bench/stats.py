"""Small statistics for the report: medians and spreads, nothing fancier."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    median: float
    q1: float
    q3: float
    low: float
    high: float
    n: int

    def format(self, digits: int = 1) -> str:
        """``median (q1-q3)``."""
        return f"{self.median:.{digits}f} ({self.q1:.{digits}f}-{self.q3:.{digits}f})"


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("no values")
    if len(values) == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Summary(statistics.median(values), q1, q3, min(values), max(values), len(values))


def paired_ratios(values: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Round by round ``value / baseline``: what both rounds share (a busy
    machine, a frequency change) mostly cancels out."""
    if len(values) != len(baseline):
        raise ValueError("paired ratios need as many rounds on both sides")
    return [value / base for value, base in zip(values, baseline, strict=True)]
