"""Batches for training: collation (one function per kind of batch: padded token rows `collate`,
packed token rows `ftdyn.data.packing.collate_packed`, number rows `collate_numbers`), the replay
plan, resumable batch samplers, streamed replay rows, and the LightningDataModules that feed every
training phase and every pre-training (`TrainDataModule`, `NumberData`).

Replay (rate rho in [0, 1)) mixes pre-training text into fine-tuning: a fraction rho of every
training batch is packed LM rows (every token labelled), the rest task examples. Rows carry a
`replay` marker and batches an `is_replay` vector, so the training step can tell them apart.
Replay rows are streamed, never pooled: `ReplayPlan` says per batch how many rows are replay,
and `ReplayRows` reads that many next rows of the pre-training stream (`ftdyn.data.text.pretrain_stream`,
`ftdyn.data.text.text_stream`), so memory is the same at rate 0.1 and at 0.99999.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ftdyn.data.packing import collate_packed
from ftdyn.data.rows import IGNORE


def collate(rows: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad rows to the longest; padding is masked and unlabelled.

    `is_replay` (bool, one per row) is always present, all False without replay, so the
    training step can split task and replay rows without checking whether replay is on. Rows
    of head-based methods carry `class_label`, the index of their label word (-100 on replay rows).
    """
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    is_replay = torch.tensor([bool(r.get("replay", False)) for r in rows], dtype=torch.bool)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "is_replay": is_replay}
    if any("class_label" in r for r in rows):
        batch["class_label"] = torch.tensor([r.get("class_label", IGNORE) for r in rows], dtype=torch.long)
    return batch


def collate_numbers(rows: Sequence[dict]) -> dict[str, torch.Tensor]:
    """A batch of number rows (`{"x", "y"}`, the two-Gaussians toy's): inputs, targets, `is_replay`."""
    return {"x": torch.tensor([r["x"] for r in rows]), "y": torch.tensor([r["y"] for r in rows]),
            "is_replay": torch.tensor([bool(r.get("replay", False)) for r in rows])}


class ReplayPlan(Sequence[tuple[int, int]]):
    """(task rows, replay rows) of each batch of one epoch, until the task rows are used up,
    computed per batch: the epoch is never listed, so its length does not cost memory.

    Batch i holds r_i = round((i+1)*rate*B) - round(i*rate*B) replay rows (a Bresenham
    accumulator), so after i full batches exactly round(i*rate*B) rows are replay: every prefix
    is within half a row of `rate` times its rows, and no batch is more than one row off. The last
    batch may hold fewer task rows than a full one; its replay count then keeps the epoch's
    total at round(rate/(1-rate) * n_task), rather than adding a full batch's share of replay
    to a few task rows. Near rate 1 a full batch may hold no task row at all.

    After k full batches T(k) = k*B - round(k*rate*B) task rows are used. T never decreases, so
    the epoch's length, the smallest k with T(k) >= n_task, is found by bisection.

    Args:
        n_task: Task rows in one epoch (each used once).
        batch_size: Rows in a full batch.
        rate: Replay fraction rho, in [0, 1).
    """

    def __init__(self, n_task: int, batch_size: int, rate: float):
        if not 0 <= rate < 1:
            raise ValueError(f"replay rate {rate}: allowed [0, 1)")
        if batch_size <= 0:
            raise ValueError(f"batch_size {batch_size}: must be > 0")
        self.n_task, self.batch_size, self.rate = n_task, batch_size, rate
        self._len = self._bisect_length()

    def replay_through(self, k: int) -> int:
        """Replay rows in batches 0..k-1, for k up to the last full batch."""
        return round(k * self.rate * self.batch_size)

    def tasks_through(self, k: int) -> int:
        """Task rows in batches 0..k-1, for k up to the last full batch."""
        return k * self.batch_size - self.replay_through(k)

    def _bisect_length(self) -> int:
        # T(k) >= k*B*(1-rate) - 1/2, so T(hi) >= n_task + 1/2 at this hi
        lo, hi = 0, math.ceil((self.n_task + 1) / (self.batch_size * (1 - self.rate))) + 1
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if self.tasks_through(mid) < self.n_task else (lo, mid)
        return lo

    def __len__(self) -> int:
        return self._len

    def _batch(self, i: int) -> tuple[int, int]:
        if not 0 <= i < self._len:
            raise IndexError(f"batch {i} of an epoch of {self._len}")
        used, replayed = self.tasks_through(i), self.replay_through(i)
        if i < self._len - 1 or self.tasks_through(i + 1) == self.n_task:  # a full batch
            return self.batch_size - self.replay_through(i + 1) + replayed, self.replay_through(i + 1) - replayed
        n_tasks = self.n_task - used  # the last, partial batch
        target = round(self.rate / (1 - self.rate) * self.n_task)
        return n_tasks, max(0, min(self.batch_size - n_tasks, target - replayed))

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._batch(j) for j in range(*i.indices(self._len))]
        return self._batch(i + self._len if i < 0 else i)

    def replay_rows(self) -> int:
        """Replay rows in the whole epoch."""
        return self.replay_through(self._len - 1) + self[-1][1] if self._len else 0

    def replay_fraction(self) -> float:
        """Replay rows / all rows over one epoch."""
        replayed = self.replay_rows()
        return replayed / (self.n_task + replayed) if replayed else 0.0


class _Shard(Sequence[list[int]]):
    """One rank's batches of a pass: every `world_size`-th from `rank` on, wrapping round so
    every rank has `length` of them."""

    def __init__(self, batches: Sequence[list[int]], rank: int, world_size: int, length: int):
        self.batches, self.rank, self.world_size, self.length = batches, rank, world_size, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> list[int]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        return self.batches[(self.rank + self.world_size * i) % len(self.batches)]


class ResumableBatches(Sampler[list[int]]):
    """Seeded batches that can start at any optimiser step, so a resumed job sees the same batches.

    Subclasses draw one pass (epoch) of batches from `self.generator` in `_epoch`, as a sequence
    that may compute each batch only when it is asked for. The first iteration draws `skip`
    batches' worth of passes from the seed and starts at the batch after them: the generator
    then stands exactly where an uninterrupted run's would, and no state beyond the step count
    (which Lightning's checkpoint restores) is needed. Lightning cannot do this for a plain
    sampler: on a mid-epoch resume it would restart the epoch from its first batch.

    Under DDP (`world_size` > 1) every rank draws the same pass and takes every `world_size`-th
    batch from its `rank` on, wrapping round so all ranks take the same number: Lightning's
    DistributedSampler cannot be injected into a batch sampler, so the sharding happens here.
    """

    def __init__(self, seed: int, skip: int = 0, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)
        self.skip, self.rank, self.world_size = skip, rank, world_size
        self.passes = 0  #: passes drawn so far

    def _epoch(self, number: int) -> Sequence[list[int]]:
        """The batches of pass `number` (0 first), drawn from `self.generator`."""
        raise NotImplementedError

    def _n_batches(self) -> int:
        """Batches in one pass, over all ranks."""
        raise NotImplementedError

    def __len__(self) -> int:
        """Batches in one pass for this rank."""
        return -(-self._n_batches() // self.world_size)

    def _next_pass(self) -> Sequence[list[int]]:
        batches = self._epoch(self.passes)
        self.passes += 1
        return batches if self.world_size == 1 else _Shard(batches, self.rank, self.world_size, len(self))

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._next_pass()
        while self.skip >= len(batches):  # whole passes finished before the resume
            self.skip -= len(batches)
            batches = self._next_pass()
        start, self.skip = self.skip, 0
        for i in range(start, len(batches)):
            yield batches[i]


class ShuffledBatches(ResumableBatches):
    """Shuffled batches of `n` rows, identical to `DataLoader(shuffle=True, generator=seeded)`'s.

    Each pass draws what that loader draws from its generator under a Trainer: the iterator's
    base seed (one int64, unused without workers), then `RandomSampler`'s permutation, then its
    empty tail permutation, which only a partial last batch reaches (Lightning stops asking at
    `len()`, so with full batches it is never drawn).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, skip: int = 0, rank: int = 0, world_size: int = 1):
        super().__init__(seed, skip, rank, world_size)
        self.n, self.batch_size = n, batch_size

    def _n_batches(self) -> int:
        return -(-self.n // self.batch_size)

    def _epoch(self, number: int) -> list[list[int]]:
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)  # the DataLoader's base seed
        order = torch.randperm(self.n, generator=self.generator).tolist()
        if self.n % self.batch_size:
            torch.randperm(self.n, generator=self.generator)  # RandomSampler's tail, reached by the partial batch
        return [order[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)]


class LengthBucketedBatches(ShuffledBatches):
    """Shuffled batches of rows of similar length, so a padded batch holds little padding.

    Each pass draws `ShuffledBatches`' permutation, sorts each window of `window` batches' rows
    by length (longest first), cuts the window into batches and shuffles the order of all the
    pass's batches (transformers' `group_by_length` does the same with windows of 50 batches).
    Batches hold other examples together than plain shuffling would, so this changes what a
    step trains on: it is a setting of the run (`trainer.bucket_by_length`), not of its speed.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, skip: int = 0, rank: int = 0,
                 world_size: int = 1, window: int = 50):
        super().__init__(len(lengths), batch_size, seed, skip, rank, world_size)
        self.lengths, self.window = list(lengths), window

    def _epoch(self, number: int) -> list[list[int]]:
        order = [i for batch in super()._epoch(number) for i in batch]
        span = self.window * self.batch_size
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start:start + span], key=lambda i: -self.lengths[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()]


class _ReplayEpoch(Sequence[list[int]]):
    """The batches of one replay pass, each built when asked for: batch i takes the next task rows
    of the pass's permutation and the next replay positions, both counted in O(1) by the plan."""

    def __init__(self, plan: ReplayPlan, tasks: list[int], first_replay: int):
        self.plan, self.tasks, self.first_replay = plan, tasks, first_replay

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> list[int]:
        n_tasks, n_replay = self.plan[i]
        t, r = self.plan.tasks_through(i), self.first_replay + self.plan.replay_through(i)
        return self.tasks[t:t + n_tasks] + list(range(r, r + n_replay))


class ReplayBatchSampler(ResumableBatches):
    """Batches that follow `ReplayPlan`: task rows are indices below `n_task`, replay rows
    `n_task + p` for the p-th row of the replay stream.

    Each pass (epoch) shuffles the task rows, each used exactly once, with a permutation drawn
    from one generator seeded once with `seed`, as a shuffled DataLoader does: every epoch has a
    new order, and the k-th pass is the same for the same seed. Replay rows are not shuffled:
    they come in stream order, and every epoch takes the stream's next rows (pass k starts at
    row k * rows-per-epoch), so no row is held or drawn twice until the stream itself cycles.
    Batch sizes do not depend on the order, so `len` and `replay_fraction` need no pass.
    """

    def __init__(self, n_task: int, batch_size: int, rate: float, seed: int = 0, skip: int = 0,
                 rank: int = 0, world_size: int = 1):
        super().__init__(seed, skip, rank, world_size)
        if n_task <= 0:
            raise ValueError(f"replay needs task rows (got {n_task})")
        self.n_task = n_task
        self.plan = ReplayPlan(n_task, batch_size, rate)

    def _n_batches(self) -> int:
        return len(self.plan)

    def _epoch(self, number: int) -> _ReplayEpoch:
        tasks = torch.randperm(self.n_task, generator=self.generator).tolist()
        return _ReplayEpoch(self.plan, tasks, self.n_task + number * self.plan.replay_rows())

    def replay_fraction(self) -> float:
        """Replay rows / all rows over one epoch."""
        return self.plan.replay_fraction()


class ReplayRows:
    """Row p of an endless replay stream, read forward as batches ask for it: the source's rows
    in order, and from its first row again when a finite source ends. Each row is a marked copy
    (`replay`), so the source's rows are never modified.

    Only the reading position is kept. A position behind it (a new pass from the start, or a DDP
    rank's last batch wrapping round) restarts the source and reads forward again: time, never
    memory. A resumed run reads forward to its first batch's rows the same way.
    """

    def __init__(self, source: Iterable[dict]):
        self.source = source
        self._restart()

    def _restart(self) -> None:
        self._rows, self._next = self._cycle(), 0

    def _cycle(self) -> Iterator[dict]:
        while True:
            empty = True
            for row in self.source:
                empty = False
                yield row
            if empty:
                raise ValueError("the replay source yields no rows")

    def __getitem__(self, position: int) -> dict:
        if position < self._next:
            self._restart()
        next(islice(self._rows, position - self._next, position - self._next), None)  # skip ahead
        self._next = position + 1
        return {**next(self._rows), "replay": True}


class _TaskAndReplayRows(Dataset):
    """Map-style rows for `ReplayBatchSampler`'s indices: below `len(rows)` a task row, above
    it a replay row by its stream position."""

    def __init__(self, rows: list[dict], replay: ReplayRows | None):
        self.rows, self.replay = rows, replay

    def __getitem__(self, index: int) -> dict:
        return self.rows[index] if index < len(self.rows) else self.replay[index - len(self.rows)]


class StepResumedLoader(DataLoader):
    """A DataLoader that Lightning treats as resumable (it has `state_dict` / `load_state_dict`).

    It keeps no state of its own: where it starts is the trainer's restored step, which
    `TrainDataModule.train_dataloader` hands to the batch sampler.
    """

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class TrainDataModule(L.LightningDataModule):
    """Encoded training rows, shuffled with a fixed seed, padded per batch, optionally with replay.

    Without replay (rate 0, the default) batches are plain seeded shuffling, exactly as before
    replay existed, so ladder builds and replay-free runs are unchanged. With replay, batches
    come from `ReplayBatchSampler`: shuffled task rows, and replay rows read in order from the
    replay stream as the batches need them, so memory does not grow with the rate.
    """

    def __init__(self, rows: list[dict], batch_size: int, pad_id: int, seed: int = 0, *,
                 replay_rows: Iterable[dict] | None = None, replay_rate: float = 0.0,
                 packing: bool = False, pack_width: int = 0, bucket_by_length: bool = False):
        """Keep the rows; replay is on when `replay_rate` > 0, and then needs `replay_rows`.

        Args:
            rows: Encoded task rows (`input_ids`, `labels`).
            batch_size: Rows per batch, task and replay together.
            pad_id: Token id that pads rows to a batch's longest.
            seed: Seed of the shuffling.
            replay_rows: Packed pre-training rows (every token labelled), re-iterable from the
                start: a list, or a stream such as `pretrain_stream`; read in order and cycled.
                Used when `replay_rate` > 0, ignored otherwise.
            replay_rate: Fraction rho of every batch drawn from `replay_rows`, in [0, 1).
            packing: Pack each batch's rows into rows of `pack_width` tokens with per-example
                attention (`ftdyn.data.packing`) instead of padding them: the same loss, no padding.
            pack_width: Tokens per packed row (0: each batch's longest row).
            bucket_by_length: Batch rows of similar length (`LengthBucketedBatches`); not with replay.
        """
        super().__init__()
        if not rows:
            raise ValueError("no training rows: the task's train split is empty")
        if not 0 <= replay_rate < 1:
            raise ValueError(f"replay_rate={replay_rate}: allowed [0, 1)")
        if replay_rate > 0 and not replay_rows:
            raise ValueError(f"replay_rate={replay_rate} but no replay rows were given")
        self.rows, self.batch_size, self.pad_id, self.seed = rows, batch_size, pad_id, seed
        self.replay_rate = replay_rate
        self.replay_rows = replay_rows if replay_rate > 0 else None
        if bucket_by_length and self.replay_rows is not None:
            raise ValueError("trainer.bucket_by_length=true does not combine with replay (replay.rate > 0): "
                             "replay batches follow the replay plan")
        self.packing, self.pack_width, self.bucket_by_length = packing, pack_width, bucket_by_length

    def _batch_sampler(self, skip: int = 0, rank: int = 0, world_size: int = 1) -> ResumableBatches:
        if self.replay_rows is not None:
            return ReplayBatchSampler(len(self.rows), self.batch_size, self.replay_rate,
                                      seed=self.seed, skip=skip, rank=rank, world_size=world_size)
        if self.bucket_by_length:
            return LengthBucketedBatches([len(r["input_ids"]) for r in self.rows], self.batch_size, seed=self.seed,
                                         skip=skip, rank=rank, world_size=world_size)
        return ShuffledBatches(len(self.rows), self.batch_size, seed=self.seed, skip=skip, rank=rank,
                               world_size=world_size)

    def steps_per_epoch(self) -> int:
        """Batches in one epoch over all ranks (each rank takes its share), which sizes the LR schedule."""
        return len(self._batch_sampler())

    def replay_fraction(self) -> float:
        """Realised share of replay rows over one epoch (0.0 without replay), for the results."""
        return self._batch_sampler().replay_fraction() if self.replay_rows is not None else 0.0

    def train_dataloader(self) -> DataLoader:
        """Batches from the first one not yet trained on: a Trainer resumed from a checkpoint at
        step N has `global_step` N here, so its first batch is an uninterrupted run's N+1-th.

        The loader gets a throwaway generator for its per-pass base seed, so iterating never
        advances the global RNG (which LoRA initialisation draws from). Each loader reads the
        replay stream from its start.
        """
        done = self.trainer.global_step if self.trainer is not None else 0
        ranks = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        replay = ReplayRows(self.replay_rows) if self.replay_rows is not None else None
        return StepResumedLoader(_TaskAndReplayRows(self.rows, replay), batch_sampler=self._batch_sampler(done, *ranks),
                                 generator=torch.Generator(), collate_fn=self.collate)

    def collate(self, rows: Sequence[dict]) -> dict:
        """One training batch: packed (`ftdyn.data.packing.collate_packed`) or padded (`collate`)."""
        if self.packing:
            return collate_packed(rows, self.pad_id, self.pack_width)
        return collate(rows, self.pad_id)


class NumberData(TrainDataModule):
    """`TrainDataModule`'s batching (seeded shuffling, `ReplayPlan`, resumable) over number rows
    (`collate_numbers`): the two-Gaussians toy's pre-training and fine-tuning."""

    def __init__(self, rows: list[dict], batch_size: int, seed: int = 0, *,
                 replay_rows: Iterable[dict] | None = None, replay_rate: float = 0.0):
        super().__init__(rows, batch_size, pad_id=0, seed=seed, replay_rows=replay_rows, replay_rate=replay_rate)

    def collate(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        return collate_numbers(rows)
