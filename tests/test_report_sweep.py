"""The report of a tiny real sweep (micro ladder, two LoRA ranks with in-loop rows), plus a failed
and a killed job beside it: every linked file exists, and no job goes missing."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pandas as pd
import pytest
from conftest import PYTHON

pytestmark = pytest.mark.slow


def test_report_of_a_real_sweep_links_only_files_it_wrote_and_lists_every_job(micro_ladder, tmp_path):
    sweep = tmp_path / "sweep"
    train = subprocess.run([PYTHON, "-m", "ftdyn.train", "-m", "model=micro", "task=syn_nli", "method=lora",
                            "method.rank=2,4", "method.max_steps=8", "eval.every_n_steps=2", "task.train_size=64",
                            "task.eval_size=20", f"hydra.sweep.dir={sweep}"],
                           cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    config = (sweep / "0" / "config.yaml").read_text()
    for name, marker in (("2", "failed.json"), ("3", None)):  # a failed job and a killed one
        (sweep / name).mkdir()
        (sweep / name / "config.yaml").write_text(config.replace("rank: 2", f"rank: 1{name}"))
    (sweep / "2" / "failed.json").write_text(json.dumps({"run_key": "k-oom", "reason": "out of memory", "step": 3}))

    out = subprocess.run([PYTHON, "-m", "ftdyn.report", str(sweep)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == f"results: {sweep.resolve()}"
    assert f"failed job: {sweep / '2'} (out of memory, step 3)" in out.stdout
    assert f"unfinished job (running or killed): {sweep / '3'}" in out.stdout

    report = sweep / "report"
    html = (report / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert {"performance_by_checkpoint.png", "forgetting_vs_loss.png"} <= set(images)
    assert all((report / src).is_file() and (report / src).stat().st_size > 1000 for src in images)
    assert all((report / href).is_file() for href in re.findall(r'href="([^"#]+)"', html))
    assert "Not in this sweep: needs cross_task rows" in html  # no eval.cross_tasks in this sweep

    jobs = pd.read_csv(report / "jobs.csv").set_index("job")["status"]
    assert jobs.to_dict() == {str(sweep / "0"): "finished", str(sweep / "1"): "finished",
                              str(sweep / "2"): "failed", str(sweep / "3"): "unfinished"}
    table = pd.read_parquet(report / "results.parquet")
    assert set(table["lora_rank"]) == {2, 4}
    law = pd.read_csv(report / "forgetting_law.csv")
    # 2 runs x in-loop steps 2, 4, 6, 8, of which the law leaves out each run's first round(50/260 * 8) = 2 steps
    assert law["n"].item() == 6 and 0 <= law["r2"].item() <= 1
    before_after = pd.read_csv(report / "before_after.csv")
    if list(sweep.rglob("examples.jsonl")):  # per-example scores (a later ftdyn writes them): intervals
        assert before_after["after_lo"].notna().any()
    else:  # this ftdyn writes none: no interval columns, and the page says why
        assert "before_lo" not in before_after
        assert "without intervals: no job wrote per-example scores" in html
