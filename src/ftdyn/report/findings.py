"""Findings: each source paper's claim, the statistic ftdyn computes for it, and its verdict.

`FINDINGS` is the catalogue: per claim its source, the paper's number, what ftdyn computes per
fine-tuning seed (a function of `per_seed`), and the `direction` and `margin` the verdict rule
(`verdict`) reads. `findings` evaluates the catalogue on a results table: one line of
findings.csv per finding, or one per protocol (number of demonstrations) for a finding on
prompted sets when the sweep scored several; each line carries the `statistic` text with the number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ftdyn.report import per_seed, verdict
from ftdyn.report.frames import FEWSHOT_KINDS


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
        """The verdict rule for this finding, in words."""
        return verdict.rule(self.direction, self.margin)


def protocols(table: pd.DataFrame) -> list[float]:
    """The numbers of demonstrations the sweep scored its prompted sets with, most first (the
    source's k-shot protocol, then e.g. `fewshot.also_zero_shot`'s 0)."""
    if "shots" not in table:
        return []
    shots = table.loc[table["split_kind"].isin(FEWSHOT_KINDS) & (table["stage"] == "before"), "shots"].dropna()
    return sorted(shots.unique(), reverse=True)


def _protocol(table: pd.DataFrame, shots: float) -> pd.DataFrame:
    """The rows of one protocol: prompted sets scored with `shots` demonstrations, and every other row."""
    return table[~table["split_kind"].isin(FEWSHOT_KINDS) | (table["shots"] == shots)]


def evaluate(finding: Finding, table: pd.DataFrame, kinds: dict[str, str]) -> dict:
    """One line of findings.csv: the claim, the number with its interval, the rule and the verdict."""
    try:
        values = finding.per_seed(table, kinds)
        notes = [values.attrs.get("note", ""),
                 "" if values.notna().sum() >= 2 else "one seed: no interval (run seed=0,1,2)"]
        note = "; ".join(n for n in notes if n)
    except verdict.Missing as err:
        values, note = pd.Series(dtype=float), str(err)
    mean, lo, hi, n = verdict.interval(values)
    return {"finding": finding.key, "source": finding.source, "claim": finding.claim,
            "source_number": finding.source_number, "statistic": finding.statistic, "value": mean,
            "lo": lo, "hi": hi, "seeds": n, "rule": finding.rule(),
            "verdict": verdict.verdict(lo, hi, finding.direction, finding.margin), "note": note}


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


FINDINGS = [
    Finding("a_latent_gain", "Amuro & Char §5, Fig. 3", "On tasks not learned in pre-training, later checkpoints "
            "score higher after fine-tuning although the base score is flat", "MNLI: after-score rises along "
            "OLMo-1B's checkpoints while the 4-shot base stays flat",
            f"slope of the after-score (in-domain, default format) against log10(step), over tasks whose "
            f"before-score rises < {per_seed.LEARNED_RISE} across the checkpoints", +1, 0.0,
            per_seed.latent_gain_slope, by_shots=True),
    Finding("a_group_gap", "Amuro & Char §5, Table 6 (v5)", "Tasks not learned in pre-training gain far more from "
            "fine-tuning than tasks already learned", "mean raw gain .290 vs -.005 (final checkpoint)",
            "mean gain (after - before, in-domain) of flat tasks minus that of tasks learned in pre-training",
            +1, 0.0, per_seed.group_gain_gap, by_shots=True),
    Finding("b_cls_to_gen", "Amuro & Char §6, Eq. 1", "Fine-tuning on classification hurts generation",
            "MRC classification -> generation -61.4%", "mean relative change of generation tasks' scores "
            "after fine-tuning on a classification task (default format, over checkpoints)", -1, 0.0,
            per_seed.kind_change("classification", "generation"), by_shots=True),
    Finding("b_gen_to_cls", "Amuro & Char §6, Eq. 1", "Fine-tuning on generation leaves classification unchanged",
            "MRC generation -> classification +0.3% (not significant)", "mean relative change of classification "
            "tasks' scores after fine-tuning on a generation task", 0, 0.1,
            per_seed.kind_change("generation", "classification"), by_shots=True),
    Finding("b_asymmetry", "Amuro & Char §6, Eq. 1", "Fine-tuning on classification hurts generation far more "
            "than the reverse", "-61.4% against +0.3%", "MRC classification -> generation minus MRC generation "
            "-> classification, per seed", -1, 0.0, per_seed.mrc_asymmetry, by_shots=True),
    Finding("c_linear_law", "Kalajdzievski §4.1, Eq. 4", "Forgetting is linear in the fine-tuning loss",
            "R² .945 (OpenOrca), .974 (News)", "R² of forget_ce = -c * train_loss + s over in-loop steps, all "
            "ranks pooled, mean over tasks", +1, 0.9, per_seed.linear_law_r2),
    Finding("c_joint_law", "Kalajdzievski §4.1, Eq. 5-6", "Forgetting is a shifted power law in parameters "
            "and steps", "R² .960 (OpenOrca), .977 (News)", "R² of the additive joint law c((a/P)^alpha + "
            "(b/N)^beta)^rho + s fitted to forget_ce over LoRA ranks and in-loop steps, mean over tasks", +1, 0.9,
            per_seed.joint_law_r2),
    Finding("d_feature_change", "Tomihari & Sato §5, Table 1", "LP-FT changes the features less than FT",
            "smaller Diff(F) for LP-FT than FT on every dataset", "mean ||phi_ft(x) - phi_0(x)|| of FT (ft, "
            "lorahead) minus that of its probe-first variant (lpft, lplora), paired by task x checkpoint",
            +1, 0.0, per_seed.feature_change_gap),
    Finding("d_head_norm", "Tomihari & Sato §5, Table 1", "LP-FT ends with a larger classifier norm than FT",
            "larger Norm(C) for LP-FT than FT", "final classifier norm ||V||_F of the probe-first variant "
            "(lpft, lplora) minus that of its baseline (ft, lorahead), paired by task x checkpoint", +1, 0.0,
            per_seed.head_norm_gap),
    Finding("e_replay", "CMU poster (Kapoor & Kotha)", "5-10% replay nearly removes forgetting",
            "X2 prediction stays near 1 with replay", "1 - forget_kl(5-10% replay) / forget_kl(no replay), "
            "after fine-tuning, mean over cells", +1, 0.5, per_seed.replay_reduction),
    Finding("e_replay_toy", "CMU poster (Kapoor & Kotha)", "With 5-10% replay the untouched Gaussian's "
            "prediction stays near 1", "X2 prediction stays near 1 with replay", "1 - |X2 drift|(5-10% replay) / "
            "|X2 drift|(no replay) on the two-Gaussians toy, mean over widths x depths", +1, 0.5,
            per_seed.toy_replay_reduction),
    Finding("iii_knowledge", "Amuro & Char §6", "Fine-tuning forgets domain knowledge", "OOD and knowledge "
            "scores fall after SFT (Fig. 6-7)", "world-facts probe accuracy before - after fine-tuning",
            +1, 0.0, per_seed.knowledge_forgotten),
    Finding("iv_prompt_sensitivity", "Amuro & Char §6, Fig. 5", "Sensitivity to the prompt format after "
            "fine-tuning shrinks with more pre-training", "later checkpoints fine-tuned in one format do well in "
            "the others", "slope of the after-score spread across prompt formats (max - min) against "
            "log10(step)", -1, 0.0, per_seed.prompt_sensitivity_slope, by_shots=True),
]
