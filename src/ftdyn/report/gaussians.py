"""The two-Gaussians toy's table: what fine-tuning on X1 did to X2, per network shape and replay rate.

Toy runs (`ftdyn.gaussians`, model=mlp task=two_gaussians) are the runs with `width` and `depth`
run facts; their measurements are `after` rows on the eval sets x1 and x2, and, where traced
(eval.diagnostics=[ntk_change]), the NTK's prediction of X2's drift (docs/definitions.md,
Report tables).
"""

from __future__ import annotations

import pandas as pd

#: the two-Gaussians toy's columns, after fine-tuning: `<eval set>_<metric>` (ftdyn.gaussians)
GAUSSIANS = ("x1_pred", "x1_mse", "x2_pred", "x2_drift", "x2_ntk_pred_change", "x2_ntk_pred_change_k0",
             "x2_ntk_pred_change_replay", "x2_ntk_corr", "x1_ntk_corr")


def gaussians(table: pd.DataFrame) -> pd.DataFrame:
    """The two-Gaussians toy per width x depth x replay rate: the fit on X1 and the prediction and
    drift on X2 after fine-tuning, and the NTK's prediction of that drift where traced
    (eval.diagnostics=[ntk_change]); toy runs are those with `width` run facts, repeated seeds averaged."""
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
