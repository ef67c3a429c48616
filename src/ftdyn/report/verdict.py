"""The verdict rule: a finding's interval across seeds against its margin.

A finding's statistic is computed once per fine-tuning seed, then summarised as the mean over
seeds and its 95% Student-t interval, mean ± t(0.975, n−1) · sd / √n (`interval`). One rule
gives every verdict (`verdict`), with a threshold `margin` stated beside each finding:

- a claim that the statistic exceeds the margin (`direction` +1) is *reproduced* when the whole
  interval lies above it and *not reproduced* when the whole interval lies below it;
- a claim that it falls short of the margin (`direction` −1) mirrors that;
- a claim that the statistic is negligible (`direction` 0) is *reproduced* when the interval lies
  inside ±margin and *not reproduced* when it lies wholly outside;
- anything else is *inconclusive*: the interval straddles the margin, fewer than two seeds ran
  (no interval; the table says so), or the sweep lacks what the statistic needs (`Missing`,
  whose message becomes the finding's note).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ftdyn.report import fits

VERDICTS = ("reproduced", "not reproduced", "inconclusive")


class Missing(ValueError):
    """The sweep lacks what a statistic needs; the message says what (shown as the finding's note)."""


def interval(values: pd.Series) -> tuple[float, float, float, int]:
    """Mean, 95% Student-t interval across seeds (nan with fewer than two), and the number of seeds."""
    return fits.t_interval(values, fits.CONFIDENCE)


def verdict(lo: float, hi: float, direction: int, margin: float) -> str:
    """The rule in the module docstring, on an interval [lo, hi] (nan: no interval)."""
    if np.isnan(lo) or np.isnan(hi):
        return "inconclusive"
    if direction == 0:
        if -margin < lo and hi < margin:
            return "reproduced"
        return "not reproduced" if hi <= -margin or lo >= margin else "inconclusive"
    low, high = (lo, hi) if direction > 0 else (-hi, -lo)
    target = margin if direction > 0 else -margin
    if low > target:
        return "reproduced"
    return "not reproduced" if high <= target else "inconclusive"


def rule(direction: int, margin: float) -> str:
    """The rule in words for one finding's `direction` and `margin`, as findings.csv states it."""
    side = {1: f"above {margin:g}", -1: f"below {margin:g}", 0: f"inside ±{margin:g}"}[direction]
    return f"reproduced when the {fits.CONFIDENCE:.0%} interval across seeds lies {side}; not reproduced when it " \
           f"lies wholly on the other side; otherwise inconclusive"
