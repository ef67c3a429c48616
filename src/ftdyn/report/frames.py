"""The results table as every derived table reads it: its column vocabulary and shared selections.

Each derived table (`before_after`, `laws`, `summary`, `inside`, `gaussians`, `mrc`) takes the
combined results table (one row per measurement, `collect.read_results`) and returns a DataFrame,
empty when the sweep lacks what it needs. Design columns (method, LoRA rank, replay rate, prompt
format) become keys only where the sweep varies them (`varying`); repeated runs of a cell (seeds)
are averaged. A before and an after score are compared only when both were scored with the same
number of demonstrations (`shots`, `with_shots`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from ftdyn.config.paths import conf_dir

DESIGN = ["method", "lora_rank", "replay_rate", "prompt"]
PRIMARY = ("acc", "rougeL")  #: the score of a classification / a generation eval set
DEFAULT_FORMAT = "default"  #: the prompt format ftdyn (and Amuro & Char) train in; the others measure sensitivity
FORGET = "forget_ce"  #: Kalajdzievski's L_f: cross-entropy to the base model's soft next-token targets
CALIBRATION = ["ece", "mce", "ece_ts", "mce_ts"]
FEWSHOT_KINDS = ("in_domain", "out_of_domain", "cross_task")  #: split kinds whose prompts carry demonstrations


def with_shots(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with a `shots` column: results written before rows carried one get NaN (unknown),
    which compares equal to itself, so such a sweep reads as it did."""
    return table if table.empty or "shots" in table else table.assign(shots=np.nan)


def default_format(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows in the default prompt format where the sweep scored it (among others); rows without
    a prompt (the probe's, held-out text's) stay."""
    if "prompt" not in rows or not (rows["prompt"] == DEFAULT_FORMAT).any():
        return rows
    return rows[rows["prompt"].isna() | (rows["prompt"] == DEFAULT_FORMAT)]


def varying(table: pd.DataFrame, columns: list[str]) -> list[str]:
    """The columns among `columns` that take more than one value. None counts as a value (an sft
    run's lora_rank) except for prompt, which is None on rows no prompt formats (probe, held-out text)."""
    return [c for c in columns if c in table and table[c].nunique(dropna=c != "prompt") > 1]


def wide(rows: pd.DataFrame, keys: list[str], column: str = "stage") -> pd.DataFrame:
    """Mean value per `keys` with one column per value of `column`."""
    return rows.groupby(keys + [column], dropna=False)["value"].mean().unstack(column).reset_index()


def per_run(table: pd.DataFrame, rows: pd.Series, name: str) -> pd.Series:
    """The mean value of `rows` (a boolean mask over `table`) per run_key, named `name`."""
    return table[rows].groupby("run_key")["value"].mean().rename(name)


def task_kind(name: str, known: dict[str, str]) -> str | None:
    """classification | generation: from the jobs' configs, else conf/task/<name>.yaml."""
    if name in known:
        return known[name]
    path = conf_dir() / "task" / f"{name}.yaml"
    return OmegaConf.load(path).get("kind") if path.exists() else None
