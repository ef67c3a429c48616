"""Tokenisation and collation, in one place, and the LightningDataModule that feeds training.

An example becomes `prompt_ids + completion_ids`: the prompt with trailing whitespace removed,
then the completion with one leading space and the end-of-text token. Labels are -100 on the
prompt, so only the completion is trained (Amuro & Char's `encode_with_prompt_completion_format`,
seed-methods.md §1.4). The prompt goes through the encoder every evaluation prompt goes
through (`ftdyn.encoding.PromptEncoder`): a long one keeps its end. Evaluation scores the first
completion token at the last prompt position, so training and scoring see the same token boundary.

Replay (rate rho in [0, 1)) mixes pre-training text into fine-tuning: a fraction rho of every
training batch is packed LM rows (every token labelled), the rest task examples. Rows carry a
`replay` marker and batches an `is_replay` vector, so the training step can tell them apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler
from transformers import PreTrainedTokenizerBase

from ftdyn.config import HubSetConfig, ModelConfig, PretrainConfig, TextConfig
from ftdyn.encoding import Prompt, PromptEncoder
from ftdyn.world.corpus import corpus
from ftdyn.world.entities import make_world

IGNORE = -100


def completion_text(completion: str) -> str:
    """The completion as appended after a prompt: one leading space, no trailing space."""
    return " " + completion.strip()


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: Prompt | str, completion: str,
                max_len: int) -> dict[str, list[int]]:
    """Token ids and labels of prompt + completion + EOS in `max_len` tokens; labels only on the
    completion. The prompt is fitted by `PromptEncoder.fit` with room for completion + EOS."""
    completion_ids = tokenizer(completion_text(completion), add_special_tokens=False)["input_ids"]
    completion_ids = completion_ids + [tokenizer.eos_token_id]
    prompt_ids = PromptEncoder(tokenizer, max_len).fit(prompt, room=len(completion_ids)).ids
    return {"input_ids": prompt_ids + completion_ids,
            "labels": [IGNORE] * len(prompt_ids) + completion_ids}


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt | str, max_len: int) -> dict[str, list[int]]:
    """Token ids of a prompt alone, for head-based methods: no token is an LM target. The head
    reads the last prompt position, so nothing needs room after it."""
    ids = PromptEncoder(tokenizer, max_len).fit(prompt, room=0).ids
    return {"input_ids": ids, "labels": [IGNORE] * len(ids)}


def encode_text_rows(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], seq_len: int) -> list[dict]:
    """Pack documents, separated by EOS, into rows of exactly `seq_len` tokens, all labelled."""
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids + [tokenizer.eos_token_id])
    rows = [stream[i:i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]
    return [{"input_ids": row, "labels": list(row)} for row in rows]


def pretrain_rows(pretrain: PretrainConfig, tokenizer: PreTrainedTokenizerBase, n_rows: int,
                  seq_len: int) -> list[dict]:
    """The first `n_rows` packed rows of a ladder's pre-training stream: what the build trained
    on, and what replay rehearses."""
    world = make_world(pretrain.world_seed, pretrain.n_people)
    n_docs = n_rows * seq_len // 16  # documents average ~28 tokens; start generous
    while True:
        rows = encode_text_rows(tokenizer, corpus(world, pretrain.corpus_seed, n_docs), seq_len)
        if len(rows) >= n_rows:
            return rows[:n_rows]
        n_docs *= 2


def heldout_rows(pretrain: PretrainConfig, tokenizer: PreTrainedTokenizerBase) -> list[dict]:
    """Held-out pre-training text as packed LM rows: a document stream the build never trained on."""
    world = make_world(pretrain.world_seed, pretrain.n_people)
    return encode_text_rows(tokenizer, corpus(world, pretrain.corpus_seed + 10_000, pretrain.heldout_docs),
                            pretrain.seq_len)


def model_heldout_rows(model: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> list[dict]:
    """Held-out pre-training-distribution text of a model: tinyworld's for a ladder, the held-out
    split of `model.text` (e.g. wikitext-103 test) for a hub model, none if it names no text."""
    if model.source == "ladder":
        return heldout_rows(model.pretrain, tokenizer)
    if not model.text.path:
        return []
    return text_rows(model.text, model.text.heldout_split, tokenizer, model.text.heldout_rows, model.text.seq_len)


def heldout_name(model: ModelConfig) -> str:
    """The eval_set of a model's held-out text: `tinyworld_heldout` for ladders (contract 5),
    `<text dataset>_heldout` (e.g. `wikitext_heldout`) for hub models."""
    return f"{model.text.path.split('/')[-1]}_heldout" if model.source == "hub" and model.text.path \
        else "tinyworld_heldout"


def text_rows(text: TextConfig, split: str, tokenizer: PreTrainedTokenizerBase, n_rows: int,
              seq_len: int) -> list[dict]:
    """The first `n_rows` packed rows of a named text dataset's split (empty lines skipped),
    tokenising documents in doubling chunks until there are enough."""
    from ftdyn.tasks.hub import describe, load_split  # datasets is needed only here

    spec = HubSetConfig(path=text.path, name=text.name, split=split)
    ds = load_split(spec, text.local_dir)
    if text.field not in ds.column_names:
        raise KeyError(f"text dataset {describe(spec)} has no field {text.field!r}; its fields are "
                       f"{ds.column_names} (set model.text.field)")
    docs = [t for t in ds[text.field] if t and t.strip()]
    n_docs = 256
    while True:
        rows = encode_text_rows(tokenizer, docs[:n_docs], seq_len)
        if len(rows) >= n_rows or n_docs >= len(docs):
            break
        n_docs *= 2
    if not rows:
        raise ValueError(f"text dataset {describe(spec)}: its {len(docs)} non-empty documents make no "
                         f"row of {seq_len} tokens")
    return rows[:n_rows]


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


def replay_plan(n_task: int, batch_size: int, rate: float) -> list[tuple[int, int]]:
    """(task rows, replay rows) of each batch of one epoch, until the task rows are used up.

    Batch i holds r_i = round((i+1)*rate*B) - round(i*rate*B) replay rows (a Bresenham
    accumulator), so after i full batches exactly round(i*rate*B) rows are replay: every prefix
    is within half a row of `rate` times its rows, and no batch is more than one row off. The last
    batch may hold fewer task rows than a full one; its replay count then keeps the epoch's
    total at round(rate/(1-rate) * n_task), rather than adding a full batch's share of replay
    to a few task rows.

    Args:
        n_task: Task rows in one epoch (each used once).
        batch_size: Rows in a full batch.
        rate: Replay fraction rho, in [0, 1).

    Returns:
        One (n_task_rows, n_replay_rows) pair per batch.
    """
    if not 0 <= rate < 1:
        raise ValueError(f"replay rate {rate}: allowed [0, 1)")
    if batch_size <= 0:
        raise ValueError(f"batch_size {batch_size}: must be > 0")
    plan: list[tuple[int, int]] = []
    used = replayed = 0
    while used < n_task:
        n_replay = round((len(plan) + 1) * rate * batch_size) - replayed
        n_tasks = batch_size - n_replay
        if n_task - used < n_tasks:  # the last, partial batch
            n_tasks = n_task - used
            target = round(rate / (1 - rate) * (used + n_tasks))
            n_replay = max(0, min(batch_size - n_tasks, target - replayed))
        plan.append((n_tasks, n_replay))
        used, replayed = used + n_tasks, replayed + n_replay
    return plan


class ResumableBatches(Sampler[list[int]]):
    """Seeded batches that can start at any optimiser step, so a resumed job sees the same batches.

    Subclasses draw one pass (epoch) of batches from `self.generator` in `_epoch`. The first
    iteration replays `skip` batches' worth of passes from the seed without yielding them: the
    generator then stands exactly where an uninterrupted run's would, and no state beyond the
    step count (which Lightning's checkpoint restores) is needed. Lightning cannot do this for a
    plain sampler: on a mid-epoch resume it would restart the epoch from its first batch.

    Under DDP (`world_size` > 1) every rank draws the same pass and takes every `world_size`-th
    batch from its `rank` on, wrapping round so all ranks take the same number: Lightning's
    DistributedSampler cannot be injected into a batch sampler, so the sharding happens here.
    """

    def __init__(self, seed: int, skip: int = 0, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)
        self.skip, self.rank, self.world_size = skip, rank, world_size

    def _epoch(self) -> list[list[int]]:
        raise NotImplementedError

    def _n_batches(self) -> int:
        """Batches in one pass, over all ranks."""
        raise NotImplementedError

    def __len__(self) -> int:
        """Batches in one pass for this rank."""
        return -(-self._n_batches() // self.world_size)

    def _shard(self, batches: list[list[int]]) -> list[list[int]]:
        if self.world_size == 1:
            return batches
        return [batches[(self.rank + self.world_size * i) % len(batches)] for i in range(len(self))]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._shard(self._epoch())
        while self.skip >= len(batches):  # whole passes finished before the resume
            self.skip -= len(batches)
            batches = self._shard(self._epoch())
        start, self.skip = self.skip, 0
        yield from batches[start:]


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

    def _epoch(self) -> list[list[int]]:
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)  # the DataLoader's base seed
        order = torch.randperm(self.n, generator=self.generator).tolist()
        if self.n % self.batch_size:
            torch.randperm(self.n, generator=self.generator)  # RandomSampler's tail, reached by the partial batch
        return [order[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)]


class ReplayBatchSampler(ResumableBatches):
    """Batches of indices into `task_rows + replay_rows` that follow `replay_plan`.

    Indices below `n_task` are task rows, the rest replay rows. Each pass (epoch) shuffles the
    task rows, each used exactly once, and draws replay rows cycling through a fresh permutation
    of them. Both permutations come from one generator seeded once with `seed`, as a shuffled
    DataLoader does: every epoch has a new order, and the k-th pass is the same for the same
    seed. Batch sizes do not depend on the order, so `len` and `replay_fraction` need no pass.
    """

    def __init__(self, n_task: int, n_replay: int, batch_size: int, rate: float, seed: int = 0, skip: int = 0,
                 rank: int = 0, world_size: int = 1):
        super().__init__(seed, skip, rank, world_size)
        if n_task <= 0 or n_replay <= 0:
            raise ValueError(f"replay needs task and replay rows (got {n_task} and {n_replay})")
        self.n_task, self.n_replay = n_task, n_replay
        self.plan = replay_plan(n_task, batch_size, rate)

    def _n_batches(self) -> int:
        return len(self.plan)

    def _epoch(self) -> list[list[int]]:
        tasks = torch.randperm(self.n_task, generator=self.generator).tolist()
        replays = (torch.randperm(self.n_replay, generator=self.generator) + self.n_task).tolist()
        batches, t, r = [], 0, 0
        for n_tasks, n_replay in self.plan:
            batches.append(tasks[t:t + n_tasks] + [replays[(r + j) % self.n_replay] for j in range(n_replay)])
            t, r = t + n_tasks, r + n_replay
        return batches

    def replay_fraction(self) -> float:
        """Replay rows / all rows over one epoch."""
        return sum(r for _, r in self.plan) / sum(t + r for t, r in self.plan)


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
    come from `ReplayBatchSampler` over `rows + replay_rows`.
    """

    def __init__(self, rows: list[dict], batch_size: int, pad_id: int, seed: int = 0, *,
                 replay_rows: list[dict] | None = None, replay_rate: float = 0.0):
        """Keep the rows; replay is on when `replay_rate` > 0, and then needs `replay_rows`.

        Args:
            rows: Encoded task rows (`input_ids`, `labels`).
            batch_size: Rows per batch, task and replay together.
            pad_id: Token id that pads rows to a batch's longest.
            seed: Seed of the shuffling.
            replay_rows: Packed pre-training rows (every token labelled); used when
                `replay_rate` > 0, ignored otherwise.
            replay_rate: Fraction rho of every batch drawn from `replay_rows`, in [0, 1).
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
        # copies, so marking them does not touch the caller's rows (e.g. the held-out set)
        self.replay_rows = [{**r, "replay": True} for r in replay_rows or []] if replay_rate > 0 else []

    def _batch_sampler(self, skip: int = 0, rank: int = 0, world_size: int = 1) -> ResumableBatches:
        if self.replay_rows:
            return ReplayBatchSampler(len(self.rows), len(self.replay_rows), self.batch_size, self.replay_rate,
                                      seed=self.seed, skip=skip, rank=rank, world_size=world_size)
        return ShuffledBatches(len(self.rows), self.batch_size, seed=self.seed, skip=skip, rank=rank,
                               world_size=world_size)

    def steps_per_epoch(self) -> int:
        """Batches in one epoch over all ranks (each rank takes its share), which sizes the LR schedule."""
        return len(self._batch_sampler())

    def replay_fraction(self) -> float:
        """Realised share of replay rows over one epoch (0.0 without replay), for the results."""
        return self._batch_sampler().replay_fraction() if self.replay_rows else 0.0

    def train_dataloader(self) -> DataLoader:
        """Batches from the first one not yet trained on: a Trainer resumed from a checkpoint at
        step N has `global_step` N here, so its first batch is an uninterrupted run's N+1-th.

        The loader gets a throwaway generator for its per-pass base seed, so iterating never
        advances the global RNG (which LoRA initialisation draws from).
        """
        done = self.trainer.global_step if self.trainer is not None else 0
        ranks = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        return StepResumedLoader(self.rows + self.replay_rows, batch_sampler=self._batch_sampler(done, *ranks),
                          generator=torch.Generator(), collate_fn=lambda b: collate(b, self.pad_id))

