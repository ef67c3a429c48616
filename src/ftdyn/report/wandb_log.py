"""The report's summary tables as W&B tables, for sweeps run with `logger=wandb`.

One run of job_type "report" in `<report dir>/wandb/`, offline when no API key is set (or when
WANDB_MODE says so); `wandb sync` uploads it later. Each non-empty table becomes a `wandb.Table`
under its section name (offline, `files/media/table/<name>_*.table.json`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


def _plain(table: pd.DataFrame) -> pd.DataFrame:
    """Values W&B serialises: missing values as None, every column of one JSON type."""
    return table.astype(object).where(table.notna(), None)


def log_tables(tables: dict[str, pd.DataFrame], out: Path, project: str = "ftdyn",
               name: str | None = None) -> Path:
    """Log `tables` to one W&B run in `out`; return the run's local directory."""
    import wandb

    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    run = wandb.init(project=project, job_type="report", name=name, dir=str(out), mode=mode,
                     settings=wandb.Settings(silent=True))
    try:
        run.log({key: wandb.Table(dataframe=_plain(t)) for key, t in tables.items() if not t.empty})
    finally:
        run.finish()
    local = Path(run.dir).parent
    log.info("W&B report run (%s): %s", mode, local)
    return local
