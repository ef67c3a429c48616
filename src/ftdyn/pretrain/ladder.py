"""Building the tiny checkpoint ladder: a Llama-architecture LM that ftdyn pre-trains on tinyworld.

`ensure` builds a model's ladder where it is missing, once, under a lock, into the directory
`ftdyn.models.ladders` loads from: a BPE tokenizer learned from the corpus and the prompt and
label vocabulary, then the LM trained on the pre-training stream, a Hugging Face checkpoint saved
at every ladder step, each measured (held-out loss, knowledge probe) into `manifest.json`, written
last. `python -m ftdyn.pretrain [overrides]` builds the selected model's ladder, or shows it.
"""

from __future__ import annotations

import logging
import shutil
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
from transformers import LlamaConfig, LlamaForCausalLM, get_linear_schedule_with_warmup

from ftdyn import config as C
from ftdyn.data.batches import TrainDataModule
from ftdyn.data.text import heldout_rows, pretrain_rows
from ftdyn.eval.stage import heldout_measures, probe_accuracy
from ftdyn.files import file_lock, write_json_atomic
from ftdyn.methods.module import CausalLMModule
from ftdyn.models import ladders
from ftdyn.tasks.prompts import vocabulary_lines
from ftdyn.world.corpus import pretrain_corpus
from ftdyn.world.entities import make_world
from ftdyn.world.tokenizer import train_tokenizer

log = logging.getLogger(__name__)

TOKENIZER_DOCS = 20_000  # corpus documents the BPE vocabulary is learned from
GLOSSARY_REPEATS = 20  # how often the prompt and label vocabulary appears in that text
PROGRESS_EVERY_S = 14.0  # a cold build takes minutes: say how far it is this often (+1 step, < 15 s)


def ensure(model: C.ModelConfig) -> Path:
    """The finished ladder directory, building it if it is missing or unfinished: the explicit
    step `make run`, `make study` and each job take before loading (`ftdyn.train`)."""
    root = ladders.ladder_dir(model)
    if (root / "manifest.json").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.with_suffix(".lock")):
        if not (root / "manifest.json").exists():  # another process may have built it meanwhile
            build(model, root)
    return root


def llama_config(arch: C.ArchConfig, tokenizer) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=arch.hidden_size,
                       intermediate_size=arch.intermediate_size, num_hidden_layers=arch.num_layers,
                       num_attention_heads=arch.num_heads, num_key_value_heads=arch.num_heads,
                       max_position_embeddings=arch.max_position, tie_word_embeddings=True,
                       bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)


class _SaveAtSteps(L.Callback):
    """Save a Hugging Face checkpoint when the optimiser step count reaches each ladder step."""

    def __init__(self, steps: list[int], root: Path, tokenizer):
        self.steps, self.root, self.tokenizer = set(steps), root, tokenizer
        self.tokens: dict[int, int] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step in self.steps and step not in self.tokens:
            module.model.save_pretrained(self.root / f"step{step}")
            self.tokenizer.save_pretrained(self.root / f"step{step}")
            self.tokens[step] = module.tokens_seen


def duration(seconds: float) -> str:
    """`45 s` under two minutes, else `3 min`: what a person reads at a glance."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def progress_line(name: str, step: int, total: int, elapsed: float, training: float) -> str:
    """`ladder tiny: step 120/600 (20%), 45 s elapsed, ~3 min left`: the time left extrapolates the
    training seconds per step so far (`training`: seconds since the first step began)."""
    left = training / step * (total - step) if step else float("nan")
    estimate = f", ~{duration(left)} left" if step else ""
    return f"ladder {name}: step {step}/{total} ({100 * step / total:.0f}%), {duration(elapsed)} elapsed{estimate}"


class _Progress(L.Callback):
    """Logs `progress_line` every `every_s` seconds of pre-training: a log line, not a progress bar,
    so it reads the same in a terminal, a pipe and a job log. `clock` is injectable for tests."""

    def __init__(self, name: str, total: int, started: float, every_s: float = PROGRESS_EVERY_S,
                 clock=time.monotonic):
        self.name, self.total, self.started, self.every_s, self.clock = name, total, started, every_s, clock
        self.fit_started = self.last = started

    def on_train_start(self, trainer, module):
        self.fit_started = self.last = self.clock()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now = self.clock()
        if now - self.last >= self.every_s or trainer.global_step == self.total:
            self.last = now
            log.info(progress_line(self.name, trainer.global_step, self.total, now - self.started,
                                   now - self.fit_started))


def build(model: C.ModelConfig, root: Path) -> None:
    """Train the tokenizer and the model, save every checkpoint, then write the manifest."""
    p = model.pretrain
    started = time.monotonic()
    if root.exists():
        shutil.rmtree(root)  # an unfinished earlier build
    work = root.with_name(root.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    world = make_world(p.world_seed, p.n_people)
    n_tokens = p.steps * p.batch_size * p.seq_len
    log.info("building ladder %s (once, cached): a tokenizer, then %d steps x %d x %d = %s tokens",
             root.name, p.steps, p.batch_size, p.seq_len, f"{n_tokens:,}")
    tokenizer = train_tokenizer(pretrain_corpus(world, p.corpus_seed, TOKENIZER_DOCS, p.qa_share)
                                + vocabulary_lines(ladders.label_words()) * GLOSSARY_REPEATS, model.arch.vocab_size)
    tokenizer.save_pretrained(work / "tokenizer")
    rows = pretrain_rows(model.pretrain, tokenizer, n_rows=p.steps * p.batch_size, seq_len=p.seq_len)
    heldout = heldout_rows(model.pretrain, tokenizer)
    L.seed_everything(p.seed, verbose=False)
    lm = LlamaForCausalLM(llama_config(model.arch, tokenizer))
    saver = _SaveAtSteps(model.checkpoints, work, tokenizer)
    # the ladder's own recipe, whatever the optim group of fine-tuning jobs says
    module = CausalLMModule(lm, optimizer=partial(torch.optim.AdamW, lr=p.lr, weight_decay=0.0),
                            scheduler=partial(get_linear_schedule_with_warmup, num_warmup_steps=p.warmup_steps,
                                              num_training_steps=p.steps))
    trainer = L.Trainer(max_steps=p.steps, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[saver, _Progress(model.name, p.steps, started)])
    trainer.fit(module, TrainDataModule(rows, p.batch_size, tokenizer.pad_token_id, seed=p.seed))
    log.info("ladder %s: measuring %d checkpoints (held-out loss, knowledge probe)", model.name,
             len(model.checkpoints))
    entries = [_measure(work, step, saver.tokens[step], heldout, tokenizer, world) for step in model.checkpoints]
    work.rename(root)
    write_json_atomic(root / "manifest.json", {
        "model": model.name, "key": ladders.ladder_key(model), "config": C.as_dict(model),
        "params": lm.num_parameters(), "build_seconds": round(time.monotonic() - started, 1), "checkpoints": entries})
    log.info("ladder %s built in %s", root, duration(time.monotonic() - started))


def _measure(root: Path, step: int, tokens: int, heldout: list[dict], tokenizer, world) -> dict:
    model = LlamaForCausalLM.from_pretrained(root / f"step{step}")
    loss = heldout_measures(model, None, heldout, tokenizer.pad_token_id)["pretrain_loss"]
    return {"step": step, "tokens": tokens, "path": f"step{step}", "heldout_loss": round(loss, 4),
            "probe_acc": round(probe_accuracy(model, tokenizer, world), 4)}


def show(model: C.ModelConfig) -> None:
    """Print a built ladder: its size, build time, and per checkpoint tokens, held-out loss and probe."""
    info = ladders.manifest(model)
    print(f"ladder {ladders.ladder_dir(model)} ({info['params']:,} parameters, built in {info['build_seconds']} s)")
    print(f"{'step':>6} {'tokens':>10} {'heldout_loss':>13} {'probe_acc':>10}")
    for e in info["checkpoints"]:
        print(f"{e['step']:>6} {e['tokens']:>10} {e['heldout_loss']:>13.4f} {e['probe_acc']:>10.3f}")
