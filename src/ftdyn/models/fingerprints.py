"""Checkpoint fingerprints: is step N of a ladder really different from step M?

Public ladders are not always what their names say (86 of 154 pythia-2.8b step branches were
reported to serve final-stage weights). Every checkpoint ftdyn loads is fingerprinted and kept
in a per-ladder record, `$FTDYN_CACHE/fingerprints/<ladder>.json`:

    {"ladder": ..., "version": VERSION, "steps": {"<step>": {"fingerprint": ..., "revision": ...}},
     "identical": [[step_a, step_b], ...]}

written atomically under a file lock, so parallel jobs of one sweep add to it safely. Two steps
with the same fingerprint are logged as a warning naming both and listed under "identical";
`train` adds a run row `metric=ckpt_identical_to_step` per such step.

The fingerprint is a SHA-256 over every tensor of the state dict in name order: its name, shape,
and values as float32 (exact for float16/bfloat16, so it does not depend on the load dtype). A
tensor of more than SAMPLE elements contributes SAMPLE evenly spaced elements of its flattened
values, at positions floor(i (n - 1) / (SAMPLE - 1)) for i = 0 .. SAMPLE - 1 (`sample_positions`):
the first and the last element and evenly spaced ones between, computed in integers, so exact at
any size. Deterministic, cheap for a 1B model (~100 tensors x 64k values), and any real training
step changes nearly every weight, so sampled values differ too.

Version 1 computed the positions with a float32 `linspace`, which above 2^24 elements rounds the
last one to n, out of bounds: every real catalogue model failed to load. A record written by
another version (`VERSION`) is read as empty, so its steps are fingerprinted again rather than
compared with values of another rule.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from ftdyn import config as C
from ftdyn.files import file_lock, write_json_atomic

log = logging.getLogger(__name__)

SAMPLE = 65_536  # elements hashed per tensor, at most
VERSION = 2  #: of the fingerprint rule; records of another version are not compared with this one's


def sample_positions(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The flat positions a tensor of `n` elements contributes: all of them up to SAMPLE, else
    floor(i (n - 1) / (SAMPLE - 1)) for i < SAMPLE, in int64 (exact: (SAMPLE - 1) (n - 1) < 2^63
    for any n below 2^47)."""
    if n <= SAMPLE:
        return torch.arange(n, device=device)
    return torch.arange(SAMPLE, dtype=torch.int64, device=device) * (n - 1) // (SAMPLE - 1)


@torch.no_grad()
def fingerprint(model: torch.nn.Module) -> str:
    """A hex digest of the model's weights (the sampling rule is in the module docstring)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        if flat.numel() > SAMPLE:
            flat = flat[sample_positions(flat.numel(), flat.device)]
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(flat.float().cpu().numpy().tobytes())
    return digest.hexdigest()


def record_path(ladder: str) -> Path:
    return C.cache_root() / "fingerprints" / f"{ladder}.json"


def read(ladder: str) -> dict:
    """The ladder's record; empty if there is none, or if it was written by another fingerprint rule."""
    path = record_path(ladder)
    data = json.loads(path.read_text()) if path.exists() else {}
    if data.get("version") != VERSION:
        return {"ladder": ladder, "version": VERSION, "steps": {}, "identical": []}
    return data


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
