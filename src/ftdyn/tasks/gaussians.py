"""The two-Gaussians toy's task (the CMU poster): numbers in, a number out (`task=two_gaussians`).

Pre-training is regression on an equal mixture of X1 ~ N(-1, 0.2) -> 0 and X2 ~ N(1, 0.2) -> 1
(0.2 read as the standard deviation; the poster does not say). Fine-tuning trains on X1 alone
with its target moved to -0.2; nothing in it mentions X2, so any change of the prediction on X2
is forgetting. Replay (`replay.rate`) mixes rows of the pre-training mixture into every batch
(`MixtureStream`, through `ftdyn.data.batches.ReplayPlan` as for language models), which anchors
X2 at 1.

Each draw has its own generator, seeded by purpose (`generator`), so one set's size never shifts
another's draws. Rows are `{"x": value, "y": target}`; an evaluation set's examples are its points
(`{"x": value}`), whose fine-tuning target is `FINETUNE_TARGETS[set]`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import torch

MEANS = {"x1": -1.0, "x2": 1.0}  #: the two Gaussians' means
STD = 0.2  #: their standard deviation
PRETRAIN_TARGETS = {"x1": 0.0, "x2": 1.0}
FINETUNE_TARGETS = {"x1": -0.2, "x2": 1.0}  #: fine-tuning moves X1's target; X2's is what it should keep


def generator(seed: int, purpose: str) -> torch.Generator:
    """A generator per purpose (training rows, evaluation points, replay, pre-training)."""
    return torch.Generator().manual_seed(zlib.crc32(f"{purpose}:{seed}".encode()))


def gaussian(name: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """n draws of Gaussian `name` (x1 or x2)."""
    return MEANS[name] + STD * torch.randn(n, generator=gen)


def mixture_rows(n: int, gen: torch.Generator) -> list[dict]:
    """n rows of the pre-training distribution: X1 or X2 with equal chance, and its target."""
    names = ["x1" if c == 0 else "x2" for c in torch.randint(0, 2, (n,), generator=gen).tolist()]
    noise = torch.randn(n, generator=gen).tolist()
    return [{"x": MEANS[s] + STD * e, "y": PRETRAIN_TARGETS[s]} for s, e in zip(names, noise)]


def pretrain_rows(n: int, seed: int) -> list[dict]:
    """The first n rows of the pre-training mixture of seed `seed`: what the MLP is pre-trained on."""
    return mixture_rows(n, generator(seed, "pretrain"))


class MixtureStream:
    """The pre-training distribution as an endless, re-iterable stream of rows (replay's source):
    each iteration starts from the same seed, so replay rows are the same in every run."""

    def __init__(self, seed: int):
        self.seed = seed

    def __iter__(self) -> Iterator[dict]:
        gen = generator(self.seed, "replay")
        while True:
            yield from mixture_rows(256, gen)


def evaluation_points(n: int, seed: int) -> dict[str, torch.Tensor]:
    """n evaluation points of each Gaussian, fixed by the seed."""
    return {name: gaussian(name, n, generator(seed, f"eval/{name}")) for name in MEANS}


def finetune_rows(train_size: int, seed: int) -> list[dict]:
    """The fine-tuning set: `train_size` points of X1 with the moved target."""
    x = gaussian("x1", train_size, generator(seed, "train"))
    return [{"x": v, "y": FINETUNE_TARGETS["x1"]} for v in x.tolist()]
