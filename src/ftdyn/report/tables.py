"""Derived tables of a sweep's results, after the source papers (seed-methods.md §1.5-1.6, §2.3).

Every function takes the combined results table (one row per measurement, `collect.read_results`)
and returns a DataFrame, empty when the sweep lacks what it needs. Design columns (method, LoRA
rank, replay rate, prompt format) become keys only where the sweep varies them; repeated runs of
a cell (seeds) are averaged. A before and an after score are compared only when both were scored
with the same number of demonstrations (`shots`): the before/after table keys on it, the
headline splits a row where they differ, and a gain across different shots is left empty.
Cross-task change and MRC are `ftdyn.report.mrc`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

import ftdyn
from ftdyn.eval.metrics import N_BINS, reliability_bins
from ftdyn.report import fits

log = logging.getLogger(__name__)

DESIGN = ["method", "lora_rank", "replay_rate", "prompt"]
PRIMARY = ("acc", "rougeL")  #: the score of a classification / a generation eval set
DEFAULT_FORMAT = "default"  #: the prompt format ftdyn (and Amuro & Char) train in; the others measure sensitivity
KIND_ORDER = {"in_domain": 0, "out_of_domain": 1, "cross_task": 2, "probe": 3, "pretrain": 4}
FORGET = "forget_ce"  #: Kalajdzievski's L_f: cross-entropy to the base model's soft next-token targets
CALIBRATION = ["ece", "mce", "ece_ts", "mce_ts"]
#: The headline measurements, each a mean over a run's sets of one kind: column -> (split kind, metrics)
HEADLINE = {"in-domain": ("in_domain", PRIMARY), "out-of-domain": ("out_of_domain", PRIMARY),
            "probe": ("probe", ("acc",)), "held-out loss": ("pretrain", ("pretrain_loss",))}
FEWSHOT_KINDS = ("in_domain", "out_of_domain", "cross_task")  #: split kinds whose prompts carry demonstrations
EXAMPLE_KEYS = ["run_key", "eval_set", "split_kind", "stage", "prompt", "metric"]  #: an examples.jsonl line's row


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


def _wide(rows: pd.DataFrame, keys: list[str], column: str = "stage") -> pd.DataFrame:
    """Mean value per `keys` with one column per value of `column`."""
    return rows.groupby(keys + [column], dropna=False)["value"].mean().unstack(column).reset_index()


def before_after(table: pd.DataFrame, examples: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Before/after per checkpoint x task x eval set x metric (x varied design), with bootstrap
    95% intervals `<stage>_lo`, `<stage>_hi` where per-example scores exist (examples.jsonl)."""
    scored = with_shots(table[table["stage"].isin(["before", "after"])])
    if scored.empty:
        return pd.DataFrame()
    keys = ["task", "ckpt_step", *varying(scored, DESIGN), "shots", "split_kind", "eval_set", "metric"]
    wide = _wide(scored, keys)
    if not examples.empty:
        wide = wide.merge(_intervals(scored, _examples_with_shots(examples, scored), keys, seed), on=keys,
                          how="left")
    if "seed" in scored and scored["seed"].nunique() > 1:
        wide = wide.merge(_seed_intervals(scored, keys), on=keys, how="left")
    wide["kind_order"] = wide["split_kind"].map(KIND_ORDER)
    wide = wide.sort_values(["task", "ckpt_step", *keys[2:-3], "kind_order", "eval_set", "metric"])
    stages = [c for c in ("before", "before_lo", "before_hi", "after", "after_lo", "after_hi", "seeds",
                          "before_seed_lo", "before_seed_hi", "after_seed_lo", "after_seed_hi") if c in wide]
    return wide[keys + stages].reset_index(drop=True)


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
        wide = per_run.groupby([*by, "stage"], dropna=False).mean().unstack("stage")
        wide = wide.reindex(columns=["before", "after"]).add_prefix(f"{name} ").reset_index()
        out = out.merge(wide, on=by, how="left")
    return out.sort_values(keys + shots, kind="stable").reset_index(drop=True)


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


def conf_dir() -> Path:
    packaged = Path(ftdyn.__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(ftdyn.__file__).resolve().parents[2] / "conf"


def task_kind(name: str, known: dict[str, str]) -> str | None:
    """classification | generation: from the jobs' configs, else conf/task/<name>.yaml."""
    if name in known:
        return known[name]
    path = conf_dir() / "task" / f"{name}.yaml"
    return OmegaConf.load(path).get("kind") if path.exists() else None


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


JOINT_FITS = {"additive": fits.fit_additive_law, "product": fits.fit_power_law}


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


def _per_run(table: pd.DataFrame, rows: pd.Series, name: str) -> pd.Series:
    """The mean value of `rows` per run_key, named `name`."""
    return table[rows].groupby("run_key")["value"].mean().rename(name)


def run_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One line per finished run: in-domain and OOD score before and after, forgetting, calibration.
    `in_domain_gain` (after - before) is empty where the two stages' shots differ."""
    table = with_shots(table)
    runs = table[table["stage"] == "after"].drop_duplicates("run_key")[
        ["run_key", "task", "ckpt_step", "method", "lora_rank", "replay_rate"]].set_index("run_key")
    primary, stage = table["metric"].isin(PRIMARY), table["stage"]
    indomain, ood = table["split_kind"] == "in_domain", table["split_kind"] == "out_of_domain"
    parts = [_per_run(table, primary & indomain & (stage == s), f"in_domain_{s}") for s in ("before", "after")]
    parts += [table[primary & indomain & (stage == s)].groupby("run_key")["shots"].first().rename(f"shots_{s}")
              for s in ("before", "after")]
    parts.append(_per_run(table, primary & ood & (stage == "after"), "ood_after"))
    parts.append(_per_run(table, (table["metric"] == "forget_kl") & (stage == "after"), "forget_kl"))
    parts.append(_per_run(table, (table["metric"] == "trainable_params") & (stage == "run"), "trainable_params"))
    parts += [_per_run(table, (table["metric"] == m) & indomain & (stage == s), f"{m}_{s}")
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


# --- Inside the run: LP-FT diagnostics and WiSE-FT (eval.diagnostics, eval.interpolate; docs/diagnostics.md)

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
    parts = [_per_run(table, (stage == s) & (table["eval_set"] == e) & (metric == m), name)
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
    per_run = [interpolated[rows].groupby([*keys, "run_key"], dropna=False)["value"].mean().rename(name)
               for name, rows in columns.items() if rows.any()]
    wide = pd.concat(per_run, axis=1).groupby(keys, dropna=False).mean()
    return wide.reset_index().sort_values(keys).reset_index(drop=True)


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
