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
import warnings
from functools import partial
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ftdyn import config as C
from ftdyn import files, gaussians, memory, tasks
from ftdyn.analysis import diagnostics, interpolation
from ftdyn.config import keys
from ftdyn.config.choices import Diagnostic
from ftdyn.config.compose import quiet_libraries, register
from ftdyn.config.paths import conf_dir
from ftdyn.data.text import heldout_name, model_heldout_rows
from ftdyn.eval.inloop import InLoopEval
from ftdyn.eval.rows import result_row
from ftdyn.eval.stage import evaluate_stage
from ftdyn.launch import cluster, wandb_runs
from ftdyn.methods.checkpoints import JobClock, prune
from ftdyn.methods.fit import adapted_modules, fit
from ftdyn.methods.plan import plan
from ftdyn.models import checkpoints, fingerprints
from ftdyn.models.reference import Reference
from ftdyn.pretrain import ladder
from ftdyn.runs import results, store
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
    L.seed_everything(run.seed, verbose=False)
    if run.model.source == C.ModelSource.toy:  # the two-Gaussians MLP: its own model and measures (ftdyn.gaussians)
        rows, facts = gaussians.job(run, job_dir, callbacks=[preempted, clock])
        return _write(run, key, job_dir, rows, facts, clock, identical=[], adapted=[])

    if run.model.source == C.ModelSource.ladder:  # built once, by whichever job of a sweep gets there first
        ladder.ensure(run.model)
    model, tokenizer = checkpoints.load_checkpoint(run.model, run.ckpt_step)
    world = make_world(run.model.pretrain.world_seed, run.model.pretrain.n_people)
    task = tasks.load(run.task, world, seed=run.seed)
    cross = [tasks.load_cross_task(name, world, run.seed, run.task.eval_size)
             for name in run.eval.cross_tasks if name != run.task.name]  # a study lists every task for every job
    heldout = model_heldout_rows(run.model, tokenizer) if run.eval.pretrain_loss or run.eval.every_n_steps else []
    measure = dict(run=run, task=task, tokenizer=tokenizer, world=world, cross=cross, heldout=heldout,
                   heldout_name=heldout_name(run.model))

    device = eval_device(run.trainer)
    rows = evaluate_stage(model.to(device), stage="before", k=run.fewshot.k, **measure) if lead else []
    memory.release()  # what evaluation freed, before training allocates its own
    facts, adapted = {"trainable_params": 0, "train_steps": 0, "train_tokens": 0}, []
    if run.method.name != "base":
        # the checkpoint before training, for forgetting and acc_vs_base: held without a copy where it can be
        reference = Reference(run, model, device, reload=lambda: checkpoints.load_checkpoint(run.model, run.ckpt_step,
                                                                                         record=False)[0])
        in_loop = InLoopEval(run.eval.every_n_steps, reference.during_training, measure["heldout"],
                             tokenizer.pad_token_id,
                             run.eval.batch_size, measure["heldout_name"], tokenizer,
                             world if run.eval.probe else None,
                             head_norm=diagnostics.wants(run, Diagnostic.head_norm))
        # rank 0 measures along training; under fsdp every rank must join in gathering the weights
        measuring = lead or run.trainer.strategy == "fsdp"
        in_loop_cbs = [in_loop] if run.eval.every_n_steps and measuring else []
        diagnostic_cbs = diagnostics.callbacks(run, task, tokenizer, model)  # the NTK split as fine-tuning starts
        fitted = fit(model, tokenizer, task, run, job_dir,
                     callbacks=[*in_loop_cbs, *diagnostic_cbs, preempted, clock])
        rows += in_loop.rows
        memory.release()  # what training freed (optimiser state, activations), before evaluation
        if lead:  # Lightning's teardown leaves the trained model on the CPU
            fitted.model.to(device)
            if fitted.head is not None:
                fitted.head.to(device)
            base = reference.after(fitted.model)
            after = partial(evaluate_stage, stage="after", k=run.fewshot.k_after, head=fitted.head, base=base,
                            **measure)
            rows += after(fitted.model)
            rows += diagnostics.rows(run, task, tokenizer, base, fitted, diagnostic_cbs)
            rows += interpolation.interpolation_rows(run.eval.interpolate, base, fitted.model, after)  # WiSE-FT
        facts, adapted = fitted.facts, adapted_modules(fitted.model)
    if not lead:
        return {}  # rank 0 writes the job's results
    identical = fingerprints.identical_steps(checkpoints.record_name(run.model), run.ckpt_step)  # steps whose weights equal this one
    return _write(run, key, job_dir, rows, facts, clock, identical, adapted)


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
