"""Weights & Biases for `logger=wandb`: one W&B run per job, continued across requeues.

The run is opened by `job_run` around the whole job (rank 0 only) and always finished when the
job ends, also on failure, so the next job of a multirun never logs into it. It carries the
resolved config, `group` = the sweep's name, `job_type` = the method, and tags for task,
checkpoint step and model. Each training phase logs its curves through Lightning's
`WandbLogger` attached to that run (`phase_loggers`, metrics prefixed by the method's phase). At the end
`log_results` puts every result row in the run's summary (`stage/eval_set/metric`) and in a
`results` table.

The run id is kept in the job's run store (`ftdyn.runs.store`) beside its checkpoints:
a requeued or re-launched job reads it and resumes the same run (`resume="allow"`). Without an
API key (no WANDB_API_KEY, no ~/.netrc entry) the run is offline, never a login prompt.
"""

from __future__ import annotations

import contextlib
import logging
import netrc
import os
import secrets
import string
from pathlib import Path
from urllib.parse import urlparse

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger

from ftdyn import config as C
from ftdyn.files import write_atomic
from ftdyn.launch import cluster

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_id"
RESULT_COLUMNS = ("run_key", "stage", "eval_set", "split_kind", "prompt", "metric", "value")


def has_api_key() -> bool:
    """Whether W&B could log in without asking: WANDB_API_KEY or a ~/.netrc entry for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(settings: dict) -> str:
    """logger.wandb.mode if set, else WANDB_MODE if set, else online with an API key and offline without."""
    if settings.get("mode"):
        return settings["mode"]
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if has_api_key() else "offline"


def run_id(state: Path) -> str:
    """The job's W&B run id: the one kept in `state`, or a new one, kept there before the run starts."""
    path = state / RUN_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    new = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's id alphabet
    write_atomic(path, new + "\n")
    return new


def sweep_name() -> str | None:
    """The sweep directory's name inside a Hydra multirun, else None."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().sweep.dir).name if cluster.in_multirun() else None


def _init(run: C.TrainConfig, key: str, job_dir: Path):
    """Open the job's run: `logger.wandb` (wandb.init's arguments) built with `instantiate`, with
    what only the job knows added: id, resume, name, job_type, config, tags, group, mode, dir."""
    settings = dict(run.logger.wandb)
    tags = [f"task:{run.task.name}", f"ckpt:{run.ckpt_step}", f"model:{run.model.name}", *settings.get("tags", [])]
    return instantiate(settings)(
        group=settings.get("group") or sweep_name(), job_type=str(run.method.name), tags=tags,
        name=f"{run.task.name}-{run.method.name}-step{run.ckpt_step}", config={**C.as_dict(run), "run_key": key},
        id=run_id(job_dir), resume="allow", mode=resolve_mode(settings),
        dir=os.environ.get("WANDB_DIR") or str(job_dir), reinit="finish_previous")


@contextlib.contextmanager
def job_run(run: C.TrainConfig, key: str, job_dir: Path):
    """The job's W&B run (None for logger=csv and on ranks other than 0), finished however the job ends."""
    if run.logger.wandb is None or not cluster.is_rank_zero():
        yield None
        return
    wb = _init(run, key, job_dir)
    exit_code = 1
    try:
        yield wb
        exit_code = 0
    except SystemExit:  # the scheduler's warning: the job will be requeued and resume this run
        wb.mark_preempting()
        raise
    finally:
        wb.finish(exit_code=exit_code)


def phase_loggers(run: C.TrainConfig, job_dir: Path, phase: str) -> list[Logger]:
    """A phase's Lightning loggers: `logger.csv` (metrics.csv in `<job>/<phase>/`), and the job's W&B
    run if one is open."""
    loggers: list[Logger] = [instantiate(run.logger.csv)(save_dir=job_dir, name="", version=phase)]
    if run.logger.wandb is not None and cluster.is_rank_zero():
        import wandb
        from lightning.pytorch.loggers import WandbLogger

        if wandb.run is not None:
            loggers.append(WandbLogger(experiment=wandb.run, prefix=phase))
    return loggers


def row_name(row: dict) -> str:
    """`stage/eval_set/metric`, and `@alpha=<a>` for a WiSE-FT row (`eval.interpolate`)."""
    name = f"{row['stage']}/{row['eval_set']}/{row['metric']}"
    return name if row.get("alpha") is None else f"{name}@alpha={row['alpha']:g}"


def log_results(rows: list[dict], train_prompt: str) -> None:
    """Every result row into the open run's summary and a `results` table (no-op without a run).

    Summary keys are `stage/eval_set/metric`, with `@prompt` added for rows evaluated in a prompt
    format other than the training one.
    """
    import sys

    wandb = sys.modules.get("wandb")  # imported only when a run was opened
    if wandb is None or wandb.run is None:
        return
    summary = {}
    for row in rows:
        name = row_name(row)
        summary[name if row["prompt"] in (None, train_prompt) else f"{name}@{row['prompt']}"] = row["value"]
    wandb.run.summary.update(summary)
    table = wandb.Table(columns=list(RESULT_COLUMNS), data=[[row.get(c) for c in RESULT_COLUMNS] for row in rows])
    wandb.run.log({"results": table})
