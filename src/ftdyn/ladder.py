"""The tiny checkpoint ladder: a Llama-architecture LM that ftdyn pre-trains on tinyworld.

Built on first use under `$FTDYN_CACHE/ladders/<model>-<key>/` (default cache `~/.cache/ftdyn`),
where `key` hashes everything that shapes the ladder, so a changed config builds a new one. The
directory holds `tokenizer/`, one Hugging Face checkpoint per step (`step<N>/`, safetensors) and
`manifest.json` with step, tokens seen, held-out LM loss and knowledge-probe accuracy per
checkpoint. The manifest is written last and atomically: a ladder without it is not finished.

`python -m ftdyn.ladder [overrides]` builds the selected model's ladder, or shows it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
from safetensors import SafetensorError, safe_open
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, get_linear_schedule_with_warmup

from ftdyn import config as C
from ftdyn import fingerprints, hub_models
from ftdyn.batches import TrainDataModule
from ftdyn.data import heldout_rows, pretrain_rows
from ftdyn.evaluate import heldout_measures, probe_accuracy
from ftdyn.methods.module import CausalLMModule
from ftdyn.results import file_lock, write_json_atomic
from ftdyn.tasks.prompts import vocabulary_lines
from ftdyn.world.corpus import pretrain_corpus
from ftdyn.world.entities import make_world
from ftdyn.world.tasks import NLI_LABELS, PARA_LABELS
from ftdyn.world.tokenizer import train_tokenizer

log = logging.getLogger(__name__)

LADDER_VERSION = 3  # bump when the build itself changes (corpus, tokenizer, training)
TOKENIZER_DOCS = 20_000  # corpus documents the BPE vocabulary is learned from
GLOSSARY_REPEATS = 20  # how often the prompt and label vocabulary appears in that text
PROGRESS_EVERY_S = 14.0  # a cold build takes minutes: say how far it is this often (+1 step, < 15 s)


class CheckpointError(RuntimeError):
    """A ladder checkpoint exists but cannot be read."""


#: pretrain fields added after LADDER_VERSION 3, with the value that reproduces the ladders built
#: before them: at that value a field stays out of the key, so those ladders keep their keys (and caches)
LATER_PRETRAIN_FIELDS = {"qa_share": 0.0}


def _pretrain_spec(pretrain: C.PretrainConfig) -> dict:
    spec = C.as_dict(pretrain)
    return {k: v for k, v in spec.items() if not (k in LATER_PRETRAIN_FIELDS and v == LATER_PRETRAIN_FIELDS[k])}


def ladder_key(model: C.ModelConfig) -> str:
    """A hash of everything that shapes the ladder's weights."""
    spec = {"version": LADDER_VERSION, "arch": C.as_dict(model.arch), "pretrain": _pretrain_spec(model.pretrain),
            "checkpoints": list(model.checkpoints), "glossary": vocabulary_lines(_label_words())}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def ladder_dir(model: C.ModelConfig) -> Path:
    return C.cache_root() / "ladders" / f"{model.name}-{ladder_key(model)}"


def checkpoint_dir(model: C.ModelConfig, step: int) -> Path:
    """Where the checkpoint of `step` lives; builds the ladder first if needed."""
    if step not in model.checkpoints:
        raise KeyError(f"step {step} is not in the {model.name} ladder; available steps: {list(model.checkpoints)}")
    return ensure(model) / f"step{step}"


def ensure(model: C.ModelConfig) -> Path:
    """The finished ladder directory, building it if it is missing or unfinished."""
    root = ladder_dir(model)
    if (root / "manifest.json").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.with_suffix(".lock")):
        if not (root / "manifest.json").exists():  # another process may have built it meanwhile
            build(model, root)
    return root


def _label_words() -> list[str]:
    return [*NLI_LABELS, *PARA_LABELS]


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
                                + vocabulary_lines(_label_words()) * GLOSSARY_REPEATS, model.arch.vocab_size)
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
        "model": model.name, "key": ladder_key(model), "config": C.as_dict(model),
        "params": lm.num_parameters(), "build_seconds": round(time.monotonic() - started, 1), "checkpoints": entries})
    log.info("ladder %s built in %s", root, duration(time.monotonic() - started))


def _measure(root: Path, step: int, tokens: int, heldout: list[dict], tokenizer, world) -> dict:
    model = LlamaForCausalLM.from_pretrained(root / f"step{step}")
    loss = heldout_measures(model, None, heldout, tokenizer.pad_token_id)["pretrain_loss"]
    return {"step": step, "tokens": tokens, "path": f"step{step}", "heldout_loss": round(loss, 4),
            "probe_acc": round(probe_accuracy(model, tokenizer, world), 4)}


def load_checkpoint(model: C.ModelConfig, step: int, record: bool = True):
    """The model and tokenizer of one checkpoint: an ftdyn-built ladder's, or a hub model's
    (`ftdyn.hub_models`). Either is fingerprinted into the ladder's record (`ftdyn.fingerprints`),
    unless `record` is false (a checkpoint loaded again by the same job)."""
    if model.source == C.ModelSource.hub:
        lm, tokenizer, revision = hub_models.load(model, step)
    else:
        path, revision = checkpoint_dir(model, step), f"step{step}"
        try:
            remote = model.trust_remote_code  # never True unless model.trust_remote_code=true is set
            lm = LlamaForCausalLM.from_pretrained(path, trust_remote_code=remote)
            tokenizer = PreTrainedTokenizerFast.from_pretrained(path, trust_remote_code=remote)
        except UNREADABLE as err:
            raise _checkpoint_error(path, step, err) from err
    if record:
        fingerprints.record(record_name(model), step, lm, revision)
    return lm, tokenizer


#: What a corrupt, truncated or missing checkpoint file raises while loading: safetensors' header
#: check, transformers' OSError for a config.json that does not parse or a file that is absent,
#: the json module on a tokenizer file, and a file cut inside a UTF-8 character.
UNREADABLE = (SafetensorError, OSError, json.JSONDecodeError, UnicodeDecodeError)


def _checkpoint_error(path: Path, step: int, err: Exception) -> CheckpointError:
    """A CheckpointError naming the file that cannot be read (found by reading each file), or the
    checkpoint directory when no single file is to blame, and how to rebuild the ladder."""
    culprit = _unreadable_file(path)
    where = f"{culprit} is corrupt or truncated" if culprit else f"cannot load it from {path}"
    return CheckpointError(f"checkpoint step {step} of the ladder: {where} ({type(err).__name__}: {err}); "
                           f"delete {path.parent} to rebuild the ladder (python -m ftdyn.ladder)")


def _unreadable_file(path: Path) -> Path | None:
    """The first safetensors or JSON file in `path` that does not parse, if any."""
    for file in sorted(path.glob("*")):
        try:
            if file.suffix == ".safetensors":
                with safe_open(file, "pt"):  # checks the header against the file's length
                    pass
            elif file.suffix == ".json":
                json.loads(file.read_text())
        except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError):
            return file
    return None


def record_name(model: C.ModelConfig) -> str:
    """Which fingerprint record a model's checkpoints go to: one per built ladder, one per hub
    repository, and one per local stand-in (so a stand-in never mixes with the real ladder)."""
    if model.source == C.ModelSource.ladder:
        return ladder_dir(model).name
    if model.local_dir:
        where = hashlib.sha256(str(Path(model.local_dir).resolve()).encode()).hexdigest()[:8]
        return f"{model.name}-local-{where}"
    return model.name


def manifest(model: C.ModelConfig) -> dict:
    return json.loads((ensure(model) / "manifest.json").read_text())


def main(argv: list[str]) -> None:
    """Build (if needed) and show the ladder of the model selected by Hydra overrides."""
    from ftdyn.train import compose_config, quiet_libraries

    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)  # rouge_score (absl) has
    # already set up the root logger at WARNING, on import
    quiet_libraries()
    cfg = C.to_typed(compose_config(argv))
    if cfg.model.source == C.ModelSource.toy:  # no language-model ladder: each job pre-trains its MLP once (ftdyn.toy)
        print(f"model={cfg.model.name} is the two-Gaussians toy: no ladder to build; its jobs pre-train each "
              f"width x depth once, cached under {C.cache_root() / 'toy'}")
        return
    info = manifest(cfg.model)
    print(f"ladder {ladder_dir(cfg.model)} ({info['params']:,} parameters, built in {info['build_seconds']} s)")
    print(f"{'step':>6} {'tokens':>10} {'heldout_loss':>13} {'probe_acc':>10}")
    for e in info["checkpoints"]:
        print(f"{e['step']:>6} {e['tokens']:>10} {e['heldout_loss']:>13.4f} {e['probe_acc']:>10.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
