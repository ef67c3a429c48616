"""The ladder builds, learns, caches by config, and loads as Hugging Face checkpoints."""

from __future__ import annotations

import json
import logging
import re
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaForCausalLM

from ftdyn import config as C
from ftdyn.config.compose import compose_config
from ftdyn.models import checkpoints, ladders
from ftdyn.pretrain import build, ladder


def test_every_checkpoint_is_a_loadable_hf_checkpoint(micro_ladder, micro_model_cfg):
    manifest = json.loads((micro_ladder / "manifest.json").read_text())
    assert [e["step"] for e in manifest["checkpoints"]] == micro_model_cfg.checkpoints
    for entry in manifest["checkpoints"]:
        path = micro_ladder / entry["path"]
        assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
        model, tokenizer = checkpoints.load_checkpoint(micro_model_cfg, entry["step"])
        assert isinstance(model, LlamaForCausalLM)
        assert model.config.num_hidden_layers == 2 and model.config.hidden_size <= 64
        assert tokenizer.eos_token_id is not None


def test_manifest_records_tokens_and_a_falling_heldout_loss(micro_ladder, micro_model_cfg):
    entries = json.loads((micro_ladder / "manifest.json").read_text())["checkpoints"]
    p = micro_model_cfg.pretrain
    assert [e["tokens"] for e in entries] == [s * p.batch_size * p.seq_len for s in micro_model_cfg.checkpoints]
    losses = [e["heldout_loss"] for e in entries]
    assert losses == sorted(losses, reverse=True) and losses[0] - losses[-1] > 0.5
    assert all(0 <= e["probe_acc"] <= 1 for e in entries)


def test_checkpoints_differ_from_each_other(micro_model_cfg):
    first, _ = checkpoints.load_checkpoint(micro_model_cfg, micro_model_cfg.checkpoints[0])
    last, _ = checkpoints.load_checkpoint(micro_model_cfg, micro_model_cfg.checkpoints[-1])
    assert not torch.equal(first.model.embed_tokens.weight, last.model.embed_tokens.weight)


def test_a_changed_config_is_a_different_ladder(micro_model_cfg):
    other = C.to_typed(compose_config(["model=micro", "model.pretrain.lr=1e-3"])).model
    assert ladders.ladder_dir(other) != ladders.ladder_dir(micro_model_cfg)
    same = C.to_typed(compose_config(["model=micro"])).model
    assert ladders.ladder_dir(same) == ladders.ladder_dir(micro_model_cfg)


def test_a_step_outside_the_ladder_lists_the_available_ones(micro_model_cfg):
    with pytest.raises(KeyError, match=r"step 7 is not in the micro ladder; available steps: \[5, 10, 20, 40\]"):
        ladders.checkpoint_dir(micro_model_cfg, 7)


def test_an_unfinished_build_is_rebuilt_and_says_how_far_it_is(micro_ladder, micro_model_cfg, tmp_path,
                                                               monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="ftdyn.pretrain")
    monkeypatch.setenv("FTDYN_CACHE", str(tmp_path))
    root = ladders.ladder_dir(micro_model_cfg)
    (root / "step5").mkdir(parents=True)  # a build that died before its manifest
    assert ladder.ensure(micro_model_cfg) == root
    assert (root / "manifest.json").exists() and (root / "step40" / "model.safetensors").exists()
    assert re.search(r"ladder micro: step 40/40 \(100%\), \d+ s elapsed, ~0 s left", caplog.text)
    assert "ladder micro: measuring 4 checkpoints" in caplog.text


def test_the_progress_line_gives_step_share_elapsed_and_time_left():
    # 120 of 600 steps took 36 s of training: 480 more take ~144 s
    assert build.progress_line("ladder tiny", 120, 600, elapsed=45.0, training=36.0) == \
        "ladder tiny: step 120/600 (20%), 45 s elapsed, ~2 min left"
    assert build.progress_line("ladder tiny", 0, 600, elapsed=3.0, training=0.0) == \
        "ladder tiny: step 0/600 (0%), 3 s elapsed"


def test_the_build_logs_progress_at_least_every_15_s(caplog):
    caplog.set_level(logging.INFO, logger="ftdyn.pretrain.build")
    now = [9.0]  # a fake clock: the tokenizer took 9 s, then each step 0.3 s
    progress = build.Progress("ladder tiny", total=600, started=0.0, every_s=15.0, clock=lambda: now[0])
    progress.on_train_start(None, None)
    logged_at = [now[0]]
    for step in range(1, 601):
        now[0] += 0.3
        count = len(caplog.records)
        progress.on_train_batch_end(SimpleNamespace(global_step=step), None, None, None, step - 1)
        if len(caplog.records) > count:
            logged_at.append(now[0])
    gaps = [b - a for a, b in zip(logged_at, logged_at[1:])]
    assert len(gaps) == 12 and max(gaps) <= 15 + 0.3  # 180 s of training, a line per 15 s
    assert caplog.records[-1].getMessage() == "ladder tiny: step 600/600 (100%), 3 min elapsed, ~0 s left"


def test_loading_a_missing_ladder_fails_naming_the_command_that_builds_it_and_builds_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("FTDYN_CACHE", str(tmp_path))
    micro = C.to_typed(compose_config(["model=micro"])).model
    with pytest.raises(ladders.LadderNotBuilt, match=r"ladder micro is not built .* `python -m ftdyn.pretrain "
                                                     r"model=micro`"):
        checkpoints.load_checkpoint(micro, 40)
    mlp = C.to_typed(compose_config(["model=mlp", "task=two_gaussians"])).model
    with pytest.raises(ladders.LadderNotBuilt, match=r"`python -m ftdyn.pretrain model=mlp model.width=64 "
                                                     r"model.depth=2`"):
        checkpoints.load_checkpoint(mlp, 1000)
    assert list(tmp_path.rglob("*")) == []  # nothing built, nothing locked
