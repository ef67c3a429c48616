"""The statistics behind the findings, each computed once per fine-tuning seed.

Every statistic takes the results table (and the tasks' kinds) and returns a Series indexed by
`seed`, or raises `verdict.Missing` saying what the sweep lacks. They read the same rows as the
report's tables (default prompt format, before and after scored with equal shots); what each
one averages is the `statistic` text of its finding in `findings.FINDINGS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from ftdyn.report import fits, mrc
from ftdyn.report.frames import DEFAULT_FORMAT, FORGET, PRIMARY, default_format
from ftdyn.report.laws import in_loop, law_points
from ftdyn.report.verdict import Missing

log = logging.getLogger(__name__)

LEARNED_RISE = 0.1  #: a task is learned in pre-training when its before-score rises this much over the ladder
REPLAY_RATES = (0.05, 0.1)  #: the poster's "5-10% replay"
LP_PAIRS = (("ft", "lpft"), ("lorahead", "lplora"))  #: (baseline with a fresh head, its linear-probe-first variant)
SCALE_FACTS = ("width", "depth")  #: run facts that tell the toy's networks apart (rows carry no model settings)


def _seed_mean(frame: pd.DataFrame, column: str) -> pd.Series:
    """The mean of `column` per seed; Missing when `frame` has no rows."""
    if frame.empty:
        raise Missing("no rows for this statistic")
    return frame.groupby("seed")[column].mean()


def _same_shots(rows: pd.DataFrame) -> pd.DataFrame:
    """Before and after rows with equal numbers of demonstrations: the before stage's shots."""
    if "shots" not in rows or rows["shots"].isna().all():
        return rows
    before = rows.loc[rows["stage"] == "before", "shots"].dropna()
    return rows[rows["shots"].isin(before.unique())] if not before.empty else rows


def scores(table: pd.DataFrame, split_kind: str = "in_domain", metrics=PRIMARY) -> pd.DataFrame:
    """Per seed x task x checkpoint x method: the mean before and after score over the run's sets of
    `split_kind` (acc or Rouge-L), default format, equal shots; `gain` = after - before."""
    rows = table[(table["split_kind"] == split_kind) & table["metric"].isin(metrics)
                 & table["stage"].isin(["before", "after"])]
    rows = _same_shots(default_format(rows))
    if rows.empty:
        raise Missing(f"no before/after {split_kind} rows")
    keys = ["seed", "task", "ckpt_step", "method"]
    wide = rows.groupby(keys + ["stage"], dropna=False)["value"].mean().unstack("stage").reset_index()
    if not {"before", "after"} <= set(wide):
        raise Missing(f"{split_kind} rows need both a before and an after stage")
    wide["gain"] = wide["after"] - wide["before"]
    return wide.dropna(subset=["before", "after"])


def learned_in_pretraining(per_ckpt: pd.DataFrame) -> pd.Series:
    """Per task: True when its before-score (mean over seeds) rises by >= LEARNED_RISE from the first
    to the last checkpoint of the sweep (Amuro & Char's first group), False when it stays flat."""
    means = per_ckpt.groupby(["task", "ckpt_step"])["before"].mean().reset_index().sort_values("ckpt_step")
    return means.groupby("task")["before"].agg(lambda b: b.iloc[-1] - b.iloc[0] >= LEARNED_RISE)


def _mean_per_seed(frame: pd.DataFrame, groups: list[str], statistic: Callable[[pd.DataFrame], float],
                   missing: str) -> pd.Series:
    """Per seed: `statistic` of each group of `frame` by `groups`, averaged over the groups. A group
    whose statistic is NaN is left out; one whose statistic raises ValueError too, with a warning.
    Raises Missing(`missing`) when no seed has a value."""
    out = {}
    for seed, by_seed in frame.groupby("seed"):
        values = []
        for group, rows in by_seed.groupby(groups):
            try:
                values.append(statistic(rows))
            except ValueError as err:
                log.warning("finding: %s, seed %s: %s", group, seed, err)
        values = [v for v in values if not np.isnan(v)]
        if values:
            out[seed] = float(np.mean(values))
    if not out:
        raise Missing(missing)
    return pd.Series(out)


def _slope_per_seed(frame: pd.DataFrame, column: str, groups: list[str]) -> pd.Series:
    """Per seed: the least-squares slope of `column` against log10(ckpt_step), mean over `groups`."""
    def slope(rows: pd.DataFrame) -> float:
        if rows["ckpt_step"].nunique() < 2:
            return float("nan")
        return float(np.polyfit(np.log10(rows["ckpt_step"].astype(float)), rows[column], 1)[0])
    return _mean_per_seed(frame, groups, slope, "needs >= 2 checkpoints")


def latent_gain_slope(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    """Finding a_latent_gain: the after-score's slope against log10(step) over the tasks whose
    before-score stays flat (`learned_in_pretraining` False), mean over task x method."""
    per = scores(table)
    learned = learned_in_pretraining(per)
    flat = per[per["task"].map(learned) == False]  # noqa: E712 (a Series of bools)
    if flat.empty:
        raise Missing(f"no task with a flat before-score (every task rises >= {LEARNED_RISE})")
    return _slope_per_seed(flat, "after", ["task", "method"])


def group_gain_gap(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    """Finding a_group_gap: the mean gain of the flat tasks minus that of the tasks learned in
    pre-training."""
    per = scores(table)
    per["learned"] = per["task"].map(learned_in_pretraining(per))
    if per["learned"].nunique() < 2:
        have = "learned in pre-training" if per["learned"].all() else "flat before fine-tuning"
        raise Missing(f"needs a task learned in pre-training and one that is not; every task is {have}")
    by_group = per.groupby(["seed", "learned"])["gain"].mean().unstack("learned")
    return (by_group[False] - by_group[True]).dropna()


def kind_change(train_kind: str, eval_kind: str) -> Callable[[pd.DataFrame, dict[str, str]], pd.Series]:
    """Per seed: the mean relative change over the (checkpoint, pair) entries of one direction in the
    default format (`mrc.cross_task_changes`); undefined entries (a zero base, unequal shots) are
    left out of the mean and counted in the note."""
    def statistic(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
        changes = mrc.cross_task_changes(table, kinds)
        if changes.empty:
            raise Missing("needs cross-task rows (eval.cross_tasks)")
        pairs = changes[(changes["train_kind"] == train_kind) & (changes["eval_kind"] == eval_kind)
                        & (changes["prompt"] == DEFAULT_FORMAT)]
        if pairs.empty:
            raise Missing(f"no {train_kind} -> {eval_kind} entries in the {DEFAULT_FORMAT} format")
        seeds = table.drop_duplicates("run_key").set_index("run_key")["seed"]
        defined = pairs[pairs["undefined"].isna()].assign(seed=lambda d: d["run_key"].map(seeds))
        values = _seed_mean(defined, "change") if not defined.empty else pd.Series(dtype=float)
        undefined = pairs["undefined"].notna().sum()
        values.attrs["note"] = f"{undefined} of {len(pairs)} entries undefined, left out (see mrc_directions)" \
            if undefined else ""
        if defined.empty:
            raise Missing(values.attrs["note"])
        return values
    return statistic


def mrc_asymmetry(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    """Per seed: the classification -> generation mean change minus the generation ->
    classification one (both as `kind_change` computes them, seeds that have both)."""
    gap = (kind_change("classification", "generation")(table, kinds)
           - kind_change("generation", "classification")(table, kinds)).dropna()
    if gap.empty:
        raise Missing("needs both directions in the same seeds")
    return gap


def _law_r2(table: pd.DataFrame, fit: Callable[[pd.DataFrame], float]) -> pd.Series:
    """Per seed: the R² of a law fitted to the report's own in-loop points (each run's first steps
    left out, `laws.law_points`), mean over training tasks."""
    points = law_points(in_loop(table))
    if points.empty:
        raise Missing("needs in-loop rows (eval.every_n_steps > 0)")
    points["seed"] = points["run_key"].map(table.drop_duplicates("run_key").set_index("run_key")["seed"])
    return _mean_per_seed(points, ["task"], fit, "no law could be fitted")


def linear_law_r2(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    """Finding c_linear_law: the R² of forget_ce = -c * train_loss + s per training task."""
    def fit(group: pd.DataFrame) -> float:
        if not {"train_loss", FORGET} <= set(group):
            raise ValueError(f"needs train_loss and {FORGET} in-loop rows")
        data = group.dropna(subset=["train_loss", FORGET])
        return fits.linear_law(data["train_loss"], data[FORGET])["r2"]
    return _law_r2(table, fit)


def joint_law_r2(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    """Finding c_joint_law: the R² of the additive joint law fitted to forget_ce over LoRA ranks."""
    def fit(group: pd.DataFrame) -> float:
        lora = group[group["lora_rank"].notna()] if "lora_rank" in group else group[:0]
        if FORGET not in lora or lora["lora_rank"].nunique() < 2:
            raise ValueError(f"needs LoRA runs at >= 2 ranks with {FORGET} in-loop rows")
        data = lora.dropna(subset=[FORGET, "trainable_params"])
        return fits.fit_additive_law(data["trainable_params"], data["step"], data[FORGET])["r2"]
    return _law_r2(table, fit)


def knowledge_forgotten(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    """Finding iii_knowledge: the probe's accuracy before minus after fine-tuning."""
    per = scores(table, "probe", ("acc",))
    return _seed_mean(per.assign(drop=per["before"] - per["after"]), "drop")


def prompt_sensitivity_slope(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    """Finding iv_prompt_sensitivity: the slope against log10(step) of the after-score's spread
    (max - min) across prompt formats, mean over tasks."""
    rows = table[(table["split_kind"] == "in_domain") & table["metric"].isin(PRIMARY) & (table["stage"] == "after")]
    if "prompt" not in rows or rows["prompt"].nunique() < 2:
        raise Missing("needs after-rows in >= 2 prompt formats (prompt=all_formats)")
    per = rows.groupby(["seed", "task", "ckpt_step", "prompt"])["value"].mean()
    spread = per.groupby(["seed", "task", "ckpt_step"]).agg(lambda v: v.max() - v.min()).rename("spread")
    return _slope_per_seed(spread.reset_index(), "spread", ["task"])


def _paired(table: pd.DataFrame, per_run: pd.Series, sign: int) -> pd.Series:
    """Per seed: sign * (baseline - probe-first variant) of a per-run measure, over the LP_PAIRS and
    cells (task x checkpoint) where both methods ran, averaged."""
    runs = table.drop_duplicates("run_key").set_index("run_key")[["seed", "task", "ckpt_step", "method"]]
    frame = runs.join(per_run.rename("measure"), how="inner")
    wide = frame.groupby(["seed", "task", "ckpt_step", "method"])["measure"].mean().unstack("method")
    gaps = [sign * (wide[base] - wide[probed]) for base, probed in LP_PAIRS if {base, probed} <= set(wide)]
    if not gaps:
        raise Missing(f"needs a head method and its probe-first variant: one of {LP_PAIRS}")
    return _seed_mean(pd.concat(gaps).dropna().rename("gap").reset_index(), "gap")


def feature_change_gap(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    """Finding d_feature_change: the feature change (feature_diff after) of each baseline minus that
    of its probe-first variant (`_paired`)."""
    rows = table[(table["metric"] == "feature_diff") & (table["stage"] == "after")]
    if rows.empty:
        raise Missing("needs feature rows (eval.diagnostics=[features])")
    return _paired(table, rows.groupby("run_key")["value"].mean(), +1)


def head_norm_gap(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    """Finding d_head_norm: the classifier norm of each probe-first variant minus that of its
    baseline (`_paired`); a run's norm is the one at the end of its last stage, its
    classifier_norm_<stage> run fact (the mean if several), the probe stage's left out."""
    facts = table[(table["stage"] == "run") & table["metric"].astype(str).str.startswith("classifier_norm_")
                  & (table["metric"] != "classifier_norm_probe")]
    if facts.empty:
        raise Missing("needs head methods (classifier_norm_<stage> run facts)")
    return _paired(table, facts.groupby("run_key")["value"].mean(), -1)


def replay_reduction(table: pd.DataFrame, kinds: dict[str, str], metric: str = "forget_kl",
                     split_kind: str = "pretrain") -> pd.Series:
    """Per seed: 1 - |forgetting| at 5-10% replay / |forgetting| without replay, mean over the
    cells (task x checkpoint x method, x the toy's width and depth) that ran both."""
    rows = table[(table["metric"] == metric) & (table["stage"] == "after") & (table["split_kind"] == split_kind)]
    if rows.empty or rows["replay_rate"].nunique() < 2:
        raise Missing(f"needs {metric} after rows at replay rate 0 and at 0.05 or 0.1")
    facts = table[(table["stage"] == "run") & table["metric"].isin(SCALE_FACTS)]
    scale = facts.pivot_table(index="run_key", columns="metric", values="value") if not facts.empty else None
    rows = rows.join(scale, on="run_key") if scale is not None else rows
    cells = ["seed", "task", "ckpt_step", "method", *(list(scale.columns) if scale is not None else [])]
    per = rows.assign(value=rows["value"].abs()).groupby([*cells, "replay_rate"], dropna=False)["value"].mean()
    wide = per.unstack("replay_rate")
    some = [r for r in wide.columns if any(np.isclose(r, REPLAY_RATES))]
    if 0 not in wide.columns or not some:
        raise Missing(f"needs replay rate 0 and one of {REPLAY_RATES}")
    reduction = (1 - wide[some].div(wide[0], axis=0)).mean(axis=1).rename("reduction").reset_index()
    return _seed_mean(reduction.dropna(), "reduction")


def toy_replay_reduction(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    """Finding e_replay_toy: `replay_reduction` of the toy's X2 drift."""
    return replay_reduction(table, kinds, metric="drift", split_kind="pretrain")
