"""Named studies are configs: every `sweeps/experiment/<name>.yaml` composes, dry-runs to the job
count that docs/studies.md states for it (parsed from the doc, so doc and config cannot drift), and
launches as its config says unless the command line says otherwise: two at a time on this machine,
or as a SLURM job array with the launch profile `launch=slurm` (`sweeps/launch/slurm.yaml`).

The dry runs are ftdyn.runs.dryrun's own (`job_overrides` + `print_jobs`, what `+dry=true` runs), in
process; one slow test runs the `+dry=true` command itself and one runs a study for real.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from conftest import PYTHON, REPO
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ftdyn import config as C
from ftdyn.config import keys
from ftdyn.config.paths import conf_dir, sweeps_dir
from ftdyn.runs import dryrun

DOC = REPO / "docs" / "studies.md"
STUDIES = sorted(p.stem for p in (sweeps_dir() / "experiment").glob("*.yaml") if not p.stem.startswith("_"))
JOB_LINE = re.compile(r"^\[(\d+)\] (\S+) +(\w+) ")


def stated_job_counts() -> dict[str, int]:
    """Each study's job count as docs/studies.md states it: the `= N jobs` of its section's `Grid:` line."""
    counts = {}
    for section in re.split(r"^## ", DOC.read_text(), flags=re.M)[1:]:
        name = re.match(r"`(\w+)`", section)
        grid = re.search(r"^Grid: .*= (\d+) jobs\b", section, flags=re.M)
        assert name and grid, f"{DOC}: section {section.splitlines()[0]!r} needs a `name` title and a 'Grid: ... = N jobs' line"
        counts[name.group(1)] = int(grid.group(1))
    return counts


def commented_job_count(name: str) -> int:
    """The job count a study's own file states in its `# Grid: ... = N jobs` comment (which may wrap)."""
    grid = re.search(r"^# Grid: .*?= (\d+) jobs\b", (sweeps_dir() / "experiment" / f"{name}.yaml").read_text(),
                     flags=re.M | re.S)
    assert grid, f"sweeps/experiment/{name}.yaml needs a '# Grid: ... = N jobs' comment"
    return int(grid.group(1))


@pytest.fixture(autouse=True)
def private_outputs(tmp_path, monkeypatch):
    """Sweep dirs and the run store under the test's own directory, whatever the shell's FTDYN_OUT."""
    out = tmp_path / "out"
    monkeypatch.setenv("FTDYN_OUT", str(out))
    return out


def compose_sweep(overrides: list[str]) -> DictConfig:
    """The sweep's config with its hydra node, as `python -m ftdyn.train -m <overrides>` composes it
    (in multirun mode: `compose` refuses sweep values such as `method=sft,lora`)."""
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return GlobalHydra.instance().hydra.compose_config("train", overrides, run_mode=RunMode.MULTIRUN,
                                                           from_shell=True, with_log_configuration=False)


def compose_job(overrides: list[str]) -> C.TrainConfig:
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return C.to_typed(compose("train", overrides=overrides))


def dry_run(overrides: list[str], capsys) -> tuple[list[tuple[str, str]], str]:
    """`-m <overrides> +dry=true` in process: each listed job's (run key, status), and the summary line."""
    cfg = compose_sweep(overrides)
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        dryrun.print_jobs(dryrun.job_overrides(cfg), "train")
    lines = capsys.readouterr().out.splitlines()
    listed = [JOB_LINE.match(line).groups()[1:] for line in lines if JOB_LINE.match(line)]
    summary = next(line for line in lines if re.match(r"^\d+ jobs \(", line))
    return listed, summary


def test_every_study_has_a_section_in_the_docs_and_every_section_a_study():
    assert STUDIES, "no sweeps/experiment/*.yaml"
    assert sorted(stated_job_counts()) == STUDIES


@pytest.mark.parametrize("name", STUDIES)
def test_study_dry_runs_to_the_job_count_its_docs_state_and_every_job_is_valid(name, capsys, private_outputs):
    expected = stated_job_counts()[name]
    listed, summary = dry_run([f"+experiment={name}"], capsys)
    # an invalid job would be listed as `invalid` and counted apart in the summary
    assert summary == f"{expected} jobs ({expected} new); to run: " + summary.split("to run: ")[1]
    assert [status for _, status in listed] == ["new"] * expected
    assert len({key for key, _ in listed}) == expected  # every grid point is a different experiment
    assert not private_outputs.exists()  # a dry run writes nothing


@pytest.mark.parametrize("name", STUDIES)
def test_study_file_states_the_job_count_its_docs_state(name):
    """With the test above: the file's comment, its docs section and its dry run count the same jobs."""
    assert commented_job_count(name) == stated_job_counts()[name]


@pytest.mark.parametrize("name", STUDIES)
def test_study_runs_two_one_thread_jobs_at_a_time_into_its_own_fixed_directory(name, private_outputs):
    cfg = compose_sweep([f"+experiment={name}"])
    assert cfg.hydra.sweep.dir == str(private_outputs / "studies" / name)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 2
    assert cfg.trainer.threads == 1


@pytest.mark.parametrize("name", STUDIES)
def test_slurm_launch_profile_sends_a_study_to_a_job_array_of_one_gpu_jobs(name, private_outputs):
    """`launch=slurm` (sweeps/launch/slurm.yaml): conf/hydra/launcher/slurm.yaml's submitit launcher,
    one GPU a job in bf16, torch's own threads; the same grid into the same directory. The toy
    (`gaussians`) keeps its CPU trainer, so its jobs reserve no GPU."""
    cfg = compose_sweep([f"+experiment={name}", "launch=slurm", "hydra.launcher.partition=gpu"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    gpus = 0 if name == "gaussians" else 1
    assert launcher["_target_"].endswith("SlurmLauncher") and launcher["partition"] == "gpu"
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (1, 1, gpus)
    assert launcher["signal_delay_s"] == 120  # the cluster file's requeue settings, not the plugin's defaults
    assert cfg.hydra.sweep.dir == str(private_outputs / "studies" / name)
    overrides = dryrun.job_overrides(cfg)
    assert len(overrides) == stated_job_counts()[name]
    jobs = [compose_job(o) for o in (overrides[0], overrides[-1])]  # valid: the toy would refuse a GPU trainer
    trainer = ("gpu", "bf16-mixed", 0) if gpus else ("cpu", "32-true", 0)
    assert {(j.trainer.accelerator, j.trainer.precision, j.trainer.threads) for j in jobs} == {trainer}


def test_command_line_wins_over_the_slurm_launch_profile():
    cfg = compose_sweep(["+experiment=lpft", "launch=slurm", "trainer=ddp", "trainer.devices=4",
                         "hydra.launcher.account=acct"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (launcher["tasks_per_node"], launcher["gpus_per_node"], launcher["account"]) == (4, 4, "acct")
    assert (cfg.trainer.strategy, cfg.trainer.devices) == ("ddp", 4)
    local = compose_sweep(["+experiment=lpft", "launch=local"])  # the profile a study takes unless told
    assert local.hydra.launcher == compose_sweep(["+experiment=lpft"]).hydra.launcher


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_study_takes_exactly_the_studies_in_sweeps_and_make_run_is_the_default_one():
    def make(*args):
        return subprocess.run(["make", "-s", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "MAKEFLAGS": ""})

    unknown = make("study", "NAME=nonexistent")  # refused before anything is set up or run
    listed = re.search(r"^make study NAME=<name>: one of (.*)$", unknown.stderr, flags=re.M)
    assert unknown.returncode == 2 and listed and sorted(listed.group(1).split()) == STUDIES
    for name in STUDIES:
        assert make("study-name", f"NAME={name}").returncode == 0
    planned = make("-n", "run").stdout  # -n: print the commands, run none
    assert "-m ftdyn.train -m +experiment=default" in planned and "studies/default --out" in planned


def test_command_line_wins_over_a_studys_grid_settings_and_launcher(tmp_path):
    cfg = compose_sweep(["+experiment=lpft", "task=syn_nli", "method=sft,lora", "trainer.threads=4",
                         "hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}"])
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.partition == "gpu"
    assert cfg.hydra.sweep.dir == str(tmp_path)
    jobs = [compose_job(overrides) for overrides in dryrun.job_overrides(cfg)]
    assert sorted((j.seed, j.task.name, j.method.name) for j in jobs) == sorted(
        (seed, "syn_nli", method) for seed in (0, 1, 2) for method in ("sft", "lora"))
    assert {j.trainer.threads for j in jobs} == {4}

    assert compose_sweep(["+experiment=default", "hydra.launcher.n_jobs=3"]).hydra.launcher.n_jobs == 3
    # amuro_char sets method=sft in its defaults list and task.eval_size in its body
    job = compose_job(["+experiment=amuro_char", "method=lora", "task.eval_size=50", "ckpt.step=600"])
    assert (job.method.name, job.task.eval_size, job.eval.cross_tasks) == ("lora", 50, ["syn_nli", "syn_summ"])


def test_default_study_is_the_readme_sweep_so_make_run_leaves_it_done():
    """`make run`'s jobs are the jobs of `python -m ftdyn.train -m ckpt=range task=syn_nli,syn_para
    fewshot.also_zero_shot=true`,
    launch settings aside (the study runs one-thread jobs)."""
    def run_keys(overrides):
        return sorted(keys.run_key(compose_job(o)) for o in dryrun.job_overrides(compose_sweep(overrides)))

    assert run_keys(["+experiment=default"]) == run_keys(["ckpt=range", "task=syn_nli,syn_para",
                                                          "fewshot.also_zero_shot=true"])


def _env(tmp_path) -> dict[str, str]:
    return {**os.environ, "FTDYN_OUT": str(tmp_path / "out")}


@pytest.mark.slow
def test_dry_run_command_lists_a_study_with_overrides_and_needs_no_ladder(tmp_path):
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    out = subprocess.run([PYTHON, "-m", "ftdyn.train", "-m", "+experiment=lpft", "task=syn_nli",
                          "hydra/launcher=slurm", "+dry=true"], cwd=tmp_path, capture_output=True, text=True,
                         env={**_env(tmp_path), "FTDYN_CACHE": str(cache)}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "\n12 jobs (12 new); to run: " in out.stdout
    assert not (tmp_path / "out").exists() and not list(cache.iterdir())  # nothing written, no ladder built


@pytest.mark.slow
def test_a_study_runs_its_jobs_in_pairs_into_its_directory(micro_ladder, tmp_path):
    out = subprocess.run([PYTHON, "-m", "ftdyn.train", "-m", "+experiment=forgetting_laws", "model=micro",
                          "method.rank=1,2", "seed=0", "task.train_size=32", "task.eval_size=10", "method.max_steps=2"],
                         cwd=tmp_path, capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    study = tmp_path / "out" / "studies" / "forgetting_laws"
    launched = OmegaConf.load(study / "multirun.yaml").hydra.launcher
    assert launched._target_.endswith("JoblibLauncher") and launched.n_jobs == 2
    done = sorted(study.glob("*/done"))  # one numbered job directory per grid point
    assert len(done) == 2
    ranks = set()
    for marker in done:
        job = OmegaConf.load(marker.parent / "config.yaml")
        assert (job.trainer.threads, job.method.rslora, job.eval.every_n_steps) == (1, True, 10)
        ranks.add(job.method.rank)
    assert ranks == {1, 2}
