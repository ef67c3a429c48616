"""Where ftdyn finds and puts things: its configs (`conf/`), its cache of built ladders and
fingerprints (`$FTDYN_CACHE`) and its outputs (`$FTDYN_OUT`: run store, sweeps, studies)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$FTDYN_CACHE` (default `~/.cache/ftdyn`): built ladders and checkpoint fingerprints."""
    return Path(os.environ.get("FTDYN_CACHE", Path.home() / ".cache" / "ftdyn"))


def conf_dir() -> Path:
    """`conf/` inside an installed wheel, else the repository's `conf/` beside `src/`."""
    packaged = Path(__file__).parents[1] / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "conf"


def outputs_root() -> Path:
    """`$FTDYN_OUT` (default `outputs` in the working directory): run store, sweeps, studies."""
    return Path(os.environ.get("FTDYN_OUT", "outputs"))
