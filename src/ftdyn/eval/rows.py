"""Result rows: one measurement each, before the run's columns (`ftdyn.runs.results.run_facts`) are added."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ftdyn.config.settings import json_safe


def result_row(eval_set: str, split_kind: str | None, stage: str, prompt: str | None, metric: str,
               value: float, shots: int | None = None) -> dict:
    """One measurement, without the run's columns (train() adds those). Closed choices (split
    kind, prompt format) are plain strings in rows, whatever Enum the config holds them as.
    `shots`: demonstrations before each prompt (None: no prompt, e.g. run facts, held-out text)."""
    return {"eval_set": eval_set, "split_kind": json_safe(split_kind), "stage": stage, "prompt": json_safe(prompt),
            "metric": metric, "value": value, "shots": shots}


def scored_row(eval_set: str, split_kind: str | None, stage: str, prompt: str | None, metric: str,
               scores: Sequence[float]) -> dict:
    """A row whose value is the mean of per-example `scores`, which it carries along."""
    scores = [float(s) for s in scores]
    return {**result_row(eval_set, split_kind, stage, prompt, metric, math.fsum(scores) / len(scores)),
            "scores": scores}
