"""Checkpoint fingerprints: is step N of a ladder really different from step M?

Public ladders are not always what their names say (86 of 154 pythia-2.8b step branches were
reported to serve final-stage weights). Every checkpoint ftdyn loads is fingerprinted and kept
in a per-ladder record, `$FTDYN_CACHE/fingerprints/<ladder>.json`:

    {"ladder": ..., "steps": {"<step>": {"fingerprint": ..., "revision": ...}},
     "identical": [[step_a, step_b], ...]}

written atomically under a file lock, so parallel jobs of one sweep add to it safely. Two steps
with the same fingerprint are logged as a warning naming both and listed under "identical";
`train` adds a run row `metric=ckpt_identical_to_step` per such step.

The fingerprint is a SHA-256 over every tensor of the state dict in name order: its name, shape,
and values as float32 (exact for float16/bfloat16, so it does not depend on the load dtype). A
tensor of more than SAMPLE elements contributes SAMPLE evenly spaced elements of its flattened
values (`linspace(0, n-1, SAMPLE)`): deterministic, cheap for a 1B model (~100 tensors x 64k
values), and any real training step changes nearly every weight, so sampled values differ too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from ftdyn import config as C
from ftdyn.results import file_lock, write_json_atomic

log = logging.getLogger(__name__)

SAMPLE = 65_536  # elements hashed per tensor, at most


@torch.no_grad()
def fingerprint(model: torch.nn.Module) -> str:
    """A hex digest of the model's weights (the sampling rule is in the module docstring)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        if flat.numel() > SAMPLE:
            flat = flat[torch.linspace(0, flat.numel() - 1, SAMPLE, device=flat.device).long()]
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(flat.float().cpu().numpy().tobytes())
    return digest.hexdigest()


def record_path(ladder: str) -> Path:
    return C.cache_root() / "fingerprints" / f"{ladder}.json"


def read(ladder: str) -> dict:
    path = record_path(ladder)
    return json.loads(path.read_text()) if path.exists() else {"ladder": ladder, "steps": {}, "identical": []}


def _identical_pairs(steps: dict[str, dict]) -> list[list[int]]:
    found = sorted((int(s), e["fingerprint"]) for s, e in steps.items())
    return [[a, b] for i, (a, fa) in enumerate(found) for b, fb in found[i + 1:] if fa == fb]


def record(ladder: str, step: int, model: torch.nn.Module, revision: str | None = None) -> list[int]:
    """Fingerprint `model` as `step` of `ladder`, add it to the record; the other steps it equals."""
    value = fingerprint(model)
    path = record_path(ladder)
    with file_lock(path.with_suffix(".lock")):
        data = read(ladder)
        data["steps"][str(step)] = {"fingerprint": value, "revision": revision}
        same = sorted(int(s) for s, e in data["steps"].items() if e["fingerprint"] == value and int(s) != step)
        data["identical"] = _identical_pairs(data["steps"])
        write_json_atomic(path, data)
    for other in same:
        log.warning("ladder %s: step %d has the same weights as step %d (fingerprint %s): the checkpoints "
                    "are not distinct", ladder, step, other, value[:12])
    return same


def identical_steps(ladder: str, step: int) -> list[int]:
    """Steps recorded with the same weights as `step` (empty if `step` was never fingerprinted)."""
    return sorted(b if a == step else a for a, b in read(ladder)["identical"] if step in (a, b))
