"""Every option of every config group composes; bad keys and values fail, naming them."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from ftdyn import config as C
from ftdyn.config.compose import compose_config
from ftdyn.config.paths import conf_dir, sweeps_dir

# `_name.yaml` files are bases that options extend (conf/model/_hub.yaml), not options themselves;
# the groups of sweeps/ (the named studies, their launch profiles) are on Hydra's search path too
GROUP_OPTIONS = sorted((group.name, option.stem) for root in (conf_dir(), sweeps_dir())
                       for group in root.iterdir() if group.is_dir()
                       for option in group.glob("*.yaml") if not option.stem.startswith("_"))


def test_every_group_has_options():
    groups = {g for g, _ in GROUP_OPTIONS}
    assert {"model", "ckpt", "task", "method", "optim", "prompt", "replay", "trainer", "logger"} <= groups


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_option_composes_into_the_typed_schema(group, option):
    # the named studies and launch profiles are added (+), not in train.yaml's defaults
    overrides = [f"+{group}={option}" if group in ("experiment", "launch") else f"{group}={option}"]
    if group == "task" and option == "syn_probe":
        overrides.append("method=base")  # the probe is evaluation-only
    if (group, option) in (("model", "mlp"), ("task", "two_gaussians")):
        overrides.append("task=two_gaussians" if group == "model" else "model=mlp")  # the toy is a pair
    run = C.to_typed(compose_config(overrides))
    assert isinstance(run, C.TrainConfig)
    if group in ("model", "task", "method"):
        assert getattr(run, group).name == option


def test_defaults_are_the_documented_default_job():
    run = C.to_typed(compose_config())
    assert (run.model.name, run.task.name, run.method.name) == ("tiny", "syn_nli", "sft")
    assert run.ckpt.step is None and run.ckpt_step == run.model.checkpoints[-1]
    assert len(run.model.checkpoints) >= 6


def test_unknown_key_fails_at_composition_naming_it():
    with pytest.raises(ConfigCompositionException, match="Could not override 'method.rnak'"):
        compose_config(["method.rnak=4"])


@pytest.mark.parametrize(("override", "message"), [
    ("+method.rnak=4", "unknown key method.rnak: allowed keys of method are ['alpha', 'batch_size'"),
    ("+model.arch.hiden=3", "unknown key model.arch.hiden: allowed keys of model.arch are ['hidden_size'"),
    ("+rnak=4", "unknown key rnak: allowed keys of the root are ['ckpt'"),
])
def test_a_forced_unknown_key_is_rejected_before_anything_loads(override, message):
    with pytest.raises(C.ConfigError) as err:
        C.to_typed(compose_config([override]))
    assert message in str(err.value)


def test_value_of_wrong_type_fails_at_composition_naming_the_key():
    with pytest.raises(ConfigCompositionException, match="Error merging override method.lr=fast") as err:
        compose_config(["method.lr=fast"])
    assert isinstance(err.value.__cause__, ValidationError)
    assert "'fast'" in str(err.value.__cause__) and "Float" in str(err.value.__cause__)


@pytest.mark.parametrize(("override", "message"), [
    ("replay.rate=1.5", "replay.rate=1.5: allowed [0, 1)"),
    ("replay.rate=-0.1", "replay.rate=-0.1: allowed [0, 1)"),
    ("method.lr=-1e-3", "method.lr=-0.001: must be > 0"),
    ("fewshot.k=-1", "fewshot.k=-1: must be >= 0"),
    ("eval.every_n_steps=-5", "eval.every_n_steps=-5: must be >= 0"),
    ("method.rank=0", "method.rank=0: must be >= 1"),
    ("method.rank=-4", "method.rank=-4: must be >= 1"),
    ("seed=-1", "seed=-1: must be >= 0"),
    ("task.train_size=-5", "task.train_size=-5: must be >= 1"),
    ("method.max_steps=0", "method.max_steps=0: allowed -1 (every epoch) or >= 1"),
    ("model.pretrain.n_people=0", "model.pretrain.n_people=0: must be >= 1"),
    ("optim.optimizer._target_=torch.optim.Adamm", "optim.optimizer._target_='torch.optim.Adamm': no such callable"),
    ("+trainer.extra.max_steps=3", "trainer.extra.max_steps: ftdyn sets this Trainer argument itself"),
    ("+trainer.extra.gradient_clip=1", "trainer.extra.gradient_clip: not an argument of lightning.Trainer; allowed"),
    ("method=lpft task=syn_summ", "method=lpft trains a classification head, but task=syn_summ is generation; "
                                  "methods allowed for it: ['base', 'sft', 'lora']"),
    ("ckpt.step=7", "ckpt.step=7 is not in the tiny ladder; available steps: [20, 40, 80, 160, 320, 600]"),
    ("task=syn_probe", "task=syn_probe is evaluation-only; use method=base"),
])
def test_bad_value_fails_with_the_key_and_what_is_allowed(override, message):
    cfg = compose_config(override.split())
    with pytest.raises(C.ConfigError) as err:
        C.to_typed(cfg)
    assert message in str(err.value)


@pytest.mark.parametrize(("override", "allowed"), [
    ("method.name=dpo", "[base, sft, lora, lp, ft, lpft, lorahead, lplora]"),
    ("prompt.train=chat", "[default, io, instruct]"),
    ("eval.label_scoring=last", "[first_token, first_token_space, next_word, constrained]"),
    ("trainer.keep=some", "[none, last, all]"),
    ("task.kind=ranking", "[classification, generation, multiple_choice, regression]"),
])
def test_a_closed_choice_outside_its_enum_fails_at_composition(override, allowed):
    key, value = override.split("=")
    with pytest.raises(ConfigCompositionException) as err:
        compose_config([override])
    cause = str(err.value.__cause__)
    assert f"Invalid value '{value}', expected one of {allowed}" in cause and f"full_key: {key}" in cause


def test_every_problem_is_reported_at_once():
    with pytest.raises(C.ConfigError) as err:
        C.to_typed(compose_config(["replay.rate=2", "method.lr=0"]))
    assert "replay.rate" in str(err.value) and "method.lr" in str(err.value)


def test_range_sweeps_the_selected_models_checkpoints():
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["ckpt=range", "model=micro"], return_hydra_config=True)
    assert OmegaConf.select(cfg, "hydra.sweeper.params")["ckpt.step"] == "5,10,20,40"
    assert cfg.ckpt.step is None
