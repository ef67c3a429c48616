"""Cluster running: submitit's local executor, DDP ranks started by the launcher, preemption.

The sweeps are real `python -m ftdyn.train -m` processes on the micro ladder; the preemption
tests send a real SIGUSR2 to a real training process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import MICRO, PYTHON
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from transformers import LlamaConfig, LlamaForCausalLM, get_linear_schedule_with_warmup

from ftdyn import config as C
from ftdyn.config import keys
from ftdyn.config.compose import compose_config
from ftdyn.config.paths import conf_dir
from ftdyn.data.batches import TrainDataModule
from ftdyn.launch import cluster
from ftdyn.methods.module import CausalLMModule
from ftdyn.models import checkpoints
from ftdyn.runs import results

SMALL = ["model=micro", "task.train_size=32", "task.eval_size=10", "trainer.threads=1"]


def _sweep(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "ftdyn.train", "-m", *args], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ), timeout=900)


def _rows(job: Path) -> list[dict]:
    return [json.loads(line) for line in (job / "results.jsonl").read_text().splitlines()]


def _facts(rows: list[dict]) -> dict:
    return {r["metric"]: r["value"] for r in rows if r["stage"] == "run"}


@pytest.mark.slow
def test_local_jobs_runs_a_two_job_sweep_as_separate_processes(micro_ladder, tmp_path):
    sweep = tmp_path / "sweep"
    out = _sweep(["hydra/launcher=local_jobs", *SMALL, "method.max_steps=2", "seed=0,1",
                  f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == ["0", "1", "multirun.yaml"]
    seeds = {}
    for job in (sweep / "0", sweep / "1"):
        rows = _rows(job)
        assert json.loads((job / "done").read_text())["run_key"] == rows[0]["run_key"]
        assert {("before", "test", "acc"), ("after", "test", "acc")} <= {(r["stage"], r["eval_set"], r["metric"])
                                                                         for r in rows}
        assert _facts(rows)["train_steps"] == 2
        seeds[rows[0]["seed"]] = rows[0]["run_key"]
    assert set(seeds) == {0, 1} and len(set(seeds.values())) == 2
    # each job ran in its own submitit process, started by this venv's python, importing this checkout
    logs = sorted(sweep.glob(".submitit/*/*_0_log.out"))
    assert len(logs) == 2
    pids = {log.parent.name for log in logs}
    assert len(pids) == 2 and str(os.getpid()) not in pids
    assert all("Job completed successfully" in log.read_text() for log in logs)


@pytest.mark.slow
def test_ddp_inside_a_multirun_trains_on_two_ranks_and_writes_one_result_set_per_job(micro_ladder, tmp_path, outputs):
    sweep = tmp_path / "sweep"
    out = _sweep(["hydra/launcher=local_jobs", *SMALL, "method.max_steps=4", "seed=0,1", "trainer=ddp",
                  "trainer.accelerator=cpu", "trainer.precision=32-true", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    # no extra sweeps, no per-rank job directories: the sweep holds exactly its two jobs
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == ["0", "1", "multirun.yaml"]
    assert sorted(p.name for p in outputs.iterdir()) == ["jobs"]  # no sweeps or runs started by ranks
    assert len(list((outputs / "jobs").iterdir())) == 2  # one run store per job, none per rank
    assert len(list(tmp_path.rglob("multirun.yaml"))) == 1
    for job in (sweep / "0", sweep / "1"):
        rows = _rows(job)
        keys = [(r["stage"], r["eval_set"], r["split_kind"], r["prompt"], r["metric"]) for r in rows]
        assert len(keys) == len(set(keys)), "a row was written twice"
        assert len([k for k in keys if k[:3] == ("after", "test", "in_domain") and k[4] == "acc"]) == 1
        facts = _facts(rows)
        assert facts["world_size"] == 2
        # 32 rows over 2 ranks at batch 8: 2 optimiser steps per rank, and every rank's tokens counted
        assert facts["train_steps"] == 2
        assert facts["train_tokens"] > 32 * 20
        ranks = sorted(job.parent.glob(".submitit/*/*_log.out"))
        assert len(ranks) == 4  # two processes (ranks) per job
    runs = [_rows(sweep / n)[0]["seed"] for n in ("0", "1")]
    assert sorted(runs) == [0, 1]


@pytest.mark.slow
def test_a_single_ddp_run_has_its_second_rank_started_by_lightning(micro_ladder, tmp_path, outputs):
    """Outside a multirun Lightning's own launcher may start the ranks: it re-runs the command
    line with the same Hydra run dir. Two stages (lpft), one result set, both ranks trained."""
    job = tmp_path / "job"
    out = subprocess.run([PYTHON, "-m", "ftdyn.train", *SMALL, "method=lpft", "method.max_steps=4", "trainer=ddp",
                          "trainer.accelerator=cpu", "trainer.precision=32-true", f"hydra.run.dir={job}"],
                         cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (job / "train_ddp_process_1.log").exists()  # rank 1, started by Lightning into the same run dir
    assert len(list((outputs / "jobs").iterdir())) == 1 and (job / "done").exists()
    rows = _rows(job)
    keys = [(r["stage"], r["eval_set"], r["split_kind"], r["prompt"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)), "a row was written twice"
    facts = _facts(rows)
    # 32 rows over 2 ranks at batch 8: 2 ft steps per rank (the probe, fitted on each rank alike, takes none)
    assert facts["world_size"] == 2 and facts["train_steps"] == 2


def test_multi_process_strategy_in_a_plain_multirun_is_refused_with_the_launchers_to_use(monkeypatch):
    for name in ("WORLD_SIZE", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    trainer = C.TrainerConfig(strategy="ddp", devices=2)
    with pytest.raises(C.ConfigError, match="hydra/launcher=local_jobs .* or hydra/launcher=slurm"):
        cluster.check_ranks(trainer, multirun=True)
    cluster.check_ranks(trainer, multirun=False)  # a single run: Lightning starts the other rank
    cluster.check_ranks(C.TrainerConfig(strategy="auto", devices=2), multirun=True)  # one process


def test_ranks_started_in_the_wrong_number_are_refused_naming_the_keys(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(C.ConfigError, match=r"= 2 ranks, but the launcher started 3 processes: set "
                                            r"hydra.launcher.tasks_per_node=trainer.devices"):
        cluster.check_ranks(C.TrainerConfig(strategy="ddp", devices=2), multirun=True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    cluster.check_ranks(C.TrainerConfig(strategy="ddp", devices=2), multirun=True)


@pytest.mark.slow
def test_fsdp_inside_a_multirun_shards_over_two_ranks_and_matches_ddp(micro_ladder, tmp_path):
    """FSDP2 over two CPU ranks (gloo) for lplora, whose probe every rank fits alike, unsharded, and
    which then shards the model with LoRA adapters inside its blocks and the probed head: every
    number, in-loop rows included, is what DDP on the same two ranks gives. (Full fine-tuning
    under fsdp: test_methods, test_resume.)"""
    sweep = tmp_path / "sweep"
    out = _sweep(["hydra/launcher=local_jobs", *SMALL, "task.train_size=64", "method.max_steps=4", "method.lr=5e-2",
                  "trainer=ddp", "trainer.strategy=fsdp,ddp", "method=lplora",
                  "trainer.accelerator=cpu", "trainer.precision=32-true", "eval.every_n_steps=2",
                  f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    by_strategy = {}
    for job in (sweep / "0", sweep / "1"):
        rows, strategy = _rows(job), OmegaConf.load(job / "config.yaml").trainer.strategy
        assert (job / "done").exists() and _facts(rows)["world_size"] == 2
        log = (job / "train.log").read_text()
        assert log.count("FSDP2: 2 transformer blocks, the head and the rest sharded over 2 ranks") == (
            2 if strategy == "fsdp" else 0)  # lora, logged by both ranks
        by_strategy[strategy] = {(r["stage"], r["eval_set"], r["split_kind"], r["metric"]): r["value"]
                                 for r in rows if r["metric"] not in results.TIMINGS}
    fsdp, ddp = by_strategy["fsdp"], by_strategy["ddp"]
    assert fsdp.keys() == ddp.keys()
    assert fsdp == pytest.approx(ddp, abs=1e-5)
    assert fsdp["run", "run", None, "train_steps"] == 4  # 4 lora steps (the probe takes none)
    assert fsdp["after", "tinyworld_heldout", "pretrain", "forget_kl"] > 0.01  # it trained
    assert ("step_4", "tinyworld_heldout", "pretrain", "forget_kl") in fsdp  # in-loop rows, every rank gathering


def test_a_launcher_that_started_one_process_for_a_two_rank_job_is_named(monkeypatch):
    """A sweep over trainer=cpu,ddp keeps the launcher's one task: the error says to sweep the strategy."""
    for name in ("WORLD_SIZE", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "1")
    with pytest.raises(C.ConfigError, match=r"= 2 ranks, but the launcher started 1 processes: .* sweep "
                                            r"trainer.strategy, not trainer=cpu,ddp"):
        cluster.check_ranks(C.TrainerConfig(strategy="fsdp", devices=2), multirun=True)


def test_unknown_strategy_is_a_config_error():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["trainer.strategy=deepspeed"])
    assert "Invalid value 'deepspeed', expected one of [auto, ddp, fsdp]" in str(err.value.__cause__)


def test_launcher_configs_compose_with_resources_following_the_trainer():
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        full = compose("train", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                                           "hydra.launcher.partition=gpu"], return_hydra_config=True)
        launcher = OmegaConf.to_container(full.hydra.launcher, resolve=True)
        cpu = compose("train", overrides=["hydra/launcher=local_jobs"], return_hydra_config=True)
        local = OmegaConf.to_container(cpu.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["tasks_per_node"], launcher["gpus_per_node"], launcher["nodes"]) == (4, 4, 1)
    assert launcher["partition"] == "gpu" and launcher["signal_delay_s"] == 120
    assert {"account", "timeout_min", "cpus_per_task", "mem_gb", "array_parallelism", "max_num_timeout"} <= set(launcher)
    assert local["_target_"].endswith("LocalLauncher")
    assert (local["tasks_per_node"], local["gpus_per_node"]) == (1, 0)  # a CPU job reserves no GPU


def _tiny_training(tmp_path: Path, callbacks: list[L.Callback], steps: int = 6) -> L.Trainer:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    rows = [{"input_ids": [i % 60 + 1] * 8, "labels": [i % 60 + 1] * 8} for i in range(steps * 4)]
    module = CausalLMModule(model, optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.0),
                            scheduler=partial(get_linear_schedule_with_warmup, num_warmup_steps=0,
                                              num_training_steps=steps))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(module, TrainDataModule(rows, 4, pad_id=0))
    return trainer


class _SignalAt(L.Callback):
    """Sends this process the warning signal after batch `at`, as SLURM would, mid-training."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            os.kill(os.getpid(), signal.SIGUSR2)


def test_warning_signal_checkpoints_at_the_next_batch_end_and_hands_over_to_the_previous_handler(tmp_path):
    received = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))  # as submitit's would
    try:
        with cluster.preemption(tmp_path) as watch:
            with pytest.raises(cluster.Preempted) as stopped:
                _tiny_training(tmp_path, [watch, _SignalAt(2)])
        assert stopped.value.code == 128 + signal.SIGUSR2
        assert received == [signal.SIGUSR2]  # the previous handler got the signal after the checkpoint
        saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
        assert saved["global_step"] == 3  # the batch end after the signal, not the end of training (6)
        assert signal.getsignal(signal.SIGUSR2) is not watch._note
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_without_a_signal_training_runs_to_the_end_and_the_handler_is_restored(tmp_path):
    before = signal.getsignal(signal.SIGUSR2)
    with cluster.preemption(tmp_path) as watch:
        assert signal.getsignal(signal.SIGUSR2) == watch._note
        trainer = _tiny_training(tmp_path, [watch])
    assert trainer.global_step == 6 and not (tmp_path / "last.ckpt").exists()
    assert signal.getsignal(signal.SIGUSR2) == before


@pytest.mark.slow
def test_a_signalled_job_checkpoints_exits_and_its_rerun_continues_the_same_wandb_run(micro_ladder, tmp_path,
                                                                                     outputs):
    job, wandb_dir = tmp_path / "job", tmp_path / "wandb"
    wandb_dir.mkdir()
    args = [PYTHON, "-m", "ftdyn.train", *MICRO, "method.epochs=2", "trainer.threads=1", "logger=wandb",
            f"hydra.run.dir={job}"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir)}
    store = outputs / "jobs" / keys.run_key(C.to_typed(compose_config(args[3:-1])))
    first = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (store / "wandb_id").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    first.send_signal(signal.SIGUSR2)  # before or during training: it checkpoints at its next batch end
    _, err = first.communicate(timeout=600)
    assert first.returncode == 128 + signal.SIGUSR2, err[-3000:]
    assert "SIGUSR2 received: checkpoint at step" in (job / "train.log").read_text()
    saved = torch.load(store / "checkpoints" / "ft" / "last.ckpt", weights_only=False)  # where a rerun resumes
    assert 1 <= saved["global_step"] < 2 * 400 // 8  # mid-training, not at its end
    assert not (job / "done").exists() and not (store / "done").exists()
    run_id = (store / "wandb_id").read_text().strip()

    second = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (job / "done").exists()
    facts = {r["metric"]: r["value"] for r in map(json.loads, (job / "results.jsonl").read_text().splitlines())
             if r["stage"] == "run"}
    assert facts["resumed_from_step"] == saved["global_step"]  # it continued, not restarted
    runs = sorted(wandb_dir.glob("wandb/offline-run-*"))
    assert len(runs) == 2 and all(run.name.endswith(f"-{run_id}") for run in runs)


@pytest.mark.slow
def test_a_warning_signal_under_submitit_requeues_the_job_which_resumes_and_finishes(micro_ladder, tmp_path, outputs):
    """The whole cycle under submitit's local executor, as under SLURM: SIGUSR2 to the running job ->
    a checkpoint at the next batch end -> submitit pickles the job again and exits 144 -> its
    controller starts the job again -> the job resumes from that checkpoint, in the same W&B run,
    and finishes -> the sweep ends successfully, with the job done once."""
    sweep, wandb_dir = tmp_path / "sweep", tmp_path / "wandb"
    wandb_dir.mkdir()
    args = [*MICRO, "task.eval_size=10", "method.epochs=2", "trainer.threads=1", "trainer.checkpoint_every_n_steps=5",
            "logger=wandb"]
    store = outputs / "jobs" / keys.run_key(C.to_typed(compose_config(args)))
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir)}
    launch = subprocess.Popen([PYTHON, "-m", "ftdyn.train", "-m", "hydra/launcher=local_jobs", *args,
                               f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (store / "checkpoints" / "ft" / "last.ckpt").exists():  # training is under way
        assert launch.poll() is None and time.time() < deadline, "the job never reached its first checkpoint"
        time.sleep(0.05)
    [controller] = [int(p.name) for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]  # job id = its pid
    [task] = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()  # the job's process
    os.kill(int(task), signal.SIGUSR2)
    _, err = launch.communicate(timeout=600)
    assert launch.returncode == 0, err[-3000:]

    job_log = (sweep / "0" / "train.log").read_text()
    [step] = [int(n) for n in re.findall(r"SIGUSR2 received: checkpoint at step (\d+)", job_log)]
    submitit_log = "".join(p.read_text() for p in (sweep / ".submitit" / str(controller)).glob("*_log.*"))
    assert "Requeued job" in submitit_log  # submitit, not ftdyn, requeued it (exit 144)
    assert submitit_log.count("Starting with JobEnvironment") == 2  # the controller started the job twice
    assert (store / "done").exists() and (sweep / "0" / "done").exists()
    facts = _facts(_rows(sweep / "0"))
    assert facts["resumed_from_step"] == step and 5 <= step < 100  # continued from the signalled step
    assert facts["train_steps"] == 2 * 400 // 8
    run_id = (store / "wandb_id").read_text().strip()
    runs = sorted(wandb_dir.glob("wandb/offline-run-*"))
    assert len(runs) == 2 and all(run.name.endswith(f"-{run_id}") for run in runs)  # one W&B run, resumed


def test_checkpoints_load_without_remote_code_unless_asked(micro_ladder, monkeypatch):
    model_cfg = C.to_typed(compose_config(["model=micro"])).model
    assert model_cfg.trust_remote_code is False
    seen = []
    real = LlamaForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "from_pretrained", classmethod(spy))
    checkpoints.load_checkpoint(model_cfg, 40)
    asked = C.to_typed(compose_config(["model=micro", "model.trust_remote_code=true"])).model
    checkpoints.load_checkpoint(asked, 40)
    assert seen == [False, True]
