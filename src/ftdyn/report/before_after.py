"""Before and after fine-tuning: the per-eval-set table with its intervals, and the headline.

`before_after` keys on the number of demonstrations (`shots`), so a before and an after score
sit side by side only when both were scored alike; its intervals are the bootstrap's over
per-example scores (Amuro & Char; docs/definitions.md, Report tables) and, with several seeds,
the Student-t interval across seeds. `headline` is the table `python -m ftdyn.report` prints: it
splits a row where the shots differ.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ftdyn.report import fits
from ftdyn.report.frames import DESIGN, FEWSHOT_KINDS, PRIMARY, default_format, varying, wide, with_shots

KIND_ORDER = {"in_domain": 0, "out_of_domain": 1, "cross_task": 2, "probe": 3, "pretrain": 4}
#: The headline measurements, each a mean over a run's sets of one kind: column -> (split kind, metrics)
HEADLINE = {"in-domain": ("in_domain", PRIMARY), "out-of-domain": ("out_of_domain", PRIMARY),
            "probe": ("probe", ("acc",)), "held-out loss": ("pretrain", ("pretrain_loss",))}
EXAMPLE_KEYS = ["run_key", "eval_set", "split_kind", "stage", "prompt", "metric"]  #: an examples.jsonl line's row


def before_after(table: pd.DataFrame, examples: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Before/after per checkpoint x task x eval set x metric (x varied design), with bootstrap
    95% intervals `<stage>_lo`, `<stage>_hi` where per-example scores exist (examples.jsonl)."""
    scored = with_shots(table[table["stage"].isin(["before", "after"])])
    if scored.empty:
        return pd.DataFrame()
    keys = ["task", "ckpt_step", *varying(scored, DESIGN), "shots", "split_kind", "eval_set", "metric"]
    cells = wide(scored, keys)
    if not examples.empty:
        cells = cells.merge(_intervals(scored, _examples_with_shots(examples, scored), keys, seed), on=keys,
                            how="left")
    if "seed" in scored and scored["seed"].nunique() > 1:
        cells = cells.merge(_seed_intervals(scored, keys), on=keys, how="left")
    cells["kind_order"] = cells["split_kind"].map(KIND_ORDER)
    cells = cells.sort_values(["task", "ckpt_step", *keys[2:-3], "kind_order", "eval_set", "metric"])
    stages = [c for c in ("before", "before_lo", "before_hi", "after", "after_lo", "after_hi", "seeds",
                          "before_seed_lo", "before_seed_hi", "after_seed_lo", "after_seed_hi") if c in cells]
    return cells[keys + stages].reset_index(drop=True)


def _seed_intervals(scored: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per cell: the number of seeds and the 95% Student-t interval of the per-seed means
    (`<stage>_seed_lo`, `<stage>_seed_hi`): the spread fine-tuning seeds give, beside the bootstrap's
    over examples."""
    per_seed = scored.groupby([*keys, "stage", "seed"], dropna=False)["value"].mean()
    out = []
    for cell, values in per_seed.groupby([*keys, "stage"], dropna=False):
        _, lo, hi, n = fits.t_interval(values.to_numpy())
        out.append({**dict(zip([*keys, "stage"], cell)), "lo": lo, "hi": hi, "n": n})
    ci = pd.DataFrame(out).set_index([*keys, "stage"]).unstack("stage")
    seeds = ci["n"].max(axis=1).rename("seeds")
    ci = ci[["lo", "hi"]]
    ci.columns = [f"{stage}_seed_{bound}" for bound, stage in ci.columns]
    return ci.join(seeds).reset_index()


def _examples_with_shots(examples: pd.DataFrame, scored: pd.DataFrame) -> pd.DataFrame:
    """examples.jsonl lines with the shots of the result row each belongs to."""
    shots = scored.drop_duplicates(EXAMPLE_KEYS)[[*EXAMPLE_KEYS, "shots"]]
    return examples.drop(columns="shots", errors="ignore").merge(shots, on=EXAMPLE_KEYS, how="left")


def _intervals(scored: pd.DataFrame, examples: pd.DataFrame, keys: list[str], seed: int) -> pd.DataFrame:
    """Bootstrap interval per cell over the pooled per-example scores of its runs."""
    facts = scored.drop_duplicates("run_key")[["run_key", *[k for k in keys if k not in examples.columns]]]
    joined = examples[examples["stage"].isin(["before", "after"])].merge(facts, on="run_key")
    out = []
    for cell, group in joined.groupby(keys + ["stage"], dropna=False):
        lo, hi = fits.bootstrap_ci(np.concatenate(group["scores"].map(np.asarray).tolist()), seed=seed)
        out.append({**dict(zip(keys + ["stage"], cell)), "lo": lo, "hi": hi})
    if not out:
        return pd.DataFrame(columns=keys)
    ci = pd.DataFrame(out).set_index(keys + ["stage"])[["lo", "hi"]].unstack("stage")  # keeps NaN keys
    ci.columns = [f"{stage}_{bound}" for bound, stage in ci.columns]
    return ci.reset_index()


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint x task (x varied method, LoRA rank, replay rate): for each `HEADLINE`
    measurement, `<name> before` and `<name> after`, the mean over a run's sets of that kind, then
    over runs. A measurement no job wrote has no columns. The table `python -m ftdyn.report` prints.

    Where the task sets' shots differ (e.g. fewshot.k_after=0), `shots` is a key: a row per
    number of demonstrations, so an after score never sits beside a before score of other shots.
    The probe and held-out loss use no demonstrations and fill every such row alike. Where the
    sweep evaluated several prompt formats, the scores are the default format's (the one trained in).
    """
    scored = with_shots(table[table["stage"].isin(["before", "after"])])
    if scored.empty:
        return pd.DataFrame()
    scored = default_format(scored)
    keys = ["task", "ckpt_step", *varying(scored, [c for c in DESIGN if c != "prompt"])]
    prompted = scored[scored["split_kind"].isin(FEWSHOT_KINDS)]
    shots = ["shots"] if prompted["shots"].nunique(dropna=False) > 1 else []
    out = (prompted if shots else scored).drop_duplicates(keys + shots)[keys + shots]
    for name, (split_kind, metrics) in HEADLINE.items():
        rows = scored[(scored["split_kind"] == split_kind) & scored["metric"].isin(metrics)]
        if rows.empty:
            continue
        by = keys + (shots if split_kind in FEWSHOT_KINDS else [])
        per_run = rows.groupby([*by, "run_key", "stage"], dropna=False)["value"].mean()
        stages = per_run.groupby([*by, "stage"], dropna=False).mean().unstack("stage")
        stages = stages.reindex(columns=["before", "after"]).add_prefix(f"{name} ").reset_index()
        out = out.merge(stages, on=by, how="left")
    return out.sort_values(keys + shots, kind="stable").reset_index(drop=True)
