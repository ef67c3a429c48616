"""Cross-task change and MRC as Amuro & Char compute them (v5 Eq. 1, docs/definitions.md; their
notebook `analysis/gen_paper_figs.ipynb`, `change_table_by_checkpoint_for_plot`).

One entry per run x other task's test set x prompt format: (after - before) / before of its score
(acc or rougeL), before the base checkpoint and after the same checkpoint fine-tuned. An entry is
compared only when both stages used the same number of demonstrations (`shots`), and its ratio
exists only when the base scored above 0. Otherwise the entry is *undefined*, with its reason,
and every average over it is undefined too and names it: nothing is dropped.

- `mrc`: MRC_i(t), per checkpoint i x training task t x prompt format (x varied design): the
  mean over the other tasks' sets.
- `mrc_directions`: the authors' direction averages (classification -> generation, generation ->
  classification), in one prompt format (the default one, as they report it), over every
  (checkpoint, pair) entry, as their notebook's `.mean()` over that table; beside it the mean at
  each checkpoint (`ckpt_<step>`). Each other format gets a table of its own.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ftdyn.report.frames import DEFAULT_FORMAT, DESIGN, PRIMARY, task_kind, varying, with_shots

log = logging.getLogger(__name__)

ZERO_BASE = "base score 0: relative change undefined"


def cross_task_changes(table: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """Per run x cross-task eval set x prompt format: before, after, their shots, `change`
    ((after - before) / before) and `undefined` (why there is no change; None when there is)."""
    cross = table[(table["split_kind"] == "cross_task") & table["metric"].isin(PRIMARY)
                  & table["stage"].isin(["before", "after"])]
    if cross.empty:
        return pd.DataFrame()
    design = [c for c in varying(table[table["stage"].isin(["before", "after"])], DESIGN) if c != "prompt"]
    keys = ["run_key", "ckpt_step", "task", *design, "prompt", "eval_set", "metric"]
    per = _stages(with_shots(cross), keys)
    per["eval_task"] = per["eval_set"].str.split("/").str[0]
    per = per[per["eval_task"] != per["task"]].reset_index(drop=True)
    per["undefined"] = [_why_undefined(r) for r in per.itertuples()]
    defined = per["undefined"].isna()
    per["change"] = ((per["after"] - per["before"]) / per["before"]).where(defined)
    if not defined.all():
        log.warning("MRC: %d cross-task entries are undefined (listed with their reason in the report)",
                    int((~defined).sum()))
    per["train_kind"] = per["task"].map(lambda t: task_kind(t, kinds))
    per["eval_kind"] = per["eval_task"].map(lambda t: task_kind(t, kinds))
    return per


def _stages(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per `keys`: the mean value and the shots of each stage, as before, after, shots_before, shots_after."""
    stats = rows.groupby([*keys, "stage"], dropna=False).agg(value=("value", "mean"), shots=("shots", "first"))
    wide = stats.unstack("stage")
    per = pd.DataFrame(index=wide.index)
    for stage in ("before", "after"):
        per[stage] = wide["value"][stage] if stage in wide["value"] else np.nan
        per[f"shots_{stage}"] = wide["shots"][stage] if stage in wide["shots"] else np.nan
    return per.reset_index()


def _why_undefined(entry) -> str | None:
    """Why an entry has no relative change: a stage missing, unequal shots, a zero base."""
    if pd.isna(entry.before) or pd.isna(entry.after):
        return f"no {'before' if pd.isna(entry.before) else 'after'} row"
    if not _same(entry.shots_before, entry.shots_after):
        return f"before {_count(entry.shots_before)}-shot, after {_count(entry.shots_after)}-shot: not comparable"
    if entry.before == 0:
        return ZERO_BASE
    return None


def _same(a, b) -> bool:
    """Equal shots; unknown (rows written before the column existed) on both sides counts as equal."""
    return (pd.isna(a) and pd.isna(b)) or a == b


def _count(shots) -> str:
    return "?" if pd.isna(shots) else str(int(shots))


def _reasons(entries: pd.DataFrame, name=lambda entry: entry.eval_set) -> str | None:
    """The undefined entries among `entries`, each as `name(entry): reason`; None if none."""
    bad = entries[entries["undefined"].notna()]
    return "; ".join(f"{name(r)}: {r.undefined}" for r in bad.itertuples()) if not bad.empty else None


def _mean_if_defined(entries: pd.DataFrame) -> float:
    """The mean change, or NaN when any entry is undefined (Eq. 1 has no value then)."""
    return float(entries["change"].mean()) if entries["undefined"].isna().all() else np.nan


def mrc(changes: pd.DataFrame) -> pd.DataFrame:
    """MRC_i(t): mean relative change over the other tasks' eval sets, per checkpoint i x task t x
    prompt format (x varied design); undefined, with the sets' reasons, when any set is."""
    if changes.empty:
        return pd.DataFrame()
    keys = ["ckpt_step", "task", *[c for c in DESIGN if c in changes]]
    out = []
    for cell, entries in changes.groupby(keys, dropna=False):
        out.append({**dict(zip(keys, cell)), "mrc": _mean_if_defined(entries), "n_sets": len(entries),
                    "shots": _shots(entries), "undefined": _reasons(entries)})
    return pd.DataFrame(out)


def _shots(entries: pd.DataFrame) -> float:
    """The entries' common shots (before = after), NaN when they differ or are unknown."""
    values = set(entries["shots_before"]) | set(entries["shots_after"])
    return float(values.pop()) if len(values) == 1 else np.nan


def formats(changes: pd.DataFrame) -> list[str]:
    """The prompt formats of the entries, the default one first."""
    if changes.empty:
        return []
    present = sorted(changes["prompt"].dropna().unique())
    return sorted(present, key=lambda f: f != DEFAULT_FORMAT)


def mrc_directions(changes: pd.DataFrame, prompt: str = DEFAULT_FORMAT) -> pd.DataFrame:
    """Mean relative change per (training task kind -> eval task kind) in one prompt format, over
    every (checkpoint, pair) entry (x varied method, rank, replay rate), with the mean at each
    checkpoint beside it (`ckpt_<step>`); undefined entries make their averages undefined and are
    named in `undefined`."""
    rows = changes[changes["prompt"] == prompt] if not changes.empty else changes
    if rows.empty:
        return pd.DataFrame()
    design = [c for c in DESIGN if c in rows and c != "prompt"]
    out = []
    for cell, entries in rows.groupby(["train_kind", "eval_kind", *design], dropna=False):
        train_kind, eval_kind, *rest = cell
        line = {"direction": f"{train_kind} -> {eval_kind}", "train_kind": train_kind, "eval_kind": eval_kind,
                **dict(zip(design, rest)), "prompt": prompt, "shots": _shots(entries),
                "mean_change": _mean_if_defined(entries), "n": len(entries)}
        for step, at_step in entries.groupby("ckpt_step"):
            line[f"ckpt_{step}"] = _mean_if_defined(at_step)
        line["undefined"] = _reasons(entries, lambda r: f"{r.task} at ckpt {r.ckpt_step} on {r.eval_set}")
        out.append(line)
    table = pd.DataFrame(out)
    steps = sorted((c for c in table if c.startswith("ckpt_") and c != "ckpt_step"), key=lambda c: int(c[5:]))
    return table[[c for c in table if c not in steps and c != "undefined"] + steps + ["undefined"]]
