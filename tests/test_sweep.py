"""A real Hydra multirun from another working directory: one finished job per checkpoint x task."""

from __future__ import annotations

import itertools
import json
import os
import subprocess

import pytest
from conftest import PYTHON

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "ftdyn.train", *args], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ), timeout=600)


def test_multirun_runs_one_job_per_checkpoint_and_task(micro_ladder, tmp_path):
    sweep = tmp_path / "sweep"
    out = _run(["-m", "ckpt=range", "model=micro", "task=syn_nli,syn_para", "task.train_size=64",
                "task.eval_size=20", "method.max_steps=4", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.rglob("done"))
    assert len(jobs) == 4 * 2
    grid = set()
    for job in jobs:
        rows = [json.loads(line) for line in (job / "results.jsonl").read_text().splitlines()]
        grid.add((rows[0]["ckpt_step"], rows[0]["task"]))
    assert grid == set(itertools.product([5, 10, 20, 40], ["syn_nli", "syn_para"]))

    report = subprocess.run([PYTHON, "-m", "ftdyn.report", str(sweep)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert report.stdout.splitlines()[-1] == f"results: {sweep.resolve()}"
    assert (sweep / "report" / "results.csv").is_file()


def test_single_run_from_any_directory_writes_under_it(micro_ladder, tmp_path, monkeypatch):
    monkeypatch.delenv("FTDYN_OUT")  # the default: outputs/ in the working directory
    out = _run(["model=micro", "task.train_size=32", "task.eval_size=10", "method.max_steps=2"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    done = list((tmp_path / "outputs" / "runs").glob("*/done"))
    assert len(done) == 1 and len(list((tmp_path / "outputs" / "jobs").glob("*/done"))) == 1


def test_single_run_writes_under_ftdyn_out_wherever_it_starts(micro_ladder, tmp_path, outputs):
    out = _run(["model=micro", "task.train_size=32", "task.eval_size=10", "method.max_steps=2"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list((outputs / "runs").glob("*/done"))) == 1 and len(list((outputs / "jobs").glob("*/done"))) == 1
    assert not (tmp_path / "outputs").exists()


def test_bad_value_exits_nonzero_naming_the_key_and_leaves_no_done_marker(micro_ladder, tmp_path):
    out = _run(["model=micro", "replay.rate=1.5"], cwd=tmp_path)
    assert out.returncode != 0
    assert "replay.rate=1.5: allowed [0, 1)" in out.stderr
    assert not list(tmp_path.rglob("done"))


def test_multirun_crosses_every_method_with_distinct_run_keys(micro_ladder, tmp_path):
    sweep = tmp_path / "methods"
    out = _run(["-m", "ckpt.step=20,40", "model=micro", "task=syn_nli", "method=sft,lora,lp,lpft,lplora",
                "task.train_size=32", "task.eval_size=12", "method.max_steps=2", f"hydra.sweep.dir={sweep}"],
               cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    keys = {}
    for done in sweep.rglob("done"):
        rows = [json.loads(line) for line in (done.parent / "results.jsonl").read_text().splitlines()]
        keys[(rows[0]["ckpt_step"], rows[0]["method"])] = rows[0]["run_key"]
    assert set(keys) == set(itertools.product([20, 40], ["sft", "lora", "lp", "lpft", "lplora"]))
    assert len(set(keys.values())) == 10


def test_ladder_command_shows_every_checkpoint(micro_ladder, tmp_path):
    out = subprocess.run([PYTHON, "-m", "ftdyn.pretrain", "model=micro"], cwd=tmp_path, capture_output=True,
                         text=True, env=dict(os.environ), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"ladder {micro_ladder}")
    assert [int(line.split()[0]) for line in lines[2:]] == [5, 10, 20, 40]
