"""One line per run, and what compares runs: replay rates, methods, calibration.

`run_summary` gives each finished run its in-domain and out-of-domain scores, forgetting and
calibration; `replay` and `methods` average it over the cells that vary the replay rate or the
method; `reliability` bins the in-domain sets' per-example confidences (docs/definitions.md,
Report tables).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ftdyn.eval.metrics import N_BINS, reliability_bins
from ftdyn.report.frames import CALIBRATION, PRIMARY, per_run, varying, with_shots


def run_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One line per finished run: in-domain and OOD score before and after, forgetting, calibration.
    `in_domain_gain` (after - before) is empty where the two stages' shots differ."""
    table = with_shots(table)
    runs = table[table["stage"] == "after"].drop_duplicates("run_key")[
        ["run_key", "task", "ckpt_step", "method", "lora_rank", "replay_rate"]].set_index("run_key")
    primary, stage = table["metric"].isin(PRIMARY), table["stage"]
    indomain, ood = table["split_kind"] == "in_domain", table["split_kind"] == "out_of_domain"
    parts = [per_run(table, primary & indomain & (stage == s), f"in_domain_{s}") for s in ("before", "after")]
    parts += [table[primary & indomain & (stage == s)].groupby("run_key")["shots"].first().rename(f"shots_{s}")
              for s in ("before", "after")]
    parts.append(per_run(table, primary & ood & (stage == "after"), "ood_after"))
    parts.append(per_run(table, (table["metric"] == "forget_kl") & (stage == "after"), "forget_kl"))
    parts.append(per_run(table, (table["metric"] == "trainable_params") & (stage == "run"), "trainable_params"))
    parts += [per_run(table, (table["metric"] == m) & indomain & (stage == s), f"{m}_{s}")
              for s in ("before", "after") for m in CALIBRATION]
    out = runs.join(parts, how="left").reset_index()
    same = (out["shots_before"] == out["shots_after"]) | (out["shots_before"].isna() & out["shots_after"].isna())
    out["in_domain_gain"] = (out["in_domain_after"] - out["in_domain_before"]).where(same)
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
