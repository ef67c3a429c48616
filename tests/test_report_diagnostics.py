"""The report's inside-the-run sections on real micro runs: LP-FT diagnostics per method and the
WiSE-FT frontier, with the interpolated rows kept out of every other table."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import MICRO

from ftdyn.config.compose import compose_config
from ftdyn.report import build_report, inside
from ftdyn.train import train

RUN = MICRO + ["task.train_size=64", "method.batch_size=8", "eval.diagnostics=[head_norm,features,ntk]",
               "eval.every_n_steps=4", "eval.ntk_size=6", "eval.interpolate=[0,0.5,1]"]
METHODS = ("lp", "lpft")


@pytest.fixture(scope="module")
def report(micro_ladder, tmp_path_factory):
    sweep = tmp_path_factory.mktemp("sweep")
    for i, method in enumerate(METHODS):
        train(compose_config(RUN + [f"method={method}"]), sweep / str(i))
    out = sweep / "report"
    table, _ = build_report([sweep], out)
    return table, out


def test_diagnostics_table_and_figures_per_method(report):
    table, out = report
    diag = pd.read_csv(out / "diagnostics.csv").set_index("method")
    assert set(diag.index) == set(METHODS)
    assert diag.loc["lp", "feature_diff"] == 0 and diag.loc["lpft", "feature_diff"] > 0
    assert diag.loc["lp", "ft_ratio"] == 0 and 0 < diag.loc["lpft", "ft_ratio"] <= 1
    final = table[(table["stage"] == "run") & (table["metric"] == "classifier_norm_ft")]["value"].iloc[0]
    assert diag.loc["lpft", "classifier_norm"] == pytest.approx(final)
    for name in ("diagnostics", "classifier_norm", "frontier"):
        assert (out / f"{name}.png").exists(), name
    assert (out / "ntk_spectra.csv").exists() and (out / "classifier_norm.csv").exists()
    html = (out / "index.html").read_text()
    assert all(f'id="{name}"' in html for name in ("diagnostics", "classifier_norm", "ntk_spectra", "frontier"))


def test_frontier_has_every_alpha_and_other_tables_ignore_them(report):
    table, out = report
    front = pd.read_csv(out / "frontier.csv")
    assert sorted(front["alpha"].unique()) == [0, 0.5, 1]
    assert {"in_domain", "out_of_domain", "forget_kl"} <= set(front)
    lpft = front[front["method"] == "lpft"].set_index("alpha")
    assert lpft.loc[0, "forget_kl"] == 0 < lpft.loc[1, "forget_kl"]
    plain, interpolated = inside.split_interpolation(table)
    assert len(interpolated) and plain["alpha"].isna().all()
    ba = pd.read_csv(out / "before_after.csv")
    after = plain[(plain["stage"] == "after") & (plain["metric"] == "acc") & (plain["eval_set"] == "test")]
    shown = ba[(ba["metric"] == "acc") & (ba["eval_set"] == "test")]
    assert sorted(shown["after"].round(9)) == sorted(after["value"].round(9))  # the real after, not a blend
