"""The forgetting laws: the in-loop points, the points fitted, and the fits per training task.

In-loop rows (`step_<N>` stages) give each run's fine-tuning loss and forgetting along training.
Kalajdzievski's linear law (Eq. 4) is fitted to forget_ce against train_loss, every rank of a
task pooled; the joint laws (`fits.JOINT_LAWS`: the paper's additive form, ftdyn's product form)
in trainable parameters and steps, over LoRA ranks. Each run's first steps are left out as the
paper leaves them out (`law_points`; docs/definitions.md, Report tables).
"""

from __future__ import annotations

import logging

import pandas as pd

from ftdyn.report import fits
from ftdyn.report.frames import FORGET, wide

log = logging.getLogger(__name__)

JOINT_FITS = {"additive": fits.fit_additive_law, "product": fits.fit_power_law}


def in_loop(table: pd.DataFrame) -> pd.DataFrame:
    """One line per run x in-loop step: step, train_loss, forget_ce, forget_kl, pretrain_loss,
    with the run's task, method, LoRA rank and trainable parameters."""
    steps = table[table["stage"].astype(str).str.startswith("step_")]
    if steps.empty:
        return pd.DataFrame()
    points = wide(steps, ["run_key", "task", "ckpt_step", "method", "lora_rank", "stage"], "metric")
    points["step"] = points["stage"].str.removeprefix("step_").astype(int)
    params = table[(table["stage"] == "run") & (table["metric"] == "trainable_params")]
    points = points.merge(params.groupby("run_key")["value"].first().rename("trainable_params"), on="run_key",
                          how="left")
    return points.drop(columns="stage").sort_values(["task", "run_key", "step"]).reset_index(drop=True)


def law_points(points: pd.DataFrame, skip_steps: int | None = None) -> pd.DataFrame:
    """The in-loop points the forgetting laws are fitted to: each run's points after its first
    `fits.skipped_steps` steps (the paper's 50 of 260, scaled to the run's last in-loop step,
    unless `skip_steps` is given)."""
    if points.empty:
        return points
    run_steps = points.groupby("run_key")["step"].transform("max")
    skipped = run_steps.map(lambda n: fits.skipped_steps(int(n), skip_steps))
    return points[points["step"] > skipped].reset_index(drop=True)


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
    """Joint laws (fits.JOINT_LAWS: Kalajdzievski's additive form, and ftdyn's own product form)
    of train_loss and forget_ce in trainable parameters P and step N, per training task, over
    LoRA runs (lora_rank set) at >= 2 ranks; `law` names the form, `form` labels it."""
    if points.empty or "lora_rank" not in points:
        return pd.DataFrame()
    lora = points[points["lora_rank"].notna() & points["trainable_params"].notna()]
    out = []
    for task, group in lora.groupby("task"):
        for metric in ("train_loss", FORGET):
            data = group.dropna(subset=[metric])
            for law, fit_law in JOINT_FITS.items():
                try:
                    fit = fit_law(data["trainable_params"], data["step"], data[metric])
                except ValueError as err:  # listed, so a missing fit is explained in the report
                    log.warning("%s law of %s on %s: %s", law, metric, task, err)
                    fit = {"note": str(err)}
                out.append({"task": task, "metric": metric, "law": law, "form": fits.JOINT_LAWS[law][0],
                            "ranks": int(data["lora_rank"].nunique()), **fit})
    return pd.DataFrame(out)
