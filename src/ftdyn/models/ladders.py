"""ftdyn's own checkpoint ladders, as stored: where a ladder lives, whether it is built, and its
checkpoints loaded. Loading never builds: a missing ladder fails naming the command that builds it
(`python -m ftdyn.pretrain`, `ftdyn.pretrain.ladder`).

A ladder lives under `$FTDYN_CACHE/ladders/<model>-<key>/`, where `key` hashes everything that
shapes its weights (`ladder_key`), so a changed config means another ladder. The directory holds
`tokenizer/`, one Hugging Face checkpoint per step (`step<N>/`, safetensors) and `manifest.json`
with step, tokens seen, held-out LM loss and knowledge-probe accuracy per checkpoint. The
manifest is written last: a ladder without it is not built.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from ftdyn import config as C
from ftdyn.tasks.prompts import vocabulary_lines
from ftdyn.world.tasks import NLI_LABELS, PARA_LABELS

LADDER_VERSION = 3  # bump when the build itself changes (corpus, tokenizer, training)


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
            "checkpoints": list(model.checkpoints), "glossary": vocabulary_lines(label_words())}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def ladder_dir(model: C.ModelConfig) -> Path:
    return C.cache_root() / "ladders" / f"{model.name}-{ladder_key(model)}"


def checkpoint_dir(model: C.ModelConfig, step: int) -> Path:
    """Where the checkpoint of `step` lives, in a built ladder (`built`; loading never builds)."""
    if step not in model.checkpoints:
        raise KeyError(f"step {step} is not in the {model.name} ladder; available steps: {list(model.checkpoints)}")
    return built(model) / f"step{step}"


class LadderNotBuilt(FileNotFoundError):
    """A ladder a job wants has not been built (or its build did not finish)."""


def is_built(model: C.ModelConfig) -> bool:
    """Whether the ladder's build finished: its manifest, written last, exists."""
    return (ladder_dir(model) / "manifest.json").exists()


def built(model: C.ModelConfig) -> Path:
    """The ladder's directory; `LadderNotBuilt`, naming the command that builds it, if it is missing."""
    if not is_built(model):
        raise LadderNotBuilt(f"ladder {model.name} is not built (no {ladder_dir(model) / 'manifest.json'}): build it "
                             f"with `python -m ftdyn.pretrain model={model.name}` and the same model.* overrides as "
                             f"the job (make run and make study build theirs first)")
    return ladder_dir(model)


def label_words() -> list[str]:
    return [*NLI_LABELS, *PARA_LABELS]


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
                           f"delete {path.parent} to rebuild the ladder (python -m ftdyn.pretrain)")


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


def manifest(model: C.ModelConfig) -> dict:
    """The built ladder's manifest: its steps, tokens, held-out loss and knowledge-probe accuracy."""
    return json.loads((built(model) / "manifest.json").read_text())


def load(model: C.ModelConfig, step: int):
    """The model and tokenizer of `step` of a built ladder; `CheckpointError` naming the file that
    cannot be read."""
    path = checkpoint_dir(model, step)
    try:
        remote = model.trust_remote_code  # never True unless model.trust_remote_code=true is set
        lm = LlamaForCausalLM.from_pretrained(path, trust_remote_code=remote)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path, trust_remote_code=remote)
    except UNREADABLE as err:
        raise _checkpoint_error(path, step, err) from err
    return lm, tokenizer
