"""The schema is the one source of truth: the run key hashes exactly its computed settings, and no
option file restates one of its defaults. Both tests read the list of settings from the schema."""

from __future__ import annotations

import copy
import dataclasses
import enum
import typing
from pathlib import Path

import pytest
from omegaconf import MISSING, OmegaConf

from ftdyn import config as C
from ftdyn.config import choices, keys, settings
from ftdyn.config.compose import compose_config
from ftdyn.config.paths import conf_dir, sweeps_dir

# lplora reads every method field (LoRA and probe), so no method setting is ignored by the method
EVERY_FIELD_USED = ["method=lplora"]


def _flipped(value, f: dataclasses.Field):
    """A different value of the same type: what a user could set instead."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, enum.Enum):
        return next(member for member in type(value) if member != value)
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 + 0.25
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, value[-1] if value else "x"]
    if isinstance(value, dict):
        return {**value, "flipped": 1}
    if value is None:  # an Optional setting left unset
        return 7 if "int" in str(f.type) else "flipped"
    raise TypeError(f"no flip for {f.name}={value!r}")


def _set(run: C.TrainConfig, key: str, value) -> C.TrainConfig:
    """A copy of `run` with `key` set, without re-validating (the key only has to differ)."""
    changed = copy.deepcopy(run)
    *path, name = key.split(".")
    node = changed
    for part in path:
        node = getattr(node, part)
    setattr(node, name, value)
    return changed


RUN = C.to_typed(compose_config(EVERY_FIELD_USED))
LEAVES = [(key, f, value) for key, f, value in settings.leaves(RUN)]


def test_the_schema_marks_the_settings_the_issue_names_as_launch():
    launch = {key for key, _, _ in LEAVES if settings.is_launch(RUN, key)}
    assert {"trainer.threads", "trainer.enable_progress_bar", "trainer.log_every_n_steps", "eval.batch_size",
            "trainer.checkpoint_every_n_steps", "trainer.keep", "logger.csv", "logger.wandb"} <= launch
    assert {"seed", "method.lr", "replay.rate", "trainer.precision", "fewshot.k", "optim.optimizer"}.isdisjoint(launch)


@pytest.mark.parametrize("key, f, value", LEAVES, ids=[key for key, _, _ in LEAVES])
def test_a_launch_setting_never_changes_the_run_key_and_a_computed_one_always_does(key, f, value):
    before = keys.run_key(RUN)
    after = keys.run_key(_set(RUN, key, _flipped(value, f)))
    if settings.is_launch(RUN, key):
        assert after == before, f"{key} is a launch setting but re-keys the job"
    else:
        assert after != before, f"{key} is computed but the run key ignores it"


def test_method_fields_the_method_never_reads_do_not_change_the_key():
    sft = C.to_typed(compose_config(["method=sft"]))
    for key in [f"method.{k}" for k in (*choices.LORA_FIELDS, *choices.PROBE_FIELDS)]:
        f = next(f for name, f, _ in settings.leaves(sft) if name == key)
        assert keys.run_key(_set(sft, key, _flipped(getattr(sft.method, f.name), f))) == keys.run_key(sft)


def test_the_final_checkpoint_by_name_or_by_step_is_one_run():
    assert keys.run_key(C.to_typed(compose_config(["ckpt.step=600"]))) == keys.run_key(
        C.to_typed(compose_config()))


# -- option files state only what differs from the schema ------------------------------------

def _schema_default(schema: type, path: list[str]):
    """The schema's default at `path` under dataclass `schema`; MISSING where it has none
    (a mandatory field, or an entry of a mapping the schema leaves empty)."""
    for i, part in enumerate(path):
        if not dataclasses.is_dataclass(schema):
            return MISSING
        fields = {f.name: f for f in dataclasses.fields(schema)}
        if part not in fields:
            return MISSING
        f = fields[part]
        hint = typing.get_type_hints(schema)[part]
        if dataclasses.is_dataclass(hint):
            schema = hint
            continue
        if typing.get_origin(hint) is dict and dataclasses.is_dataclass(typing.get_args(hint)[1]) and i + 1 < len(path):
            return _schema_default(typing.get_args(hint)[1], path[i + 2:])  # task.data.<split>.<field>
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for key in path[i + 1:]:  # inside a mapping default (optim.optimizer.weight_decay)
            if not isinstance(default, dict) or key not in default:
                return MISSING
            default = default[key]
        return default
    return MISSING


def _leaves(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*prefix, str(key)))
    else:
        yield list(prefix), node


def _same(yaml_value, default) -> bool:
    """Whether a YAML value equals a schema default (Enums by value; a bool never equals 1 or 0)."""
    if default is MISSING or default == "???":
        return False
    default = settings.json_safe(default)
    return isinstance(yaml_value, bool) == isinstance(default, bool) and yaml_value == default


def _option_files() -> list[Path]:
    """Every option file of conf/'s groups and of sweeps/ (the named studies and their launch profiles)."""
    return sorted([p for p in conf_dir().rglob("*.yaml") if p.parent != conf_dir() and "hydra" not in p.parts]
                  + list(sweeps_dir().rglob("*.yaml")))


def _shown(path: Path) -> str:
    """`conf/method/lora.yaml`, `sweeps/experiment/lpft.yaml`: the path from the folder holding both."""
    return str(path.relative_to(conf_dir().parent))


@pytest.mark.parametrize("path", _option_files(), ids=_shown)
def test_no_option_file_restates_a_schema_default(path):
    text = path.read_text()
    content = OmegaConf.to_container(OmegaConf.create(text)) or {}
    content.pop("defaults", None)
    package = [] if "@package _global_" in text else [path.parent.name]
    restated = [".".join(package + keys) for keys, value in _leaves(content)
                if (package + keys)[0] != "hydra" and _same(value, _schema_default(C.TrainConfig, package + keys))]
    assert not restated, f"{_shown(path)} restates the schema's default of {restated}: drop them"


def test_the_restating_check_catches_a_restated_default(tmp_path):
    assert _same(5e-4, _schema_default(C.TrainConfig, ["method", "lr"]))
    assert _same(0.0, _schema_default(C.TrainConfig, ["optim", "optimizer", "weight_decay"]))
    assert _same("cpu", _schema_default(C.TrainConfig, ["trainer", "accelerator"]))
    assert _same("pretrain", _schema_default(C.TrainConfig, ["replay", "source"]))
    assert _same(["default"], _schema_default(C.TrainConfig, ["prompt", "eval"]))
    assert not _same(2e-3, _schema_default(C.TrainConfig, ["method", "lr"]))
    assert not _same("train", _schema_default(C.TrainConfig, ["task", "data", "train", "split"]))  # mandatory
    assert _same(None, _schema_default(C.TrainConfig, ["task", "data", "train", "name"]))
