"""Inside the run: the LP-FT diagnostics, the NTK spectra and WiSE-FT's frontier.

The diagnostics follow Tomihari & Sato (feature change, Fisher ratio, classifier norm, the NTK
split); their rows come from the opt-in `eval.diagnostics`, WiSE-FT's from `eval.interpolate`
(docs/diagnostics.md, docs/definitions.md). The interpolated models write `after` rows with an
`alpha`; `split_interpolation` keeps them apart, so no other table averages them in with the
real `after`.
"""

from __future__ import annotations

import pandas as pd

from ftdyn.report.frames import PRIMARY, per_run, varying

#: per run: diagnostic column -> (stage, eval_set, metric) of its row
DIAGNOSTICS = {"feature_cos": ("after", "features", "feature_cos"),
               "feature_diff": ("after", "features", "feature_diff"),
               "fisher_before": ("before", "features", "fisher_ratio"),
               "fisher_after": ("after", "features", "fisher_ratio"),
               "ft_ratio": ("before", "ntk", "ft_ratio"), "ft_share": ("before", "ntk", "ft_share"),
               "ntk_pre_fro": ("before", "ntk", "ntk_pre_fro"), "ntk_ft_fro": ("before", "ntk", "ntk_ft_fro")}


def split_interpolation(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows of the runs as they ran, WiSE-FT rows): rows with an `alpha` are the interpolated
    models' `after` evaluations, which every other table must not average in with the real `after`."""
    if "alpha" not in table:
        return table, table.iloc[0:0]
    interpolated = table["alpha"].notna()
    return table[~interpolated], table[interpolated]


def diagnostics(table: pd.DataFrame) -> pd.DataFrame:
    """Per task x checkpoint x method (x varied rank, replay rate): the classifier norm at the end
    (the final stage's `classifier_norm_<stage>` fact), feature change and Fisher ratio, NTK split;
    a mean over runs (seeds). Empty when no run measured a diagnostic."""
    stage, metric = table["stage"], table["metric"]
    parts = [per_run(table, (stage == s) & (table["eval_set"] == e) & (metric == m), name)
             for name, (s, e, m) in DIAGNOSTICS.items()]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame()
    norms = table[(stage == "run") & metric.astype(str).str.startswith("classifier_norm_")]
    parts.insert(0, norms.groupby("run_key")["value"].last().rename("classifier_norm"))  # facts: stages in order
    keys = ["task", "ckpt_step", "method", *varying(table, ["lora_rank", "replay_rate"])]
    runs = table.drop_duplicates("run_key").set_index("run_key")[keys]
    joined = runs.join(parts, how="inner").dropna(how="all", subset=[p.name for p in parts])
    return joined.groupby(keys, dropna=False).mean(numeric_only=True).reset_index()


def frontier(interpolated: pd.DataFrame) -> pd.DataFrame:
    """WiSE-FT's learning-forgetting frontier: per task x checkpoint x method (x varied rank, replay
    rate) x alpha, the in-domain score (acc or rougeL, mean over the task's in-domain sets), the
    out-of-domain score and forgetting (forget_kl on held-out pre-training text)."""
    if interpolated.empty:
        return pd.DataFrame()
    kind, metric = interpolated["split_kind"], interpolated["metric"]
    keys = ["task", "ckpt_step", "method", *varying(interpolated, ["lora_rank", "replay_rate"]), "alpha"]
    columns = {"in_domain": (kind == "in_domain") & metric.isin(PRIMARY),
               "out_of_domain": (kind == "out_of_domain") & metric.isin(PRIMARY),
               "forget_kl": metric == "forget_kl", "pretrain_loss": metric == "pretrain_loss"}
    runs = [interpolated[rows].groupby([*keys, "run_key"], dropna=False)["value"].mean().rename(name)
            for name, rows in columns.items() if rows.any()]
    means = pd.concat(runs, axis=1).groupby(keys, dropna=False).mean()
    return means.reset_index().sort_values(keys).reset_index(drop=True)


def ntk_spectra(table: pd.DataFrame) -> pd.DataFrame:
    """Per method x kernel (ntk_pre, ntk_ft) x index: the singular values of the NTK split's parts,
    each normalised by the part's largest (Tomihari & Sato's Table 9), a mean over runs."""
    rows = table[(table["eval_set"] == "ntk") & table["metric"].astype(str).str.contains("_sv_")]
    if rows.empty:
        return pd.DataFrame()
    parts = rows["metric"].str.extract(r"^(?P<kernel>.+)_sv_(?P<index>\d+)$")
    rows = rows.assign(kernel=parts["kernel"], index=parts["index"].astype(int))
    top = rows.groupby(["run_key", "kernel"])["value"].transform("max")
    rows = rows.assign(normalised=(rows["value"] / top.where(top > 0)).fillna(0.0))
    return (rows.groupby(["method", "kernel", "index"])["normalised"].mean().reset_index()
            .sort_values(["method", "kernel", "index"]).reset_index(drop=True))
