"""Find a sweep's jobs and read their rows into one table (the job directory: docs/results.md).

A job directory holds `config.yaml`; a finished job also `results.jsonl`, `examples.jsonl` and
`done`; a failed one `failed.json` ({run_key, reason, step}) and perhaps a partial
`results.jsonl`; an unfinished one (running or killed) neither marker. Every job found is listed
with its status, so a failed or missing job shows in the report instead of silently thinning a
curve. A run_key seen in several sweep directories (a re-run) is kept once: the finished copy if
there is one, else the first found.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ftdyn import config as C
from ftdyn import files
from ftdyn.config import keys
from ftdyn.runs import results

log = logging.getLogger(__name__)

STATUS_ORDER = {"finished": 0, "failed": 1, "unfinished": 2}
SKIP_PARTS = {".hydra", "wandb", "report"}  # config.yaml files that are not jobs' (Hydra's, W&B's, ours)


@dataclass
class Job:
    """One job directory as the report sees it."""

    path: Path
    status: str  #: finished | failed | unfinished
    run_key: str | None
    config: dict = field(default_factory=dict)
    reason: str | None = None  #: why it failed (failed.json)
    step: int | None = None  #: the step it failed at, if known


def find_jobs(dirs: list[Path]) -> list[Job]:
    """Every job directory under `dirs`, in sorted order per directory."""
    jobs = []
    for root in dirs:
        for cfg_path in sorted(Path(root).rglob("config.yaml")):
            if SKIP_PARTS & set(cfg_path.relative_to(root).parts[:-1]):
                continue
            config = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=False)
            if isinstance(config, dict) and {"task", "method"} <= set(config):
                jobs.append(_job(cfg_path.parent, config))
    return jobs


def _job(path: Path, config: dict) -> Job:
    if results.is_done(path):
        return Job(path, "finished", json.loads((path / "done").read_text()).get("run_key"), config)
    if (path / "failed.json").exists():
        failed = json.loads((path / "failed.json").read_text())
        return Job(path, "failed", failed.get("run_key") or _config_key(config), config,
                   failed.get("reason"), failed.get("step"))
    return Job(path, "unfinished", _rows_key(path) or _config_key(config), config)


def _rows_key(path: Path) -> str | None:
    rows = results.read_rows([path / "results.jsonl"]) if (path / "results.jsonl").exists() else []
    return rows[0].get("run_key") if rows else None


def _config_key(config: dict) -> str | None:
    """The run key a job's resolved config hashes to (None if this ftdyn cannot read it)."""
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(C.TrainConfig), config))
        return keys.run_key(typed)
    except (OmegaConfBaseException, C.ConfigError) as err:  # an older or hand-edited config: list the
        # job anyway, without a key
        log.warning("cannot compute the run key of %s: %s", config.get("task"), err)
        return None


def one_per_run_key(jobs: list[Job]) -> list[Job]:
    """Jobs with distinct run keys: per key the finished copy, else the first failed, else the first."""
    best: dict[str, Job] = {}
    kept = []
    for job in jobs:
        if job.run_key is None:
            kept.append(job)
        elif job.run_key not in best or STATUS_ORDER[job.status] < STATUS_ORDER[best[job.run_key].status]:
            best[job.run_key] = job
    dropped = [j for j in jobs if j.run_key is not None and best[j.run_key] is not j]
    for job in dropped:
        log.info("run %s appears again in %s; keeping %s", job.run_key, job.path, best[job.run_key].path)
    return sorted(kept + list(best.values()), key=jobs.index)


def job_table(jobs: list[Job]) -> pd.DataFrame:
    """One line per job: where it is, its status, and why it failed."""
    return pd.DataFrame([{"job": str(j.path), "status": j.status, "run_key": j.run_key,
                          "task": (j.config.get("task") or {}).get("name"),
                          "method": (j.config.get("method") or {}).get("name"),
                          "ckpt_step": (j.config.get("ckpt") or {}).get("step"),
                          "reason": j.reason, "failed_step": j.step} for j in jobs],
                        columns=["job", "status", "run_key", "task", "method", "ckpt_step", "reason",
                                 "failed_step"])


def read_results(jobs: list[Job]) -> pd.DataFrame:
    """Every result row of `jobs` (finished and the partial rows of failed ones), with the
    job's directory and status as two more columns."""
    rows = [{**row, "job": str(j.path), "status": j.status} for j in jobs
            if (j.path / "results.jsonl").exists() for row in results.read_rows([j.path / "results.jsonl"])]
    return _cross_task_kind(pd.DataFrame(rows))


def _cross_task_kind(table: pd.DataFrame) -> pd.DataFrame:
    """The report's own split kind `cross_task` for other tasks' sets (`<task>/<split>`), which
    jobs write as out_of_domain, so OOD summaries keep to the task's own OOD sets."""
    if not table.empty:
        table.loc[table["eval_set"].map(results.is_cross_task), "split_kind"] = "cross_task"
    return table


def read_examples(jobs: list[Job]) -> pd.DataFrame:
    """Per-example scores (`examples.jsonl`) of `jobs`; empty when no job wrote them."""
    files = [j.path / "examples.jsonl" for j in jobs if (j.path / "examples.jsonl").exists()]
    return _cross_task_kind(pd.DataFrame(results.read_rows(files)))


def job_kinds(jobs: list[Job]) -> set[str]:
    """The loggers the jobs were run with: csv always, wandb where config.yaml has logger.wandb."""
    return {"csv"} | {"wandb" for j in jobs if (j.config.get("logger") or {}).get("wandb")}


def write_csv(table: pd.DataFrame, path: Path) -> None:
    files.write_atomic(path, table.to_csv(index=False))


def write_parquet(table: pd.DataFrame, path: Path) -> None:
    """Parquet through a temporary file in the same directory and a rename."""
    with files.atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
