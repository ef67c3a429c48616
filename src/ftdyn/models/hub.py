"""Real checkpoint ladders loaded by name from the Hugging Face hub (model.source=hub).

A step's revision is resolved at runtime from the revisions that exist, never hard-coded: online
the repository's branches (`huggingface_hub.list_repo_refs`), offline the subdirectories of a
local stand-in (`model.local_dir/<revision>/`, each a checkpoint saved with `save_pretrained`).
Step N matches the revision `model.revision_format` gives (`step{step}` -> `step1000`) or that
name followed by a suffix (OLMo's `step342000-tokens1434B`); the final checkpoint loads from
`model.final_revision` when one is set (OLMo: `main`, as Amuro & Char did).

Remote code runs only with model.trust_remote_code=true, passed explicitly to every loader.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftdyn import config as C

log = logging.getLogger(__name__)


def available_revisions(model: C.ModelConfig) -> list[str]:
    """Revision names that exist: the stand-in's subdirectories, else the hub repository's branches."""
    if model.local_dir:
        root = Path(model.local_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"model.local_dir={root} of {model.name} is not a directory")
        return sorted(p.name for p in root.iterdir() if p.is_dir())
    from huggingface_hub import list_repo_refs

    return sorted(ref.name for ref in list_repo_refs(model.hf_id).branches)


def _step_order(revision: str) -> tuple[int, str]:
    match = re.search(r"\d+", revision)
    return (int(match.group()) if match else -1, revision)


def revision_of(model: C.ModelConfig, step: int, revisions: list[str]) -> str:
    """The revision that holds `step`; a clear error naming what exists when none (or several) does."""
    where = model.local_dir or model.hf_id
    if model.final_revision and model.checkpoints and step == model.checkpoints[-1]:
        wanted = [model.final_revision] if model.final_revision in revisions else []
    else:
        name = model.revision_format.format(step=step)
        wanted = [r for r in revisions if r == name or r.startswith(name + "-")]
    if len(wanted) == 1:
        return wanted[0]
    listed = sorted(revisions, key=_step_order)
    if not wanted:
        raise KeyError(f"model {model.name} ({where}) has no revision for step {step}; "
                       f"revisions that exist: {listed}")
    raise KeyError(f"model {model.name} ({where}): step {step} matches several revisions {wanted}")


def resolve(model: C.ModelConfig, step: int) -> str:
    """The revision of `step`, resolved against the revisions that exist now."""
    return revision_of(model, step, available_revisions(model))


def load(model: C.ModelConfig, step: int):
    """The model, tokenizer and revision of one checkpoint: from the hub at that revision, or from
    the stand-in.

    The tokenizer gets its end-of-text token as padding if it has none (evaluation builds its own
    left-padded batches with explicit positions, so the padding side does not matter).
    """
    revision = resolve(model, step)
    if model.local_dir:
        source, kwargs = str(Path(model.local_dir) / revision), {}
    else:
        source, kwargs = model.hf_id, {"revision": revision}
    log.info("loading %s step %d: %s (revision %s)", model.name, step, source, revision)
    lm = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, model.dtype),
                                              trust_remote_code=model.trust_remote_code, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=model.trust_remote_code, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm, tokenizer, revision
