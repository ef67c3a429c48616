"""Sweeps that survive: a run store keyed by run_key, resume from checkpoints, skip/force, dry runs.

The done-when test kills a real sweep with a real signal after its first job is done and while
its second is training, runs the same command again, and checks that every job is done exactly
once and that the interrupted one resumed and matches an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import MICRO, PYTHON
from ftdyn import config as C
from ftdyn import jobs, results
from ftdyn.batches import ReplayBatchSampler, ShuffledBatches, TrainDataModule, collate
from ftdyn.methods.inloop import InLoopEval
from ftdyn.train import compose_config, train

# A short LP-FT job: 8 probe steps then 16 ft steps (128 rows / 8 x 2 epochs), checkpoints every 2.
SHORT = ["model=micro", "task=syn_para", "task.train_size=64", "task.eval_size=8", "fewshot.k=0",
         "method.batch_size=8", "eval.every_n_steps=4", "trainer.checkpoint_every_n_steps=2"]


def _rows(job_dir: Path) -> list[dict]:
    return results.read_rows([job_dir / "results.jsonl"])


def _same_results(a: list[dict], b: list[dict]) -> None:
    """Every result row of `a` is in `b` with the same value (float tolerance), and no more;
    wall time and the resume fact aside."""
    def table(rows):
        return {(r["stage"], r["eval_set"], r["prompt"], r["metric"]): r["value"] for r in rows
                if r["metric"] not in ("wall_s", "resumed_from_step")}
    ta, tb = table(a), table(b)
    assert set(ta) == set(tb)
    for k in ta:
        assert tb[k] == pytest.approx(ta[k], rel=1e-4, abs=1e-5), k
    assert any(k[0].startswith("step_") and k[3] == "train_loss" for k in ta)  # the loss curve was compared


# -- batches resume where they stopped ---------------------------------------------------------

def test_shuffled_batches_equal_a_shuffled_dataloader_over_several_epochs():
    loader = DataLoader(list(range(21)), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(5))
    theirs = [b.tolist() for _ in range(3) for b in loader]
    sampler = ShuffledBatches(21, 4, seed=5)
    assert [b for _ in range(3) for b in sampler] == theirs and len(theirs) == 18


class _Seen(L.LightningModule):
    """Records the first token of every row of every batch a Trainer feeds it."""

    def __init__(self):
        super().__init__()
        self.w, self.seen = torch.nn.Linear(1, 1), []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["input_ids"][:, 0].tolist())
        return self.w(torch.ones(1, 1)).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("n_rows", [64, 61])  # full last batch (Lightning stops at len()) and a partial one
def test_a_trainer_sees_the_batches_of_a_shuffled_dataloader(n_rows):
    rows = [{"input_ids": [i], "labels": [i]} for i in range(n_rows)]
    seen = []
    for data in (DataLoader(rows, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(2),
                            collate_fn=lambda b: collate(b, 0)), TrainDataModule(rows, 8, 0, seed=2)):
        module = _Seen()
        L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False).fit(module, data)
        seen.append(module.seen)
    assert seen[0] == seen[1] and len(seen[0]) == 3 * -(-n_rows // 8)


@pytest.mark.parametrize("make", [lambda skip: ShuffledBatches(21, 4, seed=5, skip=skip),
                                  lambda skip: ReplayBatchSampler(20, 4, 0.25, seed=1, skip=skip)])
def test_batches_started_at_step_k_are_the_uninterrupted_ones_from_k(make):
    fresh = make(0)
    full = [b for _ in range(3) for b in fresh]
    for k in range(len(full)):
        resumed = make(k)
        assert [b for _ in range(3) for b in resumed][:len(full) - k] == full[k:], k


# -- resume inside one process -----------------------------------------------------------------

class Killed(Exception):
    """Stands in for a kill: raised after the in-loop step `at` (before that step's checkpoint)."""


def _dies_at(monkeypatch, at: int) -> None:
    original = InLoopEval.on_train_batch_end

    def dying(self, trainer, module, *args):
        original(self, trainer, module, *args)
        if self.offset + trainer.global_step == at:
            raise Killed(at)
    monkeypatch.setattr(InLoopEval, "on_train_batch_end", dying)


@pytest.mark.slow
@pytest.mark.parametrize("method, die_at, resumed_from, strategy",
                         [("lpft", 13, 12, "auto"), ("lplora", 7, 6, "auto"), ("lpft", 13, 12, "fsdp")])
def test_a_job_killed_mid_stage_resumes_and_matches_an_uninterrupted_run(micro_ladder, tmp_path, monkeypatch,
                                                                         process_group_cleanup, method, die_at,
                                                                         resumed_from, strategy):
    """lpft dies in ft (probe restored from its end checkpoint, ft from step 4 of 8 with replay off);
    lplora dies in the probe (step 6), then wraps LoRA and trains it after the resume. Sharded
    (fsdp, one rank here), the full checkpoint is loaded back into the sharded model."""
    overrides = SHORT + [f"method={method}", "method.epochs=1", "replay.rate=0.2" if method == "lplora" else "seed=0",
                         f"trainer.strategy={strategy}"]
    train(compose_config(overrides), tmp_path / "whole")
    started = time.time()
    with monkeypatch.context() as patch:
        _dies_at(patch, die_at)
        with pytest.raises(Killed):
            train(compose_config(overrides), tmp_path / "cut")
    assert not (tmp_path / "cut" / "done").exists()
    first, started = time.time() - started, time.time()
    train(compose_config(overrides), tmp_path / "cut")
    second = time.time() - started
    facts = {r["metric"]: r["value"] for r in _rows(tmp_path / "cut") if r["stage"] == "run"}
    assert facts["resumed_from_step"] == resumed_from
    assert second < facts["wall_s"] < first + second  # the killed run's time up to its checkpoint counts too
    _same_results(_rows(tmp_path / "whole"), _rows(tmp_path / "cut"))
    assert not (tmp_path / "cut" / "checkpoints").exists()  # trainer.keep=none once done


def test_keep_last_leaves_only_the_final_weights(micro_ladder, tmp_path):
    train(compose_config(MICRO + ["method=lpft", "method.max_steps=3", "task.eval_size=8",
                                  "trainer.checkpoint_every_n_steps=2", "trainer.keep=last"]), tmp_path)
    assert sorted(p.relative_to(tmp_path / "checkpoints").as_posix() for p in (tmp_path / "checkpoints").rglob("*")) == [
        "ft", "ft/end.ckpt"]
    weights = torch.load(tmp_path / "checkpoints" / "ft" / "end.ckpt", weights_only=False)
    assert weights["global_step"] == 3 and "head.weight" in weights["state_dict"]


def test_keep_policy_and_checkpoint_interval_do_not_change_the_run_key():
    key = results.run_key(C.to_typed(compose_config(MICRO)))
    for extra in (["trainer.keep=all"], ["trainer.checkpoint_every_n_steps=7"]):
        assert results.run_key(C.to_typed(compose_config(MICRO + extra))) == key
    # and the trainer fields are out of the hashed spec altogether, so adding one never re-keys a store
    spec_keys = results.run_spec(C.to_typed(compose_config(MICRO)))
    assert "trainer.keep" not in spec_keys and "trainer.checkpoint_every_n_steps" not in spec_keys


# -- the run store: skip, force, lock ----------------------------------------------------------

def _fake_train(calls: list):
    """A stand-in for `train` that only writes what a finished job writes (the store logic under test)."""
    def run(cfg, job_dir):
        calls.append(job_dir)
        key = results.run_key(cfg)
        results.write_rows(job_dir, [{"run_key": key, "metric": "n", "value": len(calls)}])
        results.mark_done(job_dir, key)
    return run


def test_a_done_job_is_skipped_and_force_runs_it_again(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FTDYN_OUT", str(tmp_path))
    calls: list = []
    cfg = compose_config(MICRO)
    key = results.run_key(C.to_typed(cfg))
    assert jobs.run(cfg, tmp_path / "a", _fake_train(calls)) == "done"
    with caplog.at_level("INFO", logger="ftdyn.jobs"):
        assert jobs.run(cfg, tmp_path / "b", _fake_train(calls)) == "done"
    assert len(calls) == 1 and f"skip {key}: done at {tmp_path / 'jobs' / key}" in caplog.text
    for job in ("a", "b"):  # every Hydra job dir looks finished to the report
        assert {p.name for p in (tmp_path / job).iterdir()} == {"config.yaml", "results.jsonl", "done"}
    jobs.run(compose_config(MICRO + ["+force=true"]), tmp_path / "c", _fake_train(calls))
    assert len(calls) == 2 and _rows(tmp_path / "c")[0]["value"] == 2


def test_a_second_process_on_the_same_job_waits_then_skips_it(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FTDYN_OUT", str(tmp_path))
    cfg = compose_config(MICRO)
    key = results.run_key(C.to_typed(cfg))
    calls: list = []
    outcome = {}
    with caplog.at_level("INFO", logger="ftdyn.jobs"):
        with results.file_lock(tmp_path / "jobs" / key / "lock"):  # another sweep is running this job
            second = threading.Thread(target=lambda: outcome.update(s=jobs.run(cfg, tmp_path / "b", _fake_train(calls))))
            second.start()
            time.sleep(1.0)
            assert second.is_alive() and not calls  # waiting, not running
            _fake_train(calls)(C.to_typed(cfg), tmp_path / "jobs" / key)  # the first one finishes
        second.join(10)
    assert outcome["s"] == "done" and len(calls) == 1
    assert f"wait {key}" in caplog.text and f"skip {key}" in caplog.text


# -- real sweeps ---------------------------------------------------------------------------------

def _sweep_cmd(sweep: Path, extra: list[str]) -> list[str]:
    return [PYTHON, "-m", "ftdyn.train", "-m", *SHORT, "method=sft,lpft", "method.epochs=2",
            f"hydra.sweep.dir={sweep}", *extra]


@pytest.mark.slow  # a subprocess: seconds of imports
def test_dry_run_lists_every_job_and_writes_nothing(micro_ladder, tmp_path):
    env = {**os.environ, "FTDYN_OUT": str(tmp_path / "out")}
    out = subprocess.run([PYTHON, "-m", "ftdyn.train", "-m", "ckpt=range", "model=micro", "task=syn_nli,syn_para",
                          "task.train_size=64", "method.batch_size=8", "+dry=true"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    jobs_listed = [line for line in lines if line.startswith("[")]
    assert len(jobs_listed) == 8 and all(" new " in line and " 8 steps " in line for line in jobs_listed)
    assert "8 jobs (8 new); to run: 64 train steps" in lines
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a subprocess: seconds of imports
def test_single_run_with_a_sweep_option_but_no_multirun_is_an_error(tmp_path):
    out = subprocess.run([PYTHON, "-m", "ftdyn.train", "ckpt=range", "model=micro"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "FTDYN_OUT": str(tmp_path)})
    assert out.returncode != 0
    assert "defines a sweep (ckpt.step=5,10,20,40" in out.stderr and "add -m (--multirun)" in out.stderr
    assert not list(tmp_path.rglob("done"))


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"sweep ended before {path} appeared"
        assert time.time() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_sweep_rerun_finishes_every_job_once_and_resumes_the_interrupted_one(micro_ladder, tmp_path):
    env = {**os.environ, "FTDYN_OUT": str(tmp_path / "out")}
    sweep = tmp_path / "sweep"
    store = tmp_path / "out" / "jobs"
    sft, lpft = (results.run_key(C.to_typed(compose_config(SHORT + [f"method={m}", "method.epochs=2"])))
                 for m in ("sft", "lpft"))
    first = subprocess.Popen(_sweep_cmd(sweep, []), cwd=tmp_path, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(store / lpft / "checkpoints" / "ft" / "last.ckpt", first)  # sft done, lpft mid-ft
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    assert (store / sft / "done").exists() and not (store / lpft / "done").exists()
    sft_mtime = (store / sft / "results.jsonl").stat().st_mtime_ns

    again = subprocess.run(_sweep_cmd(sweep, []), cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"skip {sft}: done at" in again.stderr + again.stdout
    assert (store / sft / "results.jsonl").stat().st_mtime_ns == sft_mtime  # not run again
    assert sorted(p.parent.name for p in sweep.glob("*/done")) == ["0", "1"]
    assert {json.loads((sweep / n / "done").read_text())["run_key"] for n in "01"} == {sft, lpft}
    facts = {r["metric"]: r["value"] for r in _rows(store / lpft) if r["stage"] == "run"}
    assert 8 < facts["resumed_from_step"] < 8 + 16  # the probe's 8 steps, then part of ft

    whole = tmp_path / "whole"
    train(compose_config(SHORT + ["method=lpft", "method.epochs=2"]), whole)
    _same_results(_rows(whole), _rows(sweep / "1"))
