"""A job's identity: its run key, a hash of every setting of what it computes.

The schema marks each setting as what is computed (the default) or how it is launched and
logged (`setting(launch=True)`); `run_spec` keeps the first kind, by dotted key, leaving out the
method fields the method never reads and resolving what LoRA adapts (`TrainConfig.lora_targets`).
"""

from __future__ import annotations

import hashlib
import json

from ftdyn.config import choices, settings
from ftdyn.config.schema import TrainConfig


def run_key(cfg: TrainConfig) -> str:
    """A stable hash of what the job computes (`run_spec`)."""
    return hashlib.sha256(json.dumps(run_spec(cfg), sort_keys=True).encode()).hexdigest()[:16]


def run_spec(cfg: TrainConfig) -> dict[str, object]:
    """Every setting of what the job computes, by dotted key: the schema's launch settings
    (`setting(launch=True)`: threads, logging, evaluation batch size, checkpoint cadence, paths)
    and the method fields the method never reads (`method.rank` of sft) are left out."""
    method = cfg.method.spec
    unused = {f"method.{k}" for k in ((() if method.lora else choices.LORA_FIELDS)
                                      + (() if method.linear_probe else choices.PROBE_FIELDS))}
    unused.add("model.lora_targets")  # what LoRA adapts enters as method.targets, resolved
    spec = {key: settings.json_safe(value) for key, _, value in settings.leaves(cfg)
            if key not in unused and not settings.is_launch(cfg, key)}
    spec["ckpt.step"] = cfg.ckpt_step  # ckpt=final and ckpt.step=<final> are the same run
    if method.lora:
        spec["method.targets"] = cfg.lora_targets
    return spec
