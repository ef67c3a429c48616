"""Replay mixing: a fraction rho of every training batch is pre-training text, the rest task rows."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from ftdyn.data import TrainDataModule, collate, replay_plan

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
    plan = replay_plan(800, B, 0.1)
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
