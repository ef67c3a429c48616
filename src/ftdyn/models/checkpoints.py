"""Loading one checkpoint of a model's ladder, whatever its source, and fingerprinting it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ftdyn import config as C
from ftdyn.models import fingerprints, gaussians, hub, ladders


def load_checkpoint(model: C.ModelConfig, step: int, record: bool = True):
    """The model and tokenizer of one checkpoint: an ftdyn-built ladder's, a hub model's
    (`ftdyn.models.hub`), or the two-Gaussians MLP's (`ftdyn.models.gaussians`, tokenizer None). Either is fingerprinted into the ladder's record (`ftdyn.models.fingerprints`),
    unless `record` is false (a checkpoint loaded again by the same job)."""
    if model.source == C.ModelSource.toy:  # the two-Gaussians MLP: numbers in, no tokenizer
        lm, tokenizer, revision = gaussians.load(model, step), None, f"step{step}"
    elif model.source == C.ModelSource.hub:
        lm, tokenizer, revision = hub.load(model, step)
    else:
        (lm, tokenizer), revision = ladders.load(model, step), f"step{step}"
    if record:
        fingerprints.record(record_name(model), step, lm, revision)
    return lm, tokenizer


def record_name(model: C.ModelConfig) -> str:
    """Which fingerprint record a model's checkpoints go to: one per built ladder, one per hub
    repository, and one per local stand-in (so a stand-in never mixes with the real ladder)."""
    if model.source == C.ModelSource.ladder:
        return ladders.ladder_dir(model).name
    if model.source == C.ModelSource.toy:
        return gaussians.checkpoints_dir(model).name
    if model.local_dir:
        where = hashlib.sha256(str(Path(model.local_dir).resolve()).encode()).hexdigest()[:8]
        return f"{model.name}-local-{where}"
    return model.name
