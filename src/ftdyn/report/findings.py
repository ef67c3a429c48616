"""Findings: each source paper's claim as a statistic per fine-tuning seed, an interval, a verdict.

A finding is computed once per seed (`seed` in the rows: the fine-tuning seed), then summarised
as the mean over seeds and its 95% Student-t interval, mean ± t(0.975, n−1) · sd / √n. One rule
gives every verdict, with a threshold `margin` stated beside each finding:

- a claim that the statistic exceeds the margin (`direction` +1) is *reproduced* when the whole
  interval lies above it and *not reproduced* when the whole interval lies below it;
- a claim that it falls short of the margin (`direction` −1) mirrors that;
- a claim that the statistic is negligible (`direction` 0) is *reproduced* when the interval lies
  inside ±margin and *not reproduced* when it lies wholly outside;
- anything else is *inconclusive*: the interval straddles the margin, fewer than two seeds ran
  (no interval; the table says so), or the sweep lacks what the statistic needs (the note says what).

The statistics read the same rows as every other table of the report; what each one averages is
in its `statistic` text, which `findings.csv` and the page carry with the number.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ftdyn.report import fits, laws, mrc
from ftdyn.report.frames import DEFAULT_FORMAT, FORGET, PRIMARY, default_format

log = logging.getLogger(__name__)

CONFIDENCE = 0.95
LEARNED_RISE = 0.1  #: a task is learned in pre-training when its before-score rises this much over the ladder
REPLAY_RATES = (0.05, 0.1)  #: the poster's "5-10% replay"
VERDICTS = ("reproduced", "not reproduced", "inconclusive")


class Missing(ValueError):
    """The sweep lacks what a statistic needs; the message says what (shown as the finding's note)."""


@dataclass(frozen=True)
class Finding:
    """One claim of a source paper and how ftdyn measures it."""

    key: str
    source: str  #: paper and section
    claim: str  #: what the paper found, in a line
    source_number: str  #: the paper's number for it
    statistic: str  #: what ftdyn computes per seed
    direction: int  #: +1: claim is statistic > margin; -1: statistic < margin; 0: |statistic| < margin
    margin: float
    per_seed: Callable[[pd.DataFrame, dict[str, str]], pd.Series]  #: rows, task kinds -> value per seed
    by_shots: bool = False  #: reads prompted sets: evaluated once per protocol (number of demonstrations)

    def rule(self) -> str:
        side = {1: f"above {self.margin:g}", -1: f"below {self.margin:g}",
                0: f"inside ±{self.margin:g}"}[self.direction]
        return f"reproduced when the 95% interval across seeds lies {side}; not reproduced when it lies " \
               f"wholly on the other side; otherwise inconclusive"


def interval(values: pd.Series) -> tuple[float, float, float, int]:
    """Mean, 95% Student-t interval across seeds (nan with fewer than two), and the number of seeds."""
    return fits.t_interval(values, CONFIDENCE)


def verdict(lo: float, hi: float, direction: int, margin: float) -> str:
    """The rule in the module docstring, on an interval [lo, hi] (nan: no interval)."""
    if np.isnan(lo) or np.isnan(hi):
        return "inconclusive"
    if direction == 0:
        if -margin < lo and hi < margin:
            return "reproduced"
        return "not reproduced" if hi <= -margin or lo >= margin else "inconclusive"
    low, high = (lo, hi) if direction > 0 else (-hi, -lo)
    target = margin if direction > 0 else -margin
    if low > target:
        return "reproduced"
    return "not reproduced" if high <= target else "inconclusive"


PROMPTED = ("in_domain", "out_of_domain", "cross_task")  #: split kinds whose prompts carry demonstrations


def protocols(table: pd.DataFrame) -> list[float]:
    """The numbers of demonstrations the sweep scored its prompted sets with, most first (the
    source's k-shot protocol, then e.g. `fewshot.also_zero_shot`'s 0)."""
    if "shots" not in table:
        return []
    shots = table.loc[table["split_kind"].isin(PROMPTED) & (table["stage"] == "before"), "shots"].dropna()
    return sorted(shots.unique(), reverse=True)


def _protocol(table: pd.DataFrame, shots: float) -> pd.DataFrame:
    """The rows of one protocol: prompted sets scored with `shots` demonstrations, and every other row."""
    return table[~table["split_kind"].isin(PROMPTED) | (table["shots"] == shots)]


def evaluate(finding: Finding, table: pd.DataFrame, kinds: dict[str, str]) -> dict:
    """One line of findings.csv: the claim, the number with its interval, the rule and the verdict."""
    try:
        values = finding.per_seed(table, kinds)
        notes = [values.attrs.get("note", ""),
                 "" if values.notna().sum() >= 2 else "one seed: no interval (run seed=0,1,2)"]
        note = "; ".join(n for n in notes if n)
    except Missing as err:
        values, note = pd.Series(dtype=float), str(err)
    mean, lo, hi, n = interval(values)
    return {"finding": finding.key, "source": finding.source, "claim": finding.claim,
            "source_number": finding.source_number, "statistic": finding.statistic, "value": mean,
            "lo": lo, "hi": hi, "seeds": n, "rule": finding.rule(),
            "verdict": verdict(lo, hi, finding.direction, finding.margin), "note": note}


def findings(table: pd.DataFrame, kinds: dict[str, str], catalogue: list[Finding] | None = None) -> pd.DataFrame:
    """Every finding of `catalogue` (default: `FINDINGS`) on a results table: one line each, or one
    per protocol (`shots`) for a finding on prompted sets when the sweep scored several."""
    lines = []
    for finding in catalogue or FINDINGS:
        shots = protocols(table) if finding.by_shots else []
        if len(shots) > 1:
            lines += [{**evaluate(finding, _protocol(table, s), kinds), "shots": s} for s in shots]
        else:
            lines.append({**evaluate(finding, table, kinds), "shots": shots[0] if shots else np.nan})
    return pd.DataFrame(lines)


# --- the rows each statistic reads -------------------------------------------------------------------

def _seed_mean(frame: pd.DataFrame, column: str) -> pd.Series:
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


# --- the statistics --------------------------------------------------------------------------------

def latent_gain_slope(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    per = scores(table)
    learned = learned_in_pretraining(per)
    flat = per[per["task"].map(learned) == False]  # noqa: E712 (a Series of bools)
    if flat.empty:
        raise Missing(f"no task with a flat before-score (every task rises >= {LEARNED_RISE})")
    return _slope_per_seed(flat, "after", ["task", "method"])


def group_gain_gap(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    per = scores(table)
    per["learned"] = per["task"].map(learned_in_pretraining(per))
    if per["learned"].nunique() < 2:
        have = "learned in pre-training" if per["learned"].all() else "flat before fine-tuning"
        raise Missing(f"needs a task learned in pre-training and one that is not; every task is {have}")
    by_group = per.groupby(["seed", "learned"])["gain"].mean().unstack("learned")
    return (by_group[False] - by_group[True]).dropna()


def _direction(train_kind: str, eval_kind: str) -> Callable[[pd.DataFrame, dict[str, str]], pd.Series]:
    """Per seed: the mean relative change over the (checkpoint, pair) entries of one direction in the
    default format (`mrc.cross_task_changes`); undefined entries (a zero base, unequal shots) are
    left out of the mean and counted in the note."""
    def per_seed(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
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
    return per_seed


def mrc_asymmetry(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    """Per seed: the classification -> generation mean change minus the generation ->
    classification one (both as `_direction` computes them, seeds that have both)."""
    gap = (_direction("classification", "generation")(table, kinds)
           - _direction("generation", "classification")(table, kinds)).dropna()
    if gap.empty:
        raise Missing("needs both directions in the same seeds")
    return gap


def _law_r2(table: pd.DataFrame, fit: Callable[[pd.DataFrame], float]) -> pd.Series:
    """Per seed: the R² of a law fitted to the report's own in-loop points (each run's first steps
    left out, `laws.law_points`), mean over training tasks."""
    points = laws.law_points(laws.in_loop(table))
    if points.empty:
        raise Missing("needs in-loop rows (eval.every_n_steps > 0)")
    points["seed"] = points["run_key"].map(table.drop_duplicates("run_key").set_index("run_key")["seed"])
    return _mean_per_seed(points, ["task"], fit, "no law could be fitted")


def linear_law_r2(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    def fit(group: pd.DataFrame) -> float:
        if not {"train_loss", FORGET} <= set(group):
            raise ValueError(f"needs train_loss and {FORGET} in-loop rows")
        data = group.dropna(subset=["train_loss", FORGET])
        return fits.linear_law(data["train_loss"], data[FORGET])["r2"]
    return _law_r2(table, fit)


def joint_law_r2(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    def fit(group: pd.DataFrame) -> float:
        lora = group[group["lora_rank"].notna()] if "lora_rank" in group else group[:0]
        if FORGET not in lora or lora["lora_rank"].nunique() < 2:
            raise ValueError(f"needs LoRA runs at >= 2 ranks with {FORGET} in-loop rows")
        data = lora.dropna(subset=[FORGET, "trainable_params"])
        return fits.fit_additive_law(data["trainable_params"], data["step"], data[FORGET])["r2"]
    return _law_r2(table, fit)


def knowledge_forgotten(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    per = scores(table, "probe", ("acc",))
    return _seed_mean(per.assign(drop=per["before"] - per["after"]), "drop")


def prompt_sensitivity_slope(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    rows = table[(table["split_kind"] == "in_domain") & table["metric"].isin(PRIMARY) & (table["stage"] == "after")]
    if "prompt" not in rows or rows["prompt"].nunique() < 2:
        raise Missing("needs after-rows in >= 2 prompt formats (prompt=all_formats)")
    per = rows.groupby(["seed", "task", "ckpt_step", "prompt"])["value"].mean()
    spread = per.groupby(["seed", "task", "ckpt_step"]).agg(lambda v: v.max() - v.min()).rename("spread")
    return _slope_per_seed(spread.reset_index(), "spread", ["task"])


LP_PAIRS = (("ft", "lpft"), ("lorahead", "lplora"))  #: (baseline with a fresh head, its linear-probe-first variant)


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
    rows = table[(table["metric"] == "feature_diff") & (table["stage"] == "after")]
    if rows.empty:
        raise Missing("needs feature rows (eval.diagnostics=[features])")
    return _paired(table, rows.groupby("run_key")["value"].mean(), +1)


def head_norm_gap(table: pd.DataFrame, kinds: dict[str, str]) -> pd.Series:
    """The classifier norm at the end of each run's last stage (run facts classifier_norm_<stage>,
    the probe's left out)."""
    facts = table[(table["stage"] == "run") & table["metric"].astype(str).str.startswith("classifier_norm_")
                  & (table["metric"] != "classifier_norm_probe")]
    if facts.empty:
        raise Missing("needs head methods (classifier_norm_<stage> run facts)")
    return _paired(table, facts.groupby("run_key")["value"].mean(), -1)


SCALE_FACTS = ("width", "depth")  #: run facts that tell the toy's networks apart (rows carry no model settings)


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
    return replay_reduction(table, kinds, metric="drift", split_kind="pretrain")


FINDINGS = [
    Finding("a_latent_gain", "Amuro & Char §5, Fig. 3", "On tasks not learned in pre-training, later checkpoints "
            "score higher after fine-tuning although the base score is flat", "MNLI: after-score rises along "
            "OLMo-1B's checkpoints while the 4-shot base stays flat",
            f"slope of the after-score (in-domain, default format) against log10(step), over tasks whose "
            f"before-score rises < {LEARNED_RISE} across the checkpoints", +1, 0.0, latent_gain_slope, by_shots=True),
    Finding("a_group_gap", "Amuro & Char §5, Table 6 (v5)", "Tasks not learned in pre-training gain far more from "
            "fine-tuning than tasks already learned", "mean raw gain .290 vs -.005 (final checkpoint)",
            "mean gain (after - before, in-domain) of flat tasks minus that of tasks learned in pre-training",
            +1, 0.0, group_gain_gap, by_shots=True),
    Finding("b_cls_to_gen", "Amuro & Char §6, Eq. 1", "Fine-tuning on classification hurts generation",
            "MRC classification -> generation -61.4%", "mean relative change of generation tasks' scores "
            "after fine-tuning on a classification task (default format, over checkpoints)", -1, 0.0,
            _direction("classification", "generation"), by_shots=True),
    Finding("b_gen_to_cls", "Amuro & Char §6, Eq. 1", "Fine-tuning on generation leaves classification unchanged",
            "MRC generation -> classification +0.3% (not significant)", "mean relative change of classification "
            "tasks' scores after fine-tuning on a generation task", 0, 0.1,
            _direction("generation", "classification"), by_shots=True),
    Finding("b_asymmetry", "Amuro & Char §6, Eq. 1", "Fine-tuning on classification hurts generation far more "
            "than the reverse", "-61.4% against +0.3%", "MRC classification -> generation minus MRC generation "
            "-> classification, per seed", -1, 0.0, mrc_asymmetry, by_shots=True),
    Finding("c_linear_law", "Kalajdzievski §4.1, Eq. 4", "Forgetting is linear in the fine-tuning loss",
            "R² .945 (OpenOrca), .974 (News)", "R² of forget_ce = -c * train_loss + s over in-loop steps, all "
            "ranks pooled, mean over tasks", +1, 0.9, linear_law_r2),
    Finding("c_joint_law", "Kalajdzievski §4.1, Eq. 5-6", "Forgetting is a shifted power law in parameters "
            "and steps", "R² .960 (OpenOrca), .977 (News)", "R² of the additive joint law c((a/P)^alpha + "
            "(b/N)^beta)^rho + s fitted to forget_ce over LoRA ranks and in-loop steps, mean over tasks", +1, 0.9,
            joint_law_r2),
    Finding("d_feature_change", "Tomihari & Sato §5, Table 1", "LP-FT changes the features less than FT",
            "smaller Diff(F) for LP-FT than FT on every dataset", "mean ||phi_ft(x) - phi_0(x)|| of FT (ft, "
            "lorahead) minus that of its probe-first variant (lpft, lplora), paired by task x checkpoint",
            +1, 0.0, feature_change_gap),
    Finding("d_head_norm", "Tomihari & Sato §5, Table 1", "LP-FT ends with a larger classifier norm than FT",
            "larger Norm(C) for LP-FT than FT", "final classifier norm ||V||_F of the probe-first variant "
            "(lpft, lplora) minus that of its baseline (ft, lorahead), paired by task x checkpoint", +1, 0.0,
            head_norm_gap),
    Finding("e_replay", "CMU poster (Kapoor & Kotha)", "5-10% replay nearly removes forgetting",
            "X2 prediction stays near 1 with replay", "1 - forget_kl(5-10% replay) / forget_kl(no replay), "
            "after fine-tuning, mean over cells", +1, 0.5, replay_reduction),
    Finding("e_replay_toy", "CMU poster (Kapoor & Kotha)", "With 5-10% replay the untouched Gaussian's "
            "prediction stays near 1", "X2 prediction stays near 1 with replay", "1 - |X2 drift|(5-10% replay) / "
            "|X2 drift|(no replay) on the two-Gaussians toy, mean over widths x depths", +1, 0.5,
            toy_replay_reduction),
    Finding("iii_knowledge", "Amuro & Char §6", "Fine-tuning forgets domain knowledge", "OOD and knowledge "
            "scores fall after SFT (Fig. 6-7)", "world-facts probe accuracy before - after fine-tuning",
            +1, 0.0, knowledge_forgotten),
    Finding("iv_prompt_sensitivity", "Amuro & Char §6, Fig. 5", "Sensitivity to the prompt format after "
            "fine-tuning shrinks with more pre-training", "later checkpoints fine-tuned in one format do well in "
            "the others", "slope of the after-score spread across prompt formats (max - min) against "
            "log10(step)", -1, 0.0, prompt_sensitivity_slope, by_shots=True),
]
