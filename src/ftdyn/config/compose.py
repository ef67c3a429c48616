"""Composing a job's config as `python -m ftdyn.train` does, for tests, tools and other entry points.

`register` gives Hydra the root schema (`train_schema`, the first entry of `conf/train.yaml`'s
defaults) and ftdyn's resolvers, `ftdyn.sweeps` among them: the path of `sweeps/` that
`conf/train.yaml` puts on Hydra's search path; `compose_config` composes `conf/train.yaml` with
overrides; `quiet_libraries` keeps a command's log to what matters. Every command-line entry point
calls them.
"""

from __future__ import annotations

import logging
import warnings

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from ftdyn.config.paths import conf_dir, sweeps_dir
from ftdyn.config.schema import TrainConfig


def register() -> None:
    """Make the root schema available to `conf/train.yaml` as `train_schema`, the `ftdyn.join`
    resolver that turns a list into a sweep's comma list (`conf/ckpt/range.yaml`),
    `ftdyn.gpus`, the GPUs per node a launcher reserves for the trainer, and `ftdyn.sweeps`, the
    absolute path of `sweeps/` (`hydra.searchpath` in `conf/train.yaml`: a relative `file://`
    entry would be read from the working directory, and the wheel moves the folder)."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    if not OmegaConf.has_resolver("ftdyn.join"):
        OmegaConf.register_new_resolver("ftdyn.join", lambda items: ",".join(str(i) for i in items))
    if not OmegaConf.has_resolver("ftdyn.gpus"):  # GPUs a launcher reserves per node (conf/hydra/launcher)
        OmegaConf.register_new_resolver("ftdyn.gpus", lambda accelerator, devices:
                                        devices if accelerator in ("gpu", "cuda") else 0)
    if not OmegaConf.has_resolver("ftdyn.sweeps"):
        OmegaConf.register_new_resolver("ftdyn.sweeps", lambda: sweeps_dir().as_posix())


def quiet_libraries() -> None:
    """Keep job logs to what matters: no per-load progress bars, accelerator banners, or the
    libraries' warnings about each other (Lightning on torch's pytree: once per job process)."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")  # peft on transformers 5


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The composed root config for `overrides`, as `python -m ftdyn.train` would build it."""
    register()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides or []))
