"""Replay mixing: a fraction rho of every training batch is pre-training text, the rest task rows.

Replay rows are streamed: batch i takes the stream's next rows, counted per batch by the plan,
so neither the rows nor the epoch's list of batches is ever held, at any rate.
"""

from __future__ import annotations

import json
import os
import subprocess
from itertools import count, islice
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import PYTHON
from torch.utils.data import DataLoader

from ftdyn.data.batches import ReplayPlan, TrainDataModule, collate

B = 8
PAD = 0


def _task_rows(n: int) -> list[dict]:
    """Task rows whose first token is a unique id in [1000, 1000 + n)."""
    return [{"input_ids": [1000 + i, 2, 3], "labels": [-100, 2, 3]} for i in range(n)]


def _replay_rows(n: int) -> list[dict]:
    """Packed LM rows (every token labelled) whose first token is a unique id in [5000, 5000 + n)."""
    return [{"input_ids": [5000 + i, 7, 8, 9], "labels": [5000 + i, 7, 8, 9]} for i in range(n)]


def _is_task(first_token: int) -> bool:
    return 1000 <= first_token < 5000


def _batches(data: TrainDataModule) -> list[dict[str, torch.Tensor]]:
    return list(data.train_dataloader())


def _replay_module(n_task: int = 800, rate: float = 0.1, seed: int = 0, n_replay: int = 50) -> TrainDataModule:
    return TrainDataModule(_task_rows(n_task), B, PAD, seed=seed, replay_rows=_replay_rows(n_replay),
                           replay_rate=rate)


def test_replay_fraction_is_within_one_row_per_batch_for_every_prefix():
    data = _replay_module()
    replayed = total = 0
    for batch in _batches(data):
        replayed += int(batch["is_replay"].sum())
        total += batch["input_ids"].shape[0]
        assert abs(replayed / total - 0.1) <= 1 / B, (replayed, total)
    assert abs(replayed / total - 0.1) <= 1 / B
    # 800 task rows at rho=0.1: ceil(800 / 7.2) = 112 batches, round(0.1 * 8 * 111) = 89 replay rows
    # in the 111 full ones, and the last batch's 8 task rows bring the total to round(800 / 9) = 89.
    assert (total, replayed) == (889, 89)
    assert data.replay_fraction() == pytest.approx(replayed / total)
    assert data.replay_fraction() == pytest.approx(89 / 889)


def test_full_batches_follow_the_bresenham_accumulator():
    plan = ReplayPlan(800, B, 0.1)
    cumulative = 0
    for i, (n_task, n_replay) in enumerate(plan[:-1]):
        assert n_task + n_replay == B
        cumulative += n_replay
        assert cumulative == round((i + 1) * 0.1 * B)
    assert [r for _, r in plan[:5]] == [1, 1, 0, 1, 1]  # 0.8, 1.6, 2.4, 3.2, 4.0 rounded
    assert sum(t for t, _ in plan) == 800


def test_every_task_row_appears_exactly_once_per_epoch():
    data = _replay_module()
    loader = data.train_dataloader()
    epochs = []
    for _ in range(2):
        firsts = [int(i) for batch in loader for i, rep in zip(batch["input_ids"][:, 0], batch["is_replay"])
                  if not rep]
        assert sorted(firsts) == list(range(1000, 1800))
        epochs.append(firsts)
    assert epochs[0] != epochs[1]  # each epoch draws a new order


def test_replay_rows_cycle_through_all_of_them():
    data = _replay_module(n_replay=50)  # 89 replay rows per epoch from 50: every one at least once
    firsts = [int(i) for batch in _batches(data) for i, rep in zip(batch["input_ids"][:, 0], batch["is_replay"])
              if rep]
    assert len(firsts) == 89 and set(firsts) == set(range(5000, 5050))
    assert max(firsts.count(f) for f in set(firsts)) == 2


def test_rate_zero_is_plain_shuffling_without_replay():
    rows = _task_rows(100)
    data = TrainDataModule(rows, B, PAD, seed=3, replay_rows=_replay_rows(50), replay_rate=0.0)
    batches = _batches(data)
    plain = list(DataLoader(rows, batch_size=B, shuffle=True, generator=torch.Generator().manual_seed(3),
                            collate_fn=lambda b: collate(b, PAD)))
    assert len(batches) == len(plain) == data.steps_per_epoch() == 13
    for ours, theirs in zip(batches, plain):
        assert not ours["is_replay"].any()
        assert torch.equal(ours["input_ids"], theirs["input_ids"])
    firsts = sorted(int(i) for batch in batches for i in batch["input_ids"][:, 0])
    assert firsts == list(range(1000, 1100))
    assert data.replay_fraction() == 0.0


def test_positional_signature_still_works_without_replay():
    data = TrainDataModule(_task_rows(20), B, PAD, seed=0)
    batches = _batches(data)
    assert [b["input_ids"].shape[0] for b in batches] == [8, 8, 4]
    assert all(b["is_replay"].dtype == torch.bool and not b["is_replay"].any() for b in batches)


def test_is_replay_flags_match_the_rows():
    data = _replay_module()
    n_flagged = 0
    for batch in _batches(data):
        assert batch["is_replay"].dtype == torch.bool
        assert batch["is_replay"].shape == (batch["input_ids"].shape[0],)
        for ids, labels, rep in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), batch["is_replay"]):
            assert bool(rep) == (not _is_task(ids[0]))
            if rep:  # replay rows: every token labelled
                assert labels == ids
                n_flagged += 1
            else:
                assert labels[0] == -100
    assert n_flagged == 89


def test_replay_rows_of_the_caller_are_not_modified():
    replay = _replay_rows(5)
    TrainDataModule(_task_rows(10), B, PAD, replay_rows=replay, replay_rate=0.5)
    assert all("replay" not in r for r in replay)


def test_collate_keeps_its_keys_and_adds_is_replay():
    batch = collate([{"input_ids": [5, 6], "labels": [-100, 6]}, {"input_ids": [7], "labels": [7], "replay": True}],
                    pad_id=0)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "is_replay"}
    assert batch["input_ids"].tolist() == [[5, 6], [7, 0]]
    assert batch["is_replay"].tolist() == [False, True]


@pytest.mark.parametrize("n_task,rate", [(800, 0.1), (37, 0.1), (100, 0.3), (5, 0.5), (64, 0.9)])
def test_steps_per_epoch_equals_the_batches_yielded(n_task, rate):
    data = _replay_module(n_task=n_task, rate=rate)
    batches = _batches(data)
    assert data.steps_per_epoch() == len(batches) == len(data.train_dataloader())
    assert all(0 < b["input_ids"].shape[0] <= B for b in batches)
    replayed = sum(int(b["is_replay"].sum()) for b in batches)
    total = sum(b["input_ids"].shape[0] for b in batches)
    assert total - replayed == n_task
    assert data.replay_fraction() == pytest.approx(replayed / total)


def test_steps_per_epoch_at_rate_0_1():
    assert _replay_module(n_task=800, rate=0.1).steps_per_epoch() == 112  # ceil(800 / (8 * 0.9)) = 112


def test_same_seed_same_batches_other_seed_other_batches():
    def firsts(seed: int) -> list[list[int]]:
        return [b["input_ids"][:, 0].tolist() for b in _batches(_replay_module(seed=seed))]

    assert firsts(7) == firsts(7)
    assert firsts(7) != firsts(8)


def test_invalid_replay_settings_are_refused():
    with pytest.raises(ValueError, match="no replay rows"):
        TrainDataModule(_task_rows(10), B, PAD, replay_rate=0.1)
    with pytest.raises(ValueError, match="allowed"):
        TrainDataModule(_task_rows(10), B, PAD, replay_rows=_replay_rows(5), replay_rate=1.0)


# -- the plan is computed per batch, never listed ----------------------------------------------

def _walked_plan(n_task: int, batch_size: int, rate: float) -> list[tuple[int, int]]:
    """The plan as the epoch walk that defined it first: one batch after another."""
    plan: list[tuple[int, int]] = []
    used = replayed = 0
    while used < n_task:
        n_replay = round((len(plan) + 1) * rate * batch_size) - replayed
        n_tasks = batch_size - n_replay
        if n_task - used < n_tasks:  # the last, partial batch
            n_tasks = n_task - used
            n_replay = max(0, min(batch_size - n_tasks, round(rate / (1 - rate) * n_task) - replayed))
        plan.append((n_tasks, n_replay))
        used, replayed = used + n_tasks, replayed + n_replay
    return plan


@pytest.mark.parametrize("rate", [0, 0.01, 0.1, 0.125, 0.25, 1 / 3, 0.5, 0.75, 0.9, 0.99, 0.999])
@pytest.mark.parametrize("batch_size", [1, 3, 4, 8])
def test_the_plan_per_batch_equals_the_epoch_walk(batch_size, rate):
    for n_task in [1, 2, 5, 7, 37, 64, 100]:
        walked, plan = _walked_plan(n_task, batch_size, rate), ReplayPlan(n_task, batch_size, rate)
        assert len(plan) == len(walked) and list(plan) == walked and plan[-1] == walked[-1], n_task
        assert plan.replay_rows() == sum(r for _, r in walked)


def test_a_rate_near_one_has_its_length_and_fraction_without_a_walk():
    plan = ReplayPlan(40, B, 0.99999)  # 0.99999 * 8 = 7.99992 replay rows per batch: 8e-5 task rows
    assert len(plan) == 493_750  # 40 task rows after ceil(39.5 / 8e-5) full batches' rounding
    assert plan[0] == (0, B) and plan[-1] == (1, 7)
    assert plan.replay_rows() == 493_750 * B - 40
    assert plan.replay_fraction() == pytest.approx(1 - 40 / (493_750 * B))


class _Counting:
    """An endless replay source, re-iterable from its start: row p has first token 5000 + p."""

    def __iter__(self):
        return ({"input_ids": [5000 + p, 7], "labels": [5000 + p, 7]} for p in count())


def _streamed(n_task: int, rate: float, seed: int = 0) -> TrainDataModule:
    return TrainDataModule(_task_rows(n_task), B, PAD, seed=seed, replay_rows=_Counting(), replay_rate=rate)


def _firsts(batch: dict[str, torch.Tensor]) -> tuple[list[int], list[int]]:
    """First tokens of a batch's task rows and of its replay rows."""
    firsts, rep = batch["input_ids"][:, 0].tolist(), batch["is_replay"].tolist()
    return [f for f, r in zip(firsts, rep) if not r], [f for f, r in zip(firsts, rep) if r]


def test_streamed_batches_follow_the_plan_and_read_the_stream_in_order():
    data, plan = _streamed(40, 0.99), ReplayPlan(40, B, 0.99)
    loader = data.train_dataloader()
    assert len(loader) == len(plan) == data.steps_per_epoch() == 494  # ceil(39.5 / (8 * 0.01))
    for epoch in range(2):
        tasks = []
        for i, batch in enumerate(loader):
            task, replay = _firsts(batch)
            assert (len(task), len(replay)) == plan[i]
            start = 5000 + epoch * plan.replay_rows() + plan.replay_through(i)  # the next epoch reads on
            assert replay == list(range(start, start + plan[i][1])), (epoch, i)
            assert batch["is_replay"].sum() == plan[i][1]
            tasks += task
        assert sorted(tasks) == list(range(1000, 1040))


def test_a_rate_near_one_streams_its_first_batches_at_once():
    loader = _streamed(40, 0.99999).train_dataloader()
    assert len(loader) == 493_750
    first = list(islice(loader, 3))
    assert [_firsts(b) for b in first] == [([], list(range(5000 + 8 * i, 5008 + 8 * i))) for i in range(3)]


def _loader_from_step(data: TrainDataModule, step: int, rank: int = 0, world_size: int = 1) -> DataLoader:
    """The loader a Trainer restored at `step` gets (what `train_dataloader` reads of the trainer)."""
    data.trainer = SimpleNamespace(global_step=step, global_rank=rank, world_size=world_size)
    return data.train_dataloader()


@pytest.mark.parametrize("rank, world_size", [(0, 1), (1, 2)])
def test_a_resume_at_any_step_sees_the_uninterrupted_batches_replay_rows_included(rank, world_size):
    data = _streamed(60, 0.3, seed=4)  # 11 batches an epoch over all ranks, the last one partial
    whole = _loader_from_step(data, 0, rank, world_size)
    full = [_firsts(b) for _ in range(3) for b in whole]
    assert len(full) == 3 * -(-11 // world_size)
    for step in range(len(full)):
        resumed = _loader_from_step(data, step, rank, world_size)
        assert [_firsts(b) for _ in range(3) for b in resumed][:len(full) - step] == full[step:], step


def _run_measured(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, int]:
    """Run `python -m ftdyn.train ARGS` under a fresh wrapper process, which reports its only
    child's peak resident memory (bytes): RUSAGE_CHILDREN of this test process would also count
    every other child the session ever ran."""
    wrapper = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
               "print('peak_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")
    out = subprocess.run([PYTHON, "-c", wrapper, PYTHON, "-m", "ftdyn.train", *args], cwd=cwd, capture_output=True,
                         text=True, env={**os.environ, "FTDYN_OUT": str(cwd / "out")}, timeout=600)
    peak_kb = int(out.stdout.split("peak_kb")[-1])  # Linux reports ru_maxrss in KiB
    return out, peak_kb * 1024


@pytest.mark.slow  # a subprocess: seconds of imports, then 5 micro steps
def test_replay_rate_near_one_trains_in_flat_memory(micro_ladder, tmp_path):
    """Done-when of issue 12: before streaming this job built 4 million replay rows and a list of
    half a million batches, and was killed at 24 GB; now it reads 40 rows of the stream."""
    out, peak = _run_measured(["model=micro", "task.train_size=40", "task.eval_size=8", "fewshot.k=0",
                               "replay.rate=0.99999", "method.max_steps=5", f"hydra.run.dir={tmp_path / 'run'}"],
                              tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert peak < 2 * 1024 ** 3, f"peak RSS {peak / 1024 ** 2:.0f} MiB"
    [done] = list((tmp_path / "out").rglob("done"))
    facts = {r["metric"]: r["value"] for r in map(json.loads, (done.parent / "results.jsonl").read_text().splitlines())
             if r["stage"] == "run"}
    assert facts["train_steps"] == 5 and facts["replay_fraction"] == pytest.approx(1 - 40 / (493_750 * B))


def test_the_dry_run_counts_a_rate_near_one_without_listing_its_epoch():
    from ftdyn import config as C
    from ftdyn.config.compose import compose_config
    from ftdyn.runs.dryrun import planned_steps

    def steps(*overrides: str) -> int:
        base = ["model=micro", "task.train_size=40", "method.batch_size=8", "method.epochs=2"]
        return planned_steps(C.to_typed(compose_config([*base, *overrides])))

    assert steps("replay.rate=0.99999") == 2 * 493_750
    assert steps("replay.rate=0.99999", "method=lpft") == 2 * 493_750  # the probe stage takes no optimiser steps
    assert steps("replay.rate=0.99999", "method.max_steps=5") == 5
