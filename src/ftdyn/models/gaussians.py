"""The two-Gaussians toy's model, as stored: a ReLU MLP from one number to one number, its
pre-trained checkpoints and where they live (`model=mlp`).

Like a ladder, the toy's checkpoints are built once per (width, depth, pre-training recipe)
(`ftdyn.pretrain.gaussians`) under `$FTDYN_CACHE/gaussians/<model>-w<width>-d<depth>-<key>/`:
one `step<N>.pt` state dict per checkpoint and `manifest.json`, written last. Loading never
builds: a missing one fails naming the command that builds it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from ftdyn import config as C
from ftdyn.models.ladders import LadderNotBuilt

VERSION = 1  #: bump when the toy's data, model or pre-training changes (its cache key)


class MLP(nn.Module):
    """A ReLU MLP from one number to one number: `depth` hidden layers of `width` units."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = []
        for d_in in [1] + [width] * (depth - 1):
            layers += [nn.Linear(d_in, width), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[n] inputs -> [n] outputs (scalar outputs, so `empirical_ntk` gives an [n1, n2] kernel)."""
        return self.net(x.unsqueeze(-1)).squeeze(-1)


def key(model: C.ModelConfig) -> str:
    """A hash of everything that shapes the pre-trained weights."""
    spec = {"version": VERSION, "width": model.width, "depth": model.depth,
            "pretrain": C.as_dict(model.pretrain), "checkpoints": list(model.checkpoints)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def checkpoints_dir(model: C.ModelConfig) -> Path:
    return C.cache_root() / "gaussians" / f"{model.name}-w{model.width}-d{model.depth}-{key(model)}"


def is_built(model: C.ModelConfig) -> bool:
    return (checkpoints_dir(model) / "manifest.json").exists()


def load(model: C.ModelConfig, step: int) -> MLP:
    """The pre-trained MLP at `step`; `LadderNotBuilt` naming the build command if it is missing."""
    if step not in model.checkpoints:
        raise KeyError(f"step {step} is not a checkpoint of {model.name}; available: {list(model.checkpoints)}")
    if not is_built(model):
        raise LadderNotBuilt(f"the {model.name} MLP (width {model.width}, depth {model.depth}) is not pre-trained "
                             f"(no {checkpoints_dir(model) / 'manifest.json'}): build it with `python -m "
                             f"ftdyn.pretrain model={model.name} model.width={model.width} model.depth={model.depth}`")
    mlp = MLP(model.width, model.depth)
    mlp.load_state_dict(torch.load(checkpoints_dir(model) / f"step{step}.pt", weights_only=True))
    return mlp.eval()
