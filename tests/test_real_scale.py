"""Catalogue models at their real size on the CPU: a random stand-in of the real architecture and
shape (`ftdyn.models.stand_ins`) runs a LoRA job through the user's own command path, with evaluation
before and after and forgetting on.

- Pythia-160m's shape (GPT-NeoX, 162M parameters) is `slow`: part of `make test`.
- OLMo-1B's shape (1.18B parameters) is `scale`: `make test-scale` only. It runs as its own
  process, so that its peak resident memory is the job's alone, and holds it to 10 GB.
Costs on this project's 2-core CPU are in docs/real-models.md.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
from pathlib import Path

import pytest
from conftest import PYTHON, REPO

from ftdyn.config.compose import compose_config
from ftdyn.models import stand_ins
from ftdyn.train import train

#: a job of a few steps, small sets: what a real-size job costs beyond its weights
FEW = ["task=syn_nli", "method=lora", "method.max_steps=2", "method.batch_size=4", "task.train_size=16",
       "task.eval_size=8", "fewshot.k=1", "model.text.path=null", "model.text.seq_len=64",
       "model.text.heldout_rows=4", "eval.every_n_steps=1", "eval.cross_tasks=[syn_summ]"]


def _stand_in(name: str, root: Path) -> list[str]:
    stand_ins.write(name, root, stand_ins.final_revision(name))
    return [f"model={name}", f"model.local_dir={root}"]


def _rows(job_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (job_dir / "results.jsonl").read_text().splitlines()]


def _check(rows: list[dict], name: str, adapted: str) -> None:
    value = {(r["stage"], r["eval_set"], r["metric"]): r["value"] for r in rows if r.get("shots") in (None, 1)}
    for stage in ("before", "after"):
        assert 0 <= value[(stage, "test", "acc")] <= 1
        assert value[(stage, "tinyworld_heldout", "pretrain_loss")] > 0
    assert value[("before", "tinyworld_heldout", "forget_kl")] == 0
    assert value[("after", "tinyworld_heldout", "forget_kl")] > 0  # two LoRA steps moved the model
    assert value[("step_2", "tinyworld_heldout", "forget_kl")] == pytest.approx(
        value[("after", "tinyworld_heldout", "forget_kl")], rel=1e-4)  # in-loop read the same base
    assert 0 <= value[("after", "syn_summ/test", "rougeL")] <= 1  # generation (24 new tokens) at this size
    assert value[("run", "run", "train_steps")] == 2
    assert {r["model"] for r in rows} == {name} and {r["lora_targets"] for r in rows} == {adapted}


@pytest.mark.slow
def test_a_lora_job_runs_on_pythia_160m_at_its_real_size(tmp_path):
    overrides = _stand_in("pythia160m", tmp_path / "pythia160m")
    train(compose_config(overrides + FEW), tmp_path / "job")
    assert (tmp_path / "job" / "done").exists()
    _check(_rows(tmp_path / "job"), "pythia160m", "dense,dense_4h_to_h,dense_h_to_4h,query_key_value")


@pytest.mark.scale
def test_a_lora_job_runs_on_olmo_1b_at_its_real_size_within_10_gb(tmp_path):
    overrides = _stand_in("olmo1b", tmp_path / "olmo1b")
    done = subprocess.run([PYTHON, "-m", "ftdyn.train", *overrides, *FEW, f"hydra.run.dir={tmp_path / 'job'}"],
                          cwd=REPO, env=os.environ, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20  # the job's peak; kB -> GiB
    assert peak_gb <= 10.0, f"peak resident memory {peak_gb:.1f} GiB"
    _check(_rows(tmp_path / "job"), "olmo1b", "down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,v_proj")
