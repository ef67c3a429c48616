"""Shared fixtures: an environment of the tests' own, private caches, the micro ladder.

The tests' environment does not depend on the user's shell. It is forced here, at import,
before anything reads it, and every subprocess a test starts inherits it:

- hubs are offline, and HF_HOME is a temporary directory: no user cache is read or written;
- W&B is offline, with no key, server or directory of the user's (a shell with
  WANDB_MODE=online must not log test runs to the cloud, nor try to reach it);
- no FTDYN_* variable of the user's is seen: the micro ladder (2 layers, hidden 32, 40 steps) is
  built once per session into a temporary FTDYN_CACHE, there is no FTDYN_DATA_DIR, and every
  test gets its own empty FTDYN_OUT (fixture `outputs`), so tests never share a run store;
- launcher variables (a shell inside a SLURM allocation or torchrun) are dropped: tests that
  need them set them;
- torch computes on one CPU thread per process. The tiny models are bound by per-op overhead,
  so this costs little alone (~10%); with two threads, beside one busy process the same tests
  took 2x as long, and on a loaded machine some took 100x (0.9 s -> 180 s): the threads spin.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

FOREIGN_PREFIXES = ("FTDYN_", "WANDB_", "HF_", "TRANSFORMERS_", "SLURM_", "SUBMITIT_")
FOREIGN_NAMES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
TEST_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "WANDB_MODE": "offline",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _own_environment() -> None:
    """Drop the user's ftdyn, W&B, hub and launcher variables, then set the tests' own."""
    for name in [n for n in os.environ if n.startswith(FOREIGN_PREFIXES) or n in FOREIGN_NAMES]:
        del os.environ[name]
    os.environ.update(TEST_ENV)
    root = Path(tempfile.mkdtemp(prefix="ftdyn-test-cache-"))
    os.environ["FTDYN_CACHE"] = str(root / "ftdyn")  # built ladders, fingerprints
    os.environ["HF_HOME"] = str(root / "huggingface")  # datasets' cache of local files; no user cache read


_own_environment()

import torch  # noqa: E402  (after OMP_NUM_THREADS is set)

from ftdyn import config as C  # noqa: E402  (after FTDYN_CACHE is set)
from ftdyn.config.compose import compose_config, register
from ftdyn.pretrain import ladder

register()  # the schema and resolvers conf/train.yaml reads: tests that compose through Hydra's own
# initialize_config_dir (test_experiments.py) otherwise depended on another module registering them

torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 says, in case something imported torch before it was set

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


@pytest.fixture(autouse=True)
def outputs(tmp_path_factory, monkeypatch) -> Path:
    """This test's FTDYN_OUT (run stores, Hydra run and sweep dirs), empty and its own; tests
    find outputs through it, never through `outputs/` in a working directory."""
    out = tmp_path_factory.mktemp("ftdyn-out")
    monkeypatch.setenv("FTDYN_OUT", str(out))
    return out
