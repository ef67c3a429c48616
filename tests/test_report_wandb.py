"""Sweeps run with logger=wandb get the report's summary tables as W&B tables (offline here)."""

from __future__ import annotations

import json
import re

import pytest
from test_report import cross, lora_job, sft_job

from ftdyn.report import build_report


@pytest.fixture
def wandb_sweep(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    sweep = tmp_path / "sweep"
    sft_job(sweep, "0", "syn_nli", 10, cross("syn_summ/test", "rougeL", 0.40, 0.10), logger="wandb")
    lora_job(sweep, "1", 4, logger="wandb")
    return sweep


def test_wandb_sweep_logs_summary_tables_to_an_offline_report_run(wandb_sweep, tmp_path):
    out = tmp_path / "report"
    build_report([wandb_sweep], out)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    tables = {re.sub(r"_\d+_[0-9a-f]+\.table\.json$", "", p.name): p
              for p in (runs[0] / "files" / "media" / "table").glob("*.table.json")}
    assert {"jobs", "before_after", "mrc", "mrc_directions", "forgetting_law", "methods"} <= set(tables)
    mrc = json.loads(tables["mrc"].read_text())
    assert "mrc" in mrc["columns"]
    assert mrc["data"][0][mrc["columns"].index("mrc")] == pytest.approx(-0.75)


def test_csv_sweep_gets_no_wandb_run(tmp_path):
    sweep = tmp_path / "sweep"
    sft_job(sweep, "0", "syn_nli", 10, [])
    build_report([sweep], tmp_path / "report")
    assert not (tmp_path / "report" / "wandb").exists()
