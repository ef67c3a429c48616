"""Building the tiny checkpoint ladder: a Llama-architecture LM that ftdyn pre-trains on tinyworld.

`ensure` builds a model's ladder where it is missing, once, under a lock, into the directory
`ftdyn.models.ladders` loads from: a BPE tokenizer learned from the corpus and the prompt and
label vocabulary, then the LM trained on the pre-training stream, a Hugging Face checkpoint saved
at every ladder step, each measured (held-out loss, knowledge probe) into `manifest.json`, written
last. `python -m ftdyn.pretrain [overrides]` builds the selected model's ladder, or shows it.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
from transformers import LlamaConfig, LlamaForCausalLM, get_linear_schedule_with_warmup

from ftdyn import config as C
from ftdyn.data.batches import TrainDataModule
from ftdyn.data.text import heldout_rows, pretrain_rows
from ftdyn.eval.heldout import heldout_measures
from ftdyn.eval.knowledge import knowledge_accuracy
from ftdyn.methods.module import CausalLMModule
from ftdyn.models import ladders
from ftdyn.pretrain.build import Progress, SaveAtSteps, ensure_built, pretrain
from ftdyn.tasks.prompts import vocabulary_lines
from ftdyn.world.corpus import pretrain_corpus
from ftdyn.world.entities import make_world
from ftdyn.world.tokenizer import train_tokenizer

log = logging.getLogger(__name__)

TOKENIZER_DOCS = 20_000  # corpus documents the BPE vocabulary is learned from
GLOSSARY_REPEATS = 20  # how often the prompt and label vocabulary appears in that text


def ensure(model: C.ModelConfig) -> Path:
    """The built ladder's directory, building it first if it is missing or unfinished: the
    explicit step `make run`, `make study` and each job take before loading (`ftdyn.train`)."""
    return ensure_built(ladders.ladder_dir(model), lambda work: build(model, work))


def llama_config(arch: C.ArchConfig, tokenizer) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=arch.hidden_size,
                       intermediate_size=arch.intermediate_size, num_hidden_layers=arch.num_layers,
                       num_attention_heads=arch.num_heads, num_key_value_heads=arch.num_heads,
                       max_position_embeddings=arch.max_position, tie_word_embeddings=True,
                       bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)


def build(model: C.ModelConfig, work: Path) -> dict:
    """Train the tokenizer and the model into `work`, save every checkpoint, measure each; return
    the manifest (`ftdyn.pretrain.build.ensure_built` writes it, last)."""
    p = model.pretrain
    started = time.monotonic()
    world = make_world(p.world_seed, p.n_people)
    log.info("building ladder %s (once, cached): a tokenizer, then %d steps x %d x %d = %s tokens",
             ladders.ladder_dir(model).name, p.steps, p.batch_size, p.seq_len, f"{p.steps * p.batch_size * p.seq_len:,}")
    tokenizer = train_tokenizer(pretrain_corpus(world, p.corpus_seed, TOKENIZER_DOCS, p.qa_share)
                                + vocabulary_lines(ladders.label_words()) * GLOSSARY_REPEATS, model.arch.vocab_size)
    tokenizer.save_pretrained(work / "tokenizer")
    rows = pretrain_rows(model.pretrain, tokenizer, n_rows=p.steps * p.batch_size, seq_len=p.seq_len)
    heldout = heldout_rows(model.pretrain, tokenizer)
    L.seed_everything(p.seed, verbose=False)
    lm = LlamaForCausalLM(llama_config(model.arch, tokenizer))

    def save(module, step: int) -> None:
        module.model.save_pretrained(work / f"step{step}")
        tokenizer.save_pretrained(work / f"step{step}")

    saver = SaveAtSteps(model.checkpoints, save)
    # the ladder's own recipe, whatever the optim group of fine-tuning jobs says
    module = CausalLMModule(lm, optimizer=partial(torch.optim.AdamW, lr=p.lr, weight_decay=0.0),
                            scheduler=partial(get_linear_schedule_with_warmup, num_warmup_steps=p.warmup_steps,
                                              num_training_steps=p.steps))
    pretrain(module, TrainDataModule(rows, p.batch_size, tokenizer.pad_token_id, seed=p.seed), p.steps,
             [saver, Progress(f"ladder {model.name}", p.steps, started)])
    log.info("ladder %s: measuring %d checkpoints (held-out loss, knowledge probe)", model.name,
             len(model.checkpoints))
    entries = [_measure(work, step, saver.tokens[step], heldout, tokenizer, world) for step in model.checkpoints]
    return {"model": model.name, "key": ladders.ladder_key(model), "config": C.as_dict(model),
            "params": lm.num_parameters(), "checkpoints": entries}


def _measure(root: Path, step: int, tokens: int, heldout: list[dict], tokenizer, world) -> dict:
    model = LlamaForCausalLM.from_pretrained(root / f"step{step}")
    loss = heldout_measures(model, None, heldout, tokenizer.pad_token_id)["pretrain_loss"]
    return {"step": step, "tokens": tokens, "path": f"step{step}", "heldout_loss": round(loss, 4),
            "probe_acc": round(knowledge_accuracy(model, tokenizer, world), 4)}


def show(model: C.ModelConfig) -> None:
    """Print a built ladder: its size, build time, and per checkpoint tokens, held-out loss and probe."""
    info = ladders.manifest(model)
    print(f"ladder {ladders.ladder_dir(model)} ({info['params']:,} parameters, built in {info['build_seconds']} s)")
    print(f"{'step':>6} {'tokens':>10} {'heldout_loss':>13} {'probe_acc':>10}")
    for e in info["checkpoints"]:
        print(f"{e['step']:>6} {e['tokens']:>10} {e['heldout_loss']:>13.4f} {e['probe_acc']:>10.3f}")
