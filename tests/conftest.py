"""Shared fixtures: an offline environment, a private ladder cache, the micro ladder.

The micro ladder (2 layers, hidden 32, 40 steps) is built once per test session into a
temporary FTDYN_CACHE, so tests never touch the user's cache and never reach a network.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ["FTDYN_CACHE"] = tempfile.mkdtemp(prefix="ftdyn-test-cache-")

from ftdyn import config as C  # noqa: E402  (after FTDYN_CACHE is set)
from ftdyn import ladder  # noqa: E402
from ftdyn.train import compose_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# A small, fast job on the micro ladder; tests add their own overrides.
MICRO = ["model=micro", "task.train_size=400", "task.eval_size=60"]


@pytest.fixture(scope="session")
def micro_ladder() -> Path:
    """The built micro ladder's directory."""
    return ladder.ensure(C.to_typed(compose_config(["model=micro"])).model)


@pytest.fixture(scope="session")
def micro_model_cfg(micro_ladder) -> C.ModelConfig:
    return C.to_typed(compose_config(["model=micro"])).model


@pytest.fixture
def process_group_cleanup():
    """Sharded training (trainer.strategy=fsdp) on one rank opens a gloo process group in the test's
    own process, and Lightning exports MASTER_ADDR, MASTER_PORT, ... for it: close the group and
    restore the environment after the test, or later subprocess sweeps would inherit them."""
    saved = dict(os.environ)
    yield
    import torch.distributed

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved)
