"""Derived tables of a sweep's results, after the source papers (seed-methods.md §1.5-1.6, §2.3).

Every function takes the combined results table (one row per measurement, `collect.read_results`)
and returns a DataFrame, empty when the sweep lacks what it needs. Design columns (method, LoRA
rank, replay rate, prompt format) become keys only where the sweep varies them; repeated runs of
a cell (seeds) are averaged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

import ftdyn
from ftdyn.metrics import N_BINS, reliability_bins
from ftdyn.report import fits

log = logging.getLogger(__name__)

DESIGN = ["method", "lora_rank", "replay_rate", "prompt"]
PRIMARY = ("acc", "rougeL")  #: the score of a classification / a generation eval set
KIND_ORDER = {"in_domain": 0, "out_of_domain": 1, "cross_task": 2, "probe": 3, "pretrain": 4}
FORGET = "forget_ce"  #: Kalajdzievski's L_f: cross-entropy to the base model's soft next-token targets
CALIBRATION = ["ece", "mce", "ece_ts", "mce_ts"]
#: The headline measurements, each a mean over a run's sets of one kind: column -> (split kind, metrics)
HEADLINE = {"in-domain": ("in_domain", PRIMARY), "out-of-domain": ("out_of_domain", PRIMARY),
            "probe": ("probe", ("acc",)), "held-out loss": ("pretrain", ("pretrain_loss",))}


def varying(table: pd.DataFrame, columns: list[str]) -> list[str]:
    """The columns among `columns` that take more than one value. None counts as a value (an sft
    run's lora_rank) except for prompt, which is None on rows no prompt formats (probe, held-out text)."""
    return [c for c in columns if c in table and table[c].nunique(dropna=c != "prompt") > 1]


def _wide(rows: pd.DataFrame, keys: list[str], column: str = "stage") -> pd.DataFrame:
    """Mean value per `keys` with one column per value of `column`."""
    return rows.groupby(keys + [column], dropna=False)["value"].mean().unstack(column).reset_index()


def before_after(table: pd.DataFrame, examples: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Before/after per checkpoint x task x eval set x metric (x varied design), with bootstrap
    95% intervals `<stage>_lo`, `<stage>_hi` where per-example scores exist (examples.jsonl)."""
    scored = table[table["stage"].isin(["before", "after"])]
    if scored.empty:
        return pd.DataFrame()
    keys = ["task", "ckpt_step", *varying(scored, DESIGN), "split_kind", "eval_set", "metric"]
    wide = _wide(scored, keys)
    if not examples.empty:
        wide = wide.merge(_intervals(scored, examples, keys, seed), on=keys, how="left")
    wide["kind_order"] = wide["split_kind"].map(KIND_ORDER)
    wide = wide.sort_values(["task", "ckpt_step", *keys[2:-3], "kind_order", "eval_set", "metric"])
    stages = [c for c in ("before", "before_lo", "before_hi", "after", "after_lo", "after_hi") if c in wide]
    return wide[keys + stages].reset_index(drop=True)


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint x task (x varied method, LoRA rank, replay rate): for each `HEADLINE`
    measurement, `<name> before` and `<name> after`, the mean over a run's sets of that kind, then
    over runs. A measurement no job wrote has no columns. The table `python -m ftdyn.report` prints."""
    scored = table[table["stage"].isin(["before", "after"])]
    if scored.empty:
        return pd.DataFrame()
    keys = ["task", "ckpt_step", *varying(scored, [c for c in DESIGN if c != "prompt"])]
    out = scored.drop_duplicates(keys)[keys].set_index(keys)
    for name, (split_kind, metrics) in HEADLINE.items():
        rows = scored[(scored["split_kind"] == split_kind) & scored["metric"].isin(metrics)]
        if rows.empty:
            continue
        per_run = rows.groupby([*keys, "run_key", "stage"], dropna=False)["value"].mean()
        wide = per_run.groupby([*keys, "stage"], dropna=False).mean().unstack("stage")
        out = out.join(wide.reindex(columns=["before", "after"]).add_prefix(f"{name} "), how="left")
    return out.reset_index().sort_values(keys, kind="stable").reset_index(drop=True)


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


def conf_dir() -> Path:
    packaged = Path(ftdyn.__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(ftdyn.__file__).resolve().parents[2] / "conf"


def task_kind(name: str, known: dict[str, str]) -> str | None:
    """classification | generation: from the jobs' configs, else conf/task/<name>.yaml."""
    if name in known:
        return known[name]
    path = conf_dir() / "task" / f"{name}.yaml"
    return OmegaConf.load(path).get("kind") if path.exists() else None


def cross_task_changes(table: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """Per run x cross-task eval set: (after - before) / before of its score (acc or rougeL)."""
    cross = table[(table["split_kind"] == "cross_task") & table["metric"].isin(PRIMARY)
                  & table["stage"].isin(["before", "after"])]
    if cross.empty:
        return pd.DataFrame()
    design = varying(table[table["stage"].isin(["before", "after"])], DESIGN)
    per = _wide(cross, ["run_key", "ckpt_step", "task", *design, "eval_set", "metric"])
    per = per.dropna(subset=["before", "after"])
    per["eval_task"] = per["eval_set"].str.split("/").str[0]
    per = per[per["eval_task"] != per["task"]]
    zero = per["before"] == 0
    if zero.any():
        log.warning("MRC: %d cross-task sets score 0 before fine-tuning; their ratio is undefined, left out",
                    int(zero.sum()))
    per["change"] = (per["after"] - per["before"]) / per["before"].where(~zero)
    per["train_kind"] = per["task"].map(lambda t: task_kind(t, kinds))
    per["eval_kind"] = per["eval_task"].map(lambda t: task_kind(t, kinds))
    return per.reset_index(drop=True)


def mrc(changes: pd.DataFrame) -> pd.DataFrame:
    """MRC_i(t): mean relative change over the other tasks' eval sets, per checkpoint i x task t."""
    if changes.empty:
        return pd.DataFrame()
    design = [c for c in DESIGN if c in changes]
    return (changes.groupby(["ckpt_step", "task", *design], dropna=False)["change"]
            .agg(mrc="mean", n_sets="count").reset_index())


def mrc_directions(changes: pd.DataFrame) -> pd.DataFrame:
    """Mean relative change per (training task kind -> eval task kind), over checkpoints and pairs:
    Amuro & Char's classification -> generation and generation -> classification averages."""
    if changes.empty:
        return pd.DataFrame()
    out = (changes.groupby(["train_kind", "eval_kind"])["change"].agg(mean_change="mean", n="count")
           .reset_index())
    out.insert(0, "direction", out["train_kind"] + " -> " + out["eval_kind"])
    return out


def in_loop(table: pd.DataFrame) -> pd.DataFrame:
    """One line per run x in-loop step: step, train_loss, forget_ce, forget_kl, pretrain_loss,
    with the run's task, method, LoRA rank and trainable parameters."""
    steps = table[table["stage"].astype(str).str.startswith("step_")]
    if steps.empty:
        return pd.DataFrame()
    wide = _wide(steps, ["run_key", "task", "ckpt_step", "method", "lora_rank", "stage"], "metric")
    wide["step"] = wide["stage"].str.removeprefix("step_").astype(int)
    params = table[(table["stage"] == "run") & (table["metric"] == "trainable_params")]
    wide = wide.merge(params.groupby("run_key")["value"].first().rename("trainable_params"), on="run_key",
                      how="left")
    return wide.drop(columns="stage").sort_values(["task", "run_key", "step"]).reset_index(drop=True)


def forgetting_law(points: pd.DataFrame) -> pd.DataFrame:
    """Kalajdzievski's linear law forget_ce = -c * train_loss + s per training task (all runs and
    in-loop steps of the task pooled, as the paper pools its ranks)."""
    if points.empty or not {"train_loss", FORGET} <= set(points):
        return pd.DataFrame()
    out = []
    for task, group in points.dropna(subset=["train_loss", FORGET]).groupby("task"):
        try:
            out.append({"task": task, **fits.linear_law(group["train_loss"], group[FORGET])})
        except ValueError as err:
            log.warning("forgetting law for %s: %s", task, err)
    return pd.DataFrame(out)


def power_laws(points: pd.DataFrame) -> pd.DataFrame:
    """Shifted power law (fits.power_law) of train_loss and forget_ce in trainable parameters P and
    step N, per training task, over LoRA runs (lora_rank set) at >= 2 ranks."""
    if points.empty or "lora_rank" not in points:
        return pd.DataFrame()
    lora = points[points["lora_rank"].notna() & points["trainable_params"].notna()]
    out = []
    for task, group in lora.groupby("task"):
        for metric in ("train_loss", FORGET):
            data = group.dropna(subset=[metric])
            try:
                fit = fits.fit_power_law(data["trainable_params"], data["step"], data[metric])
            except ValueError as err:  # listed, so a missing fit is explained in the report
                log.warning("power law of %s on %s: %s", metric, task, err)
                fit = {"note": str(err)}
            out.append({"task": task, "metric": metric, "ranks": int(data["lora_rank"].nunique()), **fit})
    return pd.DataFrame(out)


def _per_run(table: pd.DataFrame, rows: pd.Series, name: str) -> pd.Series:
    """The mean value of `rows` per run_key, named `name`."""
    return table[rows].groupby("run_key")["value"].mean().rename(name)


def run_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One line per finished run: in-domain and OOD score before and after, forgetting, calibration."""
    runs = table[table["stage"] == "after"].drop_duplicates("run_key")[
        ["run_key", "task", "ckpt_step", "method", "lora_rank", "replay_rate"]].set_index("run_key")
    primary, stage = table["metric"].isin(PRIMARY), table["stage"]
    indomain, ood = table["split_kind"] == "in_domain", table["split_kind"] == "out_of_domain"
    parts = [_per_run(table, primary & indomain & (stage == s), f"in_domain_{s}") for s in ("before", "after")]
    parts.append(_per_run(table, primary & ood & (stage == "after"), "ood_after"))
    parts.append(_per_run(table, (table["metric"] == "forget_kl") & (stage == "after"), "forget_kl"))
    parts.append(_per_run(table, (table["metric"] == "trainable_params") & (stage == "run"), "trainable_params"))
    parts += [_per_run(table, (table["metric"] == m) & indomain & (stage == s), f"{m}_{s}")
              for s in ("before", "after") for m in CALIBRATION]
    out = runs.join(parts, how="left").reset_index()
    out["in_domain_gain"] = out["in_domain_after"] - out["in_domain_before"]
    return out


def replay(summary: pd.DataFrame) -> pd.DataFrame:
    """In-domain gain (after - before) and forgetting (forget_kl after) per replay rate, for the
    task x checkpoint x method cells the sweep ran at two or more rates."""
    summary = summary.dropna(subset=["in_domain_after", "forget_kl"], how="all")  # not the toy: table gaussians
    if summary.empty or summary["replay_rate"].nunique() < 2:
        return pd.DataFrame()
    keys = ["task", "ckpt_step", "method", "lora_rank"]
    swept = summary.groupby(keys, dropna=False)["replay_rate"].transform("nunique") > 1  # cells with a replay axis
    return (summary[swept].groupby([*keys, "replay_rate"], dropna=False)[
        ["in_domain_before", "in_domain_after", "in_domain_gain", "forget_kl"]].mean().reset_index()
        .dropna(axis=1, how="all"))


def methods(summary: pd.DataFrame) -> pd.DataFrame:
    """SFT / LoRA / LP-FT / LP-LoRA side by side: scores, forgetting, calibration before and after
    temperature scaling (ECE/MCE on the in-domain sets)."""
    if summary.empty or summary["method"].nunique() < 2:
        return pd.DataFrame()
    keys = ["task", "ckpt_step", "method", *varying(summary, ["lora_rank", "replay_rate"])]
    values = ["trainable_params", "in_domain_after", "ood_after", "forget_kl",
              *[f"{m}_{s}" for s in ("before", "after") for m in CALIBRATION]]
    out = summary.groupby(keys, dropna=False)[values].mean().reset_index()
    return out.dropna(axis=1, how="all")


def reliability(table: pd.DataFrame, examples: pd.DataFrame) -> pd.DataFrame:
    """Reliability bins per task x checkpoint x method x stage on the in-domain sets: per equal-width
    confidence bin (lower < c <= upper), its count, mean confidence and accuracy.

    Reads `confidences` (max-softmax probability per example, in the order of `scores`) from
    examples.jsonl acc lines (classification sets carry them); absent, the table is empty and the
    report falls back to ECE/MCE bars."""
    if examples.empty or "confidences" not in examples:
        return pd.DataFrame()
    lines = examples[examples["confidences"].notna() & (examples["metric"] == "acc")
                     & (examples["split_kind"] == "in_domain")]
    facts = table.drop_duplicates("run_key")[["run_key", "task", "ckpt_step", "method"]]
    out = []
    for (task, ckpt, method, stage), g in lines.merge(facts, on="run_key").groupby(
            ["task", "ckpt_step", "method", "stage"]):
        confidence = np.concatenate(g["confidences"].map(np.asarray).tolist())
        correct = np.concatenate(g["scores"].map(np.asarray).tolist())
        for b, count, mean_confidence, accuracy in reliability_bins(confidence, correct, N_BINS):
            out.append({"task": task, "ckpt_step": ckpt, "method": method, "stage": stage, "bin": b,
                        "count": count, "confidence": mean_confidence, "accuracy": accuracy})
    return pd.DataFrame(out)


#: the two-Gaussians toy's columns, after fine-tuning: `<eval set>_<metric>` (ftdyn.toy)
GAUSSIANS = ("x1_pred", "x1_mse", "x2_pred", "x2_drift", "x2_ntk_pred_change", "x2_ntk_pred_change_k0",
             "x2_ntk_pred_change_replay", "x2_ntk_corr", "x1_ntk_corr")


def gaussians(table: pd.DataFrame) -> pd.DataFrame:
    """The two-Gaussians toy per width x depth x replay rate: the fit on X1 and the prediction and
    drift on X2 after fine-tuning, and the NTK's prediction of that drift where traced
    (eval.ntk); toy runs are those with `width` run facts, repeated seeds averaged."""
    facts = table[(table["stage"] == "run") & table["metric"].isin(["width", "depth"])]
    if facts.empty:
        return pd.DataFrame()
    shape = facts.pivot_table(index="run_key", columns="metric", values="value").astype(int)
    after = table[(table["stage"] == "after") & table["run_key"].isin(shape.index)]
    if after.empty:
        return pd.DataFrame()
    measures = after.assign(column=after["eval_set"] + "_" + after["metric"]).pivot_table(
        index="run_key", columns="column", values="value")
    runs = after.drop_duplicates("run_key").set_index("run_key")[["task", "ckpt_step", "method", "replay_rate"]]
    out = runs.join(shape).join(measures).reset_index()
    keys = ["task", "ckpt_step", "method", "width", "depth", "replay_rate"]
    columns = [c for c in GAUSSIANS if c in out]
    return out.groupby(keys)[columns].mean().reset_index().sort_values(keys).reset_index(drop=True)
