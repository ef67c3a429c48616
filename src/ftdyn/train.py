"""One job, top to bottom: load a checkpoint, evaluate, fine-tune, evaluate again, write rows.

    python -m ftdyn.train                                   # final tiny checkpoint, syn_nli, sft
    python -m ftdyn.train -m ckpt=range task=syn_nli,syn_para   # one job per checkpoint x task
    python -m ftdyn.train -m ckpt=range task=syn_nli,syn_para +dry=true   # list those jobs, run nothing

Jobs run in the run store (`ftdyn.runs.store`): re-running a command skips done jobs
(`+force=true` runs them again) and resumes killed ones from their checkpoints. Tests call
`train(cfg, job_dir)` directly with a config from `ftdyn.config.compose.compose_config`.
"""

from __future__ import annotations

import logging
import time
import warnings
from functools import partial
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ftdyn import config as C
from ftdyn import files, memory, tasks
from ftdyn.analysis import diagnostics, interpolation
from ftdyn.config import keys
from ftdyn.config.choices import Diagnostic
from ftdyn.config.compose import quiet_libraries, register
from ftdyn.config.paths import conf_dir
from ftdyn.data.text import heldout_name, model_heldout_rows
from ftdyn.eval.inloop import InLoopEval
from ftdyn.eval.rows import result_row
from ftdyn.eval.stage import StageEvaluator
from ftdyn.launch import cluster, wandb_runs
from ftdyn.methods.checkpoints import JobClock, prune
from ftdyn.methods.fit import adapted_modules, fit
from ftdyn.methods.plan import plan
from ftdyn.models import checkpoints, fingerprints
from ftdyn.models.reference import Reference, read_while_training
from ftdyn.pretrain import gaussians, ladder
from ftdyn.runs import results, store
from ftdyn.tasks import TaskData
from ftdyn.world.entities import make_world

log = logging.getLogger(__name__)


register()  # the schema and resolvers conf/train.yaml reads, before Hydra composes it
# joblib's loky executor (hydra/launcher=pairs) replaces a job process whose memory grew, and says
# so in the launching process; the job it was given still runs to the end, so the warning is noise
warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given to the executor")


def train(cfg: DictConfig | C.TrainConfig, job_dir: Path) -> dict[str, float]:
    """Run one job and return its result rows' metrics as `stage/eval_set/metric` -> value.

    In a multi-process job every rank runs this; only rank 0 evaluates and writes (ftdyn.launch.cluster).
    """
    run = cfg if isinstance(cfg, C.TrainConfig) else C.to_typed(cfg)
    cluster.check_ranks(run.trainer, multirun=cluster.in_multirun())
    key = keys.run_key(run)
    with cluster.preemption(job_dir) as preempted, wandb_runs.job_run(run, key, job_dir):
        return _job(run, key, job_dir, preempted)


def _job(run: C.TrainConfig, key: str, job_dir: Path, preempted: L.Callback) -> dict[str, float]:
    lead = cluster.is_rank_zero()
    job_dir.mkdir(parents=True, exist_ok=True)
    if lead:
        files.write_atomic(job_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(run)))
    clock = JobClock()
    if run.trainer.threads > 0:
        torch.set_num_threads(run.trainer.threads)
    ensure_built(run.model)  # built once, by whichever job of a sweep gets there first; before the seed,
    L.seed_everything(run.seed, verbose=False)  # so a job's draws never depend on whether it built it
    model, tokenizer = checkpoints.load_checkpoint(run.model, run.ckpt_step)
    task, evaluator = _evaluation(run, tokenizer)
    device = eval_device(run.trainer)
    timed = StageTimes()
    rows = timed("before", evaluator.rows, model.to(device), "before", k=run.fewshot.k) if lead else []
    memory.release()  # what evaluation freed, before training allocates its own
    facts, adapted = _untrained_facts(run), []
    if run.method.name != C.Method.base:
        # the checkpoint before training, for forgetting, acc_vs_base and drift: held without a copy where it can be
        reference = Reference(run, model, device, reload=lambda: checkpoints.load_checkpoint(run.model, run.ckpt_step,
                                                                                         record=False)[0])
        in_loop = InLoopEval(run.eval.every_n_steps, evaluator, reference.during_training,
                             head_norm=diagnostics.wants(run, Diagnostic.head_norm))
        # rank 0 measures along training; under fsdp every rank must join in gathering the weights
        measuring = lead or run.trainer.strategy == "fsdp"
        in_loop_cbs = [in_loop] if run.eval.every_n_steps and measuring else []
        base_now = reference.during_training(model) if read_while_training(run) else None
        diagnostic_cbs = diagnostics.callbacks(run, task, tokenizer, model, base_now)  # e.g. the NTK split at the start
        fitted = fit(model, tokenizer, task, run, job_dir, callbacks=[*in_loop_cbs, *diagnostic_cbs, preempted, clock])
        rows += in_loop.rows
        memory.release()  # what training freed (optimiser state, activations), before evaluation
        if lead:  # Lightning's teardown leaves the trained model on the CPU
            fitted.model.to(device)
            if fitted.head is not None:
                fitted.head.to(device)
            base = reference.after(fitted.model)
            after = partial(evaluator.rows, stage="after", k=run.fewshot.k_after, head=fitted.head, base=base)
            rows += timed("after", after, fitted.model)
            rows += diagnostics.rows(run, task, tokenizer, base, fitted, diagnostic_cbs)
            rows += interpolation.interpolation_rows(run.eval.interpolate, base, fitted.model, after)  # WiSE-FT
        facts, adapted = {**fitted.facts, **_shape_facts(run)}, adapted_modules(fitted.model)
    if not lead:
        return {}  # rank 0 writes the job's results
    facts |= timed.facts()
    identical = fingerprints.identical_steps(checkpoints.record_name(run.model), run.ckpt_step)  # the same weights
    return _write(run, key, job_dir, rows, facts, clock, identical, adapted)


class StageTimes:
    """Wall seconds of each stage's evaluation in this process, as run facts `eval_<stage>_s`: what
    evaluation costs beside training (`wall_s` is the whole job's)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str, evaluate, *args, **kwargs) -> list[dict]:
        started = time.monotonic()
        rows = evaluate(*args, **kwargs)
        self.seconds[stage] = round(time.monotonic() - started, 2)
        return rows

    def facts(self) -> dict[str, float]:
        return {f"eval_{stage}_s": seconds for stage, seconds in self.seconds.items()}


def ensure_built(model: C.ModelConfig) -> None:
    """Build the checkpoints ftdyn pre-trains itself where they are missing (a hub model's exist)."""
    if model.source == C.ModelSource.ladder:
        ladder.ensure(model)
    elif model.source == C.ModelSource.toy:
        gaussians.ensure(model)


def _evaluation(run: C.TrainConfig, tokenizer) -> tuple[TaskData, StageEvaluator]:
    """The job's task and the evaluator of its stages: its sets, the other tasks' (`eval.cross_tasks`),
    the tiny world the knowledge probe asks about, and held-out text where something measures it."""
    if run.model.source == C.ModelSource.toy:  # numbers: no world, no text
        task = tasks.load(run.task, None, seed=run.seed)
        return task, StageEvaluator(run, task)
    world = make_world(run.model.pretrain.world_seed, run.model.pretrain.n_people)
    task = tasks.load(run.task, world, seed=run.seed)
    cross = [tasks.load_cross_task(name, world, run.seed, run.task.eval_size)
             for name in run.eval.cross_tasks if name != run.task.name]  # a study lists every task for every job
    heldout = model_heldout_rows(run.model, tokenizer) if run.eval.pretrain_loss or run.eval.every_n_steps else []
    learned = world if run.model.source == C.ModelSource.ladder else None  # the world a ladder learned: probed
    return task, StageEvaluator(run, task, tokenizer, learned, cross, heldout, heldout_name(run.model))


def _shape_facts(run: C.TrainConfig) -> dict[str, int]:
    """The toy MLP's scale as run facts: rows carry no model settings, and the report draws lines per width."""
    return {"width": run.model.width, "depth": run.model.depth} if run.model.source == C.ModelSource.toy else {}


def _untrained_facts(run: C.TrainConfig) -> dict[str, float]:
    """The run facts of a job that trains nothing (method=base)."""
    counted = {} if run.model.source == C.ModelSource.toy else {"train_tokens": 0}  # the toy counts no tokens
    return {"trainable_params": 0, "train_steps": 0, **counted, **_shape_facts(run)}


def _write(run: C.TrainConfig, key: str, job_dir: Path, rows: list[dict], facts: dict[str, float], clock: JobClock,
           identical: list[int], adapted: list[str]) -> dict[str, float]:
    """Add the run facts to the rows, write them and mark the job done (rank 0)."""
    facts["wall_s"] = round(clock.seconds(), 2)  # across requeues (JobClock)
    for name, value in [*facts.items(), *(("ckpt_identical_to_step", step) for step in identical)]:
        rows.append(result_row("run", None, "run", run.prompt.train, name, value))

    base = results.run_facts(run, key, adapted)
    results.write_examples(job_dir, key, rows)
    results.write_rows(job_dir, [{**base, **row} for row in rows])
    wandb_runs.log_results(rows, run.prompt.train)
    results.mark_done(job_dir, key)
    stages = plan(run.method)
    prune(job_dir, run.trainer.keep, stages[-1].name if stages else None)
    log.info("job %s done in %.0f s: %s, checkpoint %s, %s", key, clock.this_process(), run.task.name,
             run.ckpt_step, run.method.name)
    return {wandb_runs.row_name(r): r["value"] for r in rows}


def eval_device(trainer: C.TrainerConfig) -> torch.device:
    """Where a job evaluates: the training accelerator's GPU when there is one, else the CPU."""
    wants_gpu = trainer.accelerator in ("gpu", "cuda") or (trainer.accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="train")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    store.refuse_sweep_without_multirun()
    cluster.export_ranks()
    store.run(cfg, Path(HydraConfig.get().runtime.output_dir), train)


if __name__ == "__main__":
    main()
