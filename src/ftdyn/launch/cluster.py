"""Jobs on clusters: who starts the ranks, which rank writes, and preemption -> checkpoint -> requeue.

Ranks. A multi-process job (`trainer=ddp` / `trainer=fsdp`) gets one process per device from
its launcher, never from Lightning: Lightning's own DDP launcher re-runs `sys.argv`, which inside
a Hydra multirun starts a fresh sweep in every rank. Under `hydra/launcher=slurm` srun starts
`tasks_per_node` ranks and Lightning's `SLURMEnvironment` reads them; under
`hydra/launcher=local_jobs` submitit's local executor starts them and `export_ranks` turns its
variables into torch.distributed's (RANK, WORLD_SIZE, MASTER_ADDR, ...). Every rank runs the
whole `train()`; only rank 0 evaluates and writes (`is_rank_zero`). Under `trainer=fsdp` every
rank takes part in the in-loop measurements too, since each forward pass gathers the shards.

Requeue is owned by submitit. Before the time limit SLURM sends the warning signal (SIGUSR2,
`signal_delay_s` ahead; submitit's `SUBMITIT_PREEMPT_SIGNAL`). `Preemption` notes it, saves a
checkpoint at the next batch end (never inside the handler, mid-step), then hands the signal to
the handler it replaced: submitit's, which pickles the same job again and requeues it
(`scontrol requeue`; exit code 144 under the local executor, whose controller restarts it).
Lightning's SLURM auto-requeue is switched off so the two never both requeue. Outside submitit
the job ends with exit code 128 + signal number, as if the signal had ended it, but after its
checkpoint and with its W&B run closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import ModelParallelStrategy

from ftdyn import config as C

log = logging.getLogger(__name__)

PREEMPT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"  #: submitit's name for its warning signal (default USR2)


def export_ranks() -> None:
    """Under submitit's local executor with several tasks, give this process its torch.distributed rank.

    srun's variables are read by Lightning's SLURMEnvironment directly; the local executor's
    (SUBMITIT_LOCAL_*) are not, so they are exported as RANK, LOCAL_RANK, WORLD_SIZE,
    MASTER_ADDR and MASTER_PORT (a port drawn from the job id, the same in every rank).
    Lightning then sees LOCAL_RANK and starts no processes of its own.
    """
    if os.environ.get("SUBMITIT_EXECUTOR") != "local" or int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1")) <= 1:
        return
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def global_rank() -> int:
    """This process's rank in its job, from the launcher's variables (0 for a one-process job)."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


def is_rank_zero() -> bool:
    """Only rank 0 evaluates, writes rows, markers and logs, and talks to W&B."""
    return global_rank() == 0


def _started_ranks() -> int | None:
    """How many ranks a launcher started for this job, or None if none did."""
    if "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if SLURMEnvironment.detect():
        return int(os.environ["SLURM_NTASKS"])
    if os.environ.get("SUBMITIT_EXECUTOR") == "local":  # one task: export_ranks had nothing to export
        return int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1"))
    return None


def check_ranks(trainer: C.TrainerConfig, multirun: bool) -> None:
    """Refuse a multi-process job whose ranks nobody started, or started in the wrong number."""
    want = trainer.world_size
    started = _started_ranks()
    if want == 1 or started == want:
        return
    if started is not None:
        raise C.ConfigError(
            f"trainer.devices={trainer.devices} x trainer.num_nodes={trainer.num_nodes} = {want} ranks, but the "
            f"launcher started {started} processes: set hydra.launcher.tasks_per_node=trainer.devices and "
            f"hydra.launcher.nodes=trainer.num_nodes (the defaults of hydra/launcher=slurm and local_jobs). "
            f"The launcher reads them once per sweep: sweep trainer.strategy, not trainer=cpu,ddp")
    if multirun:
        raise C.ConfigError(
            f"trainer.strategy={trainer.strategy} with {want} ranks inside a multirun needs a launcher that starts "
            f"one process per device: hydra/launcher=local_jobs (one machine) or hydra/launcher=slurm. "
            f"Lightning's own launcher would re-run the command line, and with it the whole sweep, in every rank")


def trainer_kwargs(trainer: C.TrainerConfig) -> dict:
    """Strategy and cluster plugins of a phase's Lightning Trainer."""
    kwargs = {"strategy": trainer.strategy, "num_nodes": trainer.num_nodes}
    if trainer.strategy == "fsdp":  # FSDP2, applied by the module itself (ftdyn.methods.sharding)
        kwargs["strategy"] = ModelParallelStrategy(data_parallel_size=trainer.world_size, tensor_parallel_size=1,
                                                   save_distributed_checkpoint=False)  # one file, as other strategies
    if SLURMEnvironment.detect():
        kwargs["plugins"] = [SLURMEnvironment(auto_requeue=False)]  # submitit requeues
    return kwargs


def warning_signal() -> signal.Signals:
    """The scheduler's warning signal: SIGUSR2, or the one named by SUBMITIT_PREEMPT_SIGNAL."""
    name = "SIG" + os.environ.get(PREEMPT_SIGNAL_ENV, "USR2")
    if not hasattr(signal, name):
        raise C.ConfigError(f"{PREEMPT_SIGNAL_ENV}={name[3:]}: not a signal; allowed e.g. USR1, USR2")
    return signal.Signals[name]


class Preempted(SystemExit):
    """The job stopped at the scheduler's warning after saving a checkpoint; not a failure."""


class Preemption(L.Callback):
    """Saves a checkpoint at the first batch end after the warning signal, then lets the requeue happen.

    The handler only sets a flag; every batch end the ranks agree whether any of them got the
    signal (one all-reduce of a bool), so all ranks save the same step together.
    """

    def __init__(self, state: Path, signum: signal.Signals):
        self.state, self.signum = state, signum
        self.received = False
        self.previous = None

    def _note(self, signum, frame) -> None:
        self.received = True

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.received, all=False):
            return
        path = checkpoint_path(trainer, self.state)
        trainer.save_checkpoint(path)
        log.warning("%s received: checkpoint at step %d saved to %s", self.signum.name, trainer.global_step, path)
        previous, self.previous = self.previous, None
        signal.signal(self.signum, previous)
        if callable(previous):
            previous(self.signum, None)  # submitit: requeue the job, then exit (rank 0)
        raise Preempted(128 + self.signum)


def checkpoint_path(trainer: L.Trainer, state: Path) -> Path:
    """`last.ckpt` where the trainer's ModelCheckpoint keeps it (so resuming finds it), else in `state`."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "dirpath", None):
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return state / "last.ckpt"


@contextlib.contextmanager
def preemption(state: Path):
    """Watch for the warning signal during one job; yields the callback to give every stage's Trainer.

    The handler is installed around the whole job, not per Trainer: Lightning restores every
    signal handler when a fit ends. A signal that comes after the last training step is ignored:
    the job finishes instead.
    """
    watch = Preemption(state, warning_signal())
    if threading.current_thread() is not threading.main_thread():
        log.warning("not in the main thread: no preemption checkpoint on %s", watch.signum.name)
        yield watch
        return
    watch.previous = signal.signal(watch.signum, watch._note)
    try:
        yield watch
    finally:
        if watch.previous is not None:
            signal.signal(watch.signum, watch.previous)


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (`-m`)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
