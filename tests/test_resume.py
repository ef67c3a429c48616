"""Sweeps that survive: a run store keyed by run_key, resume from checkpoints, skip/force, dry runs.

The done-when test kills a real sweep with a real signal after its first job is done and while
its second is training, runs the same command again, and checks that every job is done exactly
once and that the interrupted one resumed and matches an uninterrupted run.
"""

from __future__ import annotations

import functools
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
from conftest import MICRO, PYTHON
from torch.utils.data import DataLoader

from ftdyn import config as C
from ftdyn import files
from ftdyn import train as train_module
from ftdyn.config import keys
from ftdyn.config.compose import compose_config
from ftdyn.data.batches import (
    ReplayBatchSampler,
    ShuffledBatches,
    TrainDataModule,
    collate,
)
from ftdyn.eval.inloop import InLoopEval
from ftdyn.methods.checkpoints import JobClock, PhaseCheckpoints
from ftdyn.runs import results, store
from ftdyn.train import train

# A short LP-FT job: the probe (L-BFGS, no steps) then 16 ft steps (64 rows / 8 x 2 epochs), checkpoints every 2.
SHORT = ["model=micro", "task=syn_para", "task.train_size=64", "task.eval_size=8", "fewshot.k=0",
         "method.batch_size=8", "eval.every_n_steps=4", "trainer.checkpoint_every_n_steps=2"]


def _rows(job_dir: Path) -> list[dict]:
    return results.read_rows([job_dir / "results.jsonl"])


def _same_results(a: list[dict], b: list[dict]) -> None:
    """Every result row of `a` is in `b` with the same value (float tolerance), and no more;
    wall time and the resume fact aside."""
    def table(rows):
        return {(r["stage"], r["eval_set"], r["prompt"], r["metric"]): r["value"] for r in rows
                if r["metric"] not in (*results.TIMINGS, "resumed_from_step")}
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


def _clock_in_steps(monkeypatch) -> None:
    """Make `train`'s JobClock a fake one that moves one second per training batch and at no other
    time, so `wall_s` counts the batches whose work a job kept: exact, whatever the machine's load."""
    clock = FakeClock(0.0)
    original = InLoopEval.on_train_batch_end

    def ticking(self, trainer, module, *args):
        clock.now += 1.0
        original(self, trainer, module, *args)
    monkeypatch.setattr(InLoopEval, "on_train_batch_end", ticking)
    monkeypatch.setattr(train_module, "JobClock", functools.partial(JobClock, clock=clock))


def _run_facts(job_dir: Path) -> dict:
    return {r["metric"]: r["value"] for r in _rows(job_dir) if r["stage"] == "run"}


@pytest.mark.slow
@pytest.mark.parametrize("method, die_at, resumed_from, strategy",
                         [("lpft", 5, 4, "auto"), ("lplora", 7, 6, "auto"), ("lpft", 5, 4, "fsdp")])
def test_a_job_killed_mid_stage_resumes_and_matches_an_uninterrupted_run(micro_ladder, tmp_path, monkeypatch,
                                                                         process_group_cleanup, method, die_at,
                                                                         resumed_from, strategy):
    """lpft dies in ft (probe restored from its end checkpoint, ft from step 4 of 8 with replay off);
    lplora dies in lora (step 7, with replay), wraps LoRA again and resumes it from step 6. Sharded
    (fsdp, one rank here), the full checkpoint is loaded back into the sharded model.

    The job clock counts batches here (`_clock_in_steps`): the killed run's up to the checkpoint
    it resumed from, none after it (step `die_at` was lost), the resumed run's once. So wall_s is
    exactly the uninterrupted run's. Real seconds are not asserted on: they depend on the load."""
    _clock_in_steps(monkeypatch)
    overrides = SHORT + [f"method={method}", "method.epochs=1", "replay.rate=0.2" if method == "lplora" else "seed=0",
                         f"trainer.strategy={strategy}"]
    train(compose_config(overrides), tmp_path / "whole")
    with monkeypatch.context() as patch:
        _dies_at(patch, die_at)
        with pytest.raises(Killed):
            train(compose_config(overrides), tmp_path / "cut")
    assert not (tmp_path / "cut" / "done").exists()
    train(compose_config(overrides), tmp_path / "cut")
    whole, cut = _run_facts(tmp_path / "whole"), _run_facts(tmp_path / "cut")
    assert cut["resumed_from_step"] == resumed_from
    assert cut["wall_s"] == whole["wall_s"] == whole["train_steps"]
    _same_results(_rows(tmp_path / "whole"), _rows(tmp_path / "cut"))
    assert not (tmp_path / "cut" / "checkpoints").exists()  # trainer.keep=none once done


# The two-Gaussians toy through the same fit: 16 SGD steps with replay, in-loop rows every 4, checkpoints every 2.
TOY = ["model=mlp", "task=two_gaussians", "method.max_steps=16", "method.batch_size=8", "replay.rate=0.1",
       "optim=sgd", "method.lr=0.01", "eval.every_n_steps=4", "trainer.checkpoint_every_n_steps=2"]


def test_a_toy_job_killed_mid_fine_tuning_resumes_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    """The toy fine-tunes through the one fit, with its checkpoints: killed at step 7 (its last
    checkpoint at 6), the re-run resumes from step 6 and ends with the uninterrupted run's rows."""
    _clock_in_steps(monkeypatch)
    train(compose_config(TOY), tmp_path / "whole")
    with monkeypatch.context() as patch:
        _dies_at(patch, 7)
        with pytest.raises(Killed):
            train(compose_config(TOY), tmp_path / "cut")
    assert not (tmp_path / "cut" / "done").exists()
    assert (tmp_path / "cut" / "checkpoints" / "ft" / "last.ckpt").exists()
    train(compose_config(TOY), tmp_path / "cut")
    whole, cut = _run_facts(tmp_path / "whole"), _run_facts(tmp_path / "cut")
    assert cut["resumed_from_step"] == 6 and whole["train_steps"] == cut["train_steps"] == 16
    assert cut["wall_s"] == whole["wall_s"] == 16  # the clock counts each kept step once
    _same_results(_rows(tmp_path / "whole"), _rows(tmp_path / "cut"))
    assert {r["eval_set"] for r in _rows(tmp_path / "cut") if r["metric"] == "drift"} == {"x1", "x2"}


def test_keep_last_leaves_only_the_final_weights(micro_ladder, tmp_path):
    train(compose_config(MICRO + ["method=lpft", "method.max_steps=3", "task.eval_size=8",
                                  "trainer.checkpoint_every_n_steps=2", "trainer.keep=last"]), tmp_path)
    assert sorted(p.relative_to(tmp_path / "checkpoints").as_posix() for p in (tmp_path / "checkpoints").rglob("*")) == [
        "ft", "ft/end.ckpt"]
    weights = torch.load(tmp_path / "checkpoints" / "ft" / "end.ckpt", weights_only=False)
    assert weights["global_step"] == 3 and "head.weight" in weights["state_dict"]


def test_a_lora_stage_checkpoint_holds_its_adapters_and_head_not_the_frozen_base(micro_ladder, tmp_path):
    train(compose_config(MICRO + ["method=lorahead", "method.max_steps=3", "task.eval_size=8", "trainer.keep=last"]),
          tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "lora" / "end.ckpt", weights_only=False)["state_dict"]
    assert {"head.weight", "head.bias"} <= state.keys()
    assert all("lora_" in k or k.startswith("head.") for k in state), sorted(state)


def test_keep_policy_and_checkpoint_interval_do_not_change_the_run_key():
    key = keys.run_key(C.to_typed(compose_config(MICRO)))
    for extra in (["trainer.keep=all"], ["trainer.checkpoint_every_n_steps=7"]):
        assert keys.run_key(C.to_typed(compose_config(MICRO + extra))) == key
    # and the trainer fields are out of the hashed spec altogether, so adding one never re-keys a store
    spec_keys = keys.run_spec(C.to_typed(compose_config(MICRO)))
    assert "trainer.keep" not in spec_keys and "trainer.checkpoint_every_n_steps" not in spec_keys


# -- the job clock across processes ----------------------------------------------------------------

class FakeClock:
    """Seconds that pass only when a test moves them on. Its origin is arbitrary, as time.monotonic's
    is: a resumed process's readings have nothing to do with the killed one's."""

    def __init__(self, origin: float):
        self.now = origin

    def __call__(self) -> float:
        return self.now


def test_the_job_clock_counts_each_process_once_up_to_the_checkpoint_it_resumed_from():
    """Three processes of one job. Every number is a sum of binary fractions, so equality is exact."""
    first = JobClock(FakeClock(1000.0))
    first.clock.now += 2.5
    at_end_of_lp = first.state_dict()  # a finished stage's end.ckpt
    first.clock.now += 1.25
    at_step = first.state_dict()  # the next stage's last.ckpt
    first.clock.now += 0.5  # work after the last checkpoint: lost with the kill, not counted
    assert (at_end_of_lp, at_step) == ({"seconds": 2.5}, {"seconds": 3.75})

    second = JobClock(FakeClock(-7.0))
    second.clock.now += 0.25  # start-up and evaluation before the restore: spent by this process, counted
    second.load_state_dict(at_end_of_lp)  # restore the finished stage ...
    second.load_state_dict(at_step)  # ... then resume the next one, whose state already holds the first
    second.clock.now += 2.0
    assert second.seconds() == 3.75 + 0.25 + 2.0 and second.this_process() == 2.25
    killed_again = second.state_dict()
    second.clock.now += 8.0  # lost again

    third = JobClock(FakeClock(0.0))
    third.load_state_dict(killed_again)
    third.clock.now += 1.5
    assert third.seconds() == 6.0 + 1.5


def test_the_job_clock_reads_the_monotonic_clock_by_default():
    """Within a process only differences of readings are taken; the monotonic clock cannot jump
    when the system's wall clock is set."""
    assert JobClock().clock is time.monotonic


class _Ticks(L.Callback):
    """`per_batch` seconds of `clock` per training batch, then a kill at global step `die_at` (if any):
    after the tick, before that step's checkpoint (ModelCheckpoint runs after every other callback)."""

    def __init__(self, clock: FakeClock, per_batch: float, die_at: int | None = None):
        self.clock, self.per_batch, self.die_at = clock, per_batch, die_at

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.clock.now += self.per_batch
        if trainer.global_step == self.die_at:
            raise Killed(self.die_at)


def _clocked_stage(job_dir: Path, stage: str, steps: int, clock: JobClock, per_batch: float,
                   die_at: int | None = None) -> int:
    """One stage as `ftdyn.methods` runs it: restored if finished, else fitted from its last
    checkpoint (every 2 steps) and finished; the job clock rides in the checkpoints. Returns
    the number of batches trained."""
    checkpoints, module = PhaseCheckpoints(job_dir, stage, every_n_steps=2), _Seen()
    if checkpoints.finished():
        checkpoints.restore_finished(module, [clock])
        return 0
    rows = [{"input_ids": [i], "labels": [i]} for i in range(16)]
    trainer = L.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[_Ticks(clock.clock, per_batch, die_at), clock, *checkpoints.callbacks()])
    trainer.fit(module, TrainDataModule(rows, 4, 0, seed=0), ckpt_path=checkpoints.resume_path())
    checkpoints.finish(trainer)
    return len(module.seen)


def test_the_job_clock_rides_in_real_checkpoints_across_a_kill_and_a_resume(tmp_path):
    """An LP-FT-like job, lp (4 steps) then ft (6 steps), killed at ft step 5 and resumed. Each
    process spends 0.5 s starting up; a batch takes 1 s in the killed process, 0.25 s in the
    resumed one. Counted: 0.5 + 4 + 4 (the killed process, up to its ft checkpoint at step 4) and
    0.5 + 2 x 0.25 (the resumed one, which restores lp and resumes ft at step 4). Adding the two
    restored states, counting the lost step 5, or training ft again from step 0 would each show."""
    killed = JobClock(FakeClock(100.0))
    killed.clock.now += 0.5
    _clocked_stage(tmp_path, "lp", 4, killed, per_batch=1.0)
    with pytest.raises(Killed):
        _clocked_stage(tmp_path, "ft", 6, killed, per_batch=1.0, die_at=5)
    assert killed.seconds() == 9.5 and (tmp_path / "checkpoints" / "ft" / "last.ckpt").exists()

    resumed = JobClock(FakeClock(3.0))
    resumed.clock.now += 0.5
    assert _clocked_stage(tmp_path, "lp", 4, resumed, per_batch=0.25) == 0  # restored from its end.ckpt
    assert resumed.seconds() == (0.5 + 4) + 0.5
    assert _clocked_stage(tmp_path, "ft", 6, resumed, per_batch=0.25) == 2  # steps 5 and 6
    assert resumed.seconds() == (0.5 + 4 + 4) + (0.5 + 2 * 0.25)


# -- the run store: skip, force, lock ----------------------------------------------------------

def _fake_train(calls: list):
    """A stand-in for `train` that only writes what a finished job writes (the store logic under test)."""
    def run(cfg, job_dir):
        calls.append(job_dir)
        key = keys.run_key(cfg)
        results.write_rows(job_dir, [{"run_key": key, "metric": "n", "value": len(calls)}])
        results.mark_done(job_dir, key)
    return run


def test_a_done_job_is_skipped_and_force_runs_it_again(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FTDYN_OUT", str(tmp_path))
    calls: list = []
    cfg = compose_config(MICRO)
    key = keys.run_key(C.to_typed(cfg))
    assert store.run(cfg, tmp_path / "a", _fake_train(calls)) == "done"
    with caplog.at_level("INFO", logger="ftdyn.runs.store"):
        assert store.run(cfg, tmp_path / "b", _fake_train(calls)) == "done"
    assert len(calls) == 1 and f"skip {key}: done at {tmp_path / 'jobs' / key}" in caplog.text
    for job in ("a", "b"):  # every Hydra job dir looks finished to the report
        assert {p.name for p in (tmp_path / job).iterdir()} == {"config.yaml", "results.jsonl", "done"}
    store.run(compose_config(MICRO + ["+force=true"]), tmp_path / "c", _fake_train(calls))
    assert len(calls) == 2 and _rows(tmp_path / "c")[0]["value"] == 2


def test_a_second_process_on_the_same_job_waits_then_skips_it(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FTDYN_OUT", str(tmp_path))
    cfg = compose_config(MICRO)
    key = keys.run_key(C.to_typed(cfg))
    calls: list = []
    outcome = {}
    with caplog.at_level("INFO", logger="ftdyn.runs.store"):
        with files.file_lock(tmp_path / "jobs" / key / "lock"):  # another sweep is running this job
            second = threading.Thread(target=lambda: outcome.update(s=store.run(cfg, tmp_path / "b", _fake_train(calls))))
            second.start()
            _wait_until(lambda: f"wait {key}" in caplog.text)  # it found the lock held, however slow it started
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


def _wait_until(condition, timeout: float = 300) -> None:
    """Poll `condition` until it holds: an ordering between threads or processes is awaited, never
    assumed to take less than some time. `timeout` only stops a test that would hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not met after {timeout} s"
        time.sleep(0.02)


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
    sft, lpft = (keys.run_key(C.to_typed(compose_config(SHORT + [f"method={m}", "method.epochs=2"])))
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
    assert 0 < facts["resumed_from_step"] < 16  # part of ft (the probe takes no optimiser steps)

    whole = tmp_path / "whole"
    train(compose_config(SHORT + ["method=lpft", "method.epochs=2"]), whole)
    _same_results(_rows(whole), _rows(sweep / "1"))
