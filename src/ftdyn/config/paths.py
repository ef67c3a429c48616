"""Where ftdyn finds and puts things: its configs (`conf/`), its named studies (`sweeps/`), its cache
of built ladders and fingerprints (`$FTDYN_CACHE`) and its outputs (`$FTDYN_OUT`: run store, sweeps,
studies)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$FTDYN_CACHE` (default `~/.cache/ftdyn`): built ladders and checkpoint fingerprints."""
    return Path(os.environ.get("FTDYN_CACHE", Path.home() / ".cache" / "ftdyn"))


def _shipped(name: str) -> Path:
    """A top-level folder of the repository: inside an installed wheel (pyproject.toml's
    force-include puts it in the package), else the repository's, beside `src/`."""
    packaged = Path(__file__).parents[1] / name
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / name


def conf_dir() -> Path:
    """`conf/`: the root config `train.yaml` and a folder per config group."""
    return _shipped("conf")


def sweeps_dir() -> Path:
    """`sweeps/`: the named studies (`experiment/`) and their launch profiles (`launch/`), a second
    root of Hydra's config search path (`hydra.searchpath` in `conf/train.yaml`)."""
    return _shipped("sweeps")


def outputs_root() -> Path:
    """`$FTDYN_OUT` (default `outputs` in the working directory): run store, sweeps, studies."""
    return Path(os.environ.get("FTDYN_OUT", "outputs"))
