"""The run store: one directory per run_key, so a re-launched sweep skips done jobs and resumes killed ones.

Hydra names job directories by launch time and job number, so a requeued or re-launched job
would never find its own files there. Jobs therefore work in a directory named by what they
compute:

    ${FTDYN_OUT:-outputs}/jobs/<run_key>/
        lock                    held (fcntl) by the process running the job
        config.yaml             the resolved config
        checkpoints/<phase>/    training checkpoints (ftdyn.methods.checkpoints), pruned per trainer.keep
        <phase>/metrics.csv     training curves
        results.jsonl, examples.jsonl, and last: done | failed.json

Hydra's job directory gets `config.yaml` at the start and, at the end, copies of
`results.jsonl`, `examples.jsonl`, `<phase>/metrics.csv` and `done` (or `failed.json`): what
`ftdyn.report` reads.

Two processes given the same job (two sweeps of one grid, or a requeue while the old process
lives) take the lock in turn: the second waits, then finds the job done and skips it. A done
job is skipped (`+force=true` deletes its store and runs it again); an unfinished one resumes
from its checkpoints; a failed one runs again.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import os
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from ftdyn import config as C
from ftdyn import files
from ftdyn.config import keys
from ftdyn.launch import cluster
from ftdyn.runs import results

log = logging.getLogger(__name__)

OUTPUTS = ("results.jsonl", "examples.jsonl", "failed.json", "done")  #: copied to Hydra's job dir, done last
MARKERS = ("done", "failed.json")


@dataclasses.dataclass
class Flags:
    """How to launch, not what to compute: given as `+force=true` / `+dry=true`, outside the run key."""

    force: bool = False  #: run a done job again, from scratch
    dry: bool = False  #: list the job (and its status) without running anything


def pop_flags(cfg: DictConfig) -> tuple[DictConfig, Flags]:
    """The config without the launch flags, and the flags; a non-boolean flag is a `ConfigError`."""
    cfg = copy.deepcopy(cfg)
    values = {}
    with open_dict(cfg):
        for name in (f.name for f in dataclasses.fields(Flags)):
            if name in cfg:
                values[name] = cfg.pop(name)
    bad = [f"{k}={v!r}: allowed true or false" for k, v in values.items() if not isinstance(v, bool)]
    if bad:
        raise C.ConfigError("invalid config:\n  - " + "\n  - ".join(bad))
    return cfg, Flags(**values)


def store_root() -> Path:
    return Path(os.environ.get("FTDYN_OUT", "outputs")) / "jobs"


def status(store: Path) -> str:
    """done | failed | partial (has checkpoints: will resume) | new."""
    if (store / "done").exists():
        return "done"
    if (store / "failed.json").exists():
        return "failed"
    return "partial" if (store / "checkpoints").exists() else "new"


def refuse_sweep_without_multirun() -> None:
    """`ckpt=range` sets `hydra.sweeper.params`; without `-m` Hydra would silently run one job."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.RUN and hydra_cfg.sweeper.params:
        axes = ", ".join(f"{k}={v}" for k, v in hydra_cfg.sweeper.params.items())
        raise C.ConfigError(f"this config defines a sweep ({axes}, e.g. from ckpt=range) but runs without -m: "
                            "add -m (--multirun) to run every job, or pick one with ckpt.step=<N>")


def run(cfg: DictConfig, job_dir: Path, train: Callable[[C.TrainConfig, Path], object]) -> str:
    """Run the job `cfg` in its store unless it is done; mirror its outputs into `job_dir`.

    Returns the job's status. A failing job records `failed.json` (store and `job_dir`) and
    re-raises: a single run exits non-zero, and Hydra's launchers finish the sweep's other jobs
    before raising the first failure.
    """
    for name in MARKERS:  # left by an earlier launch into the same sweep dir
        (job_dir / name).unlink(missing_ok=True)
    try:
        cfg, flags = pop_flags(cfg)
        run_cfg = C.to_typed(cfg)
    except C.ConfigError as err:
        _record_failure(job_dir, None, err)
        raise
    key = keys.run_key(run_cfg)
    store = store_root() / key
    if flags.dry:
        print(OmegaConf.to_yaml(cfg))
        print(f"dry run: 1 job, {key} {status(store)} at {store}")
        return "dry"
    if not cluster.is_rank_zero():  # a DDP rank > 0 follows rank 0: no lock (it would stall the
        if not results.is_done(store) or flags.force:  # ranks' rendezvous) and no files of its own
            train(run_cfg, store)
        return status(store)
    files.write_atomic(job_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(run_cfg)))
    waiting = functools.partial(log.info, "wait %s: another process is running it (%s)", key, store)
    with files.file_lock(store / "lock", on_wait=waiting):
        if results.is_done(store) and not flags.force:
            log.info("skip %s: done at %s", key, store)
        else:
            _prepare(store, flags.force)
            try:
                train(run_cfg, store)
            except Exception as err:
                _record_failure(store, key, err)
                _mirror(store, job_dir)
                raise
        _mirror(store, job_dir)
    return status(store)


def _prepare(store: Path, force: bool) -> None:
    """Clear a failure record; with force, everything but the lock (checkpoints included)."""
    (store / "failed.json").unlink(missing_ok=True)
    if not force:
        return
    log.info("force: deleting the earlier run in %s", store)
    for path in store.iterdir():
        if path.name != "lock":
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _record_failure(where: Path, key: str | None, err: Exception) -> None:
    """failed.json = {run_key, reason, step}: the step of a diverged loss, else null."""
    reason = f"{type(err).__name__}: {err}"
    log.error("job %s failed: %s\n%s", key, reason, "".join(traceback.format_exception(err)[-3:]))
    files.write_json_atomic(where / "failed.json", {"run_key": key, "reason": reason,
                                                       "step": getattr(err, "step", None)})


def _mirror(store: Path, job_dir: Path) -> None:
    """Copy the store's outputs into Hydra's job dir, each through a temporary name, `done` last."""
    if store.resolve() == job_dir.resolve():
        return
    for curve in store.glob("*/metrics.csv"):  # training curves, per phase
        (job_dir / curve.parent.name).mkdir(exist_ok=True)
        shutil.copyfile(curve, job_dir / curve.parent.name / curve.name)
    for name in OUTPUTS:
        if (store / name).exists():
            tmp = job_dir / f".{name}.tmp"
            shutil.copyfile(store / name, tmp)
            os.replace(tmp, job_dir / name)
