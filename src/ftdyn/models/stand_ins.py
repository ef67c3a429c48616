"""Offline stand-ins of the catalogue's hub models at their real size: the real architecture and
shape, random weights, a small tinyworld tokenizer.

    python -m ftdyn.models.stand_ins pythia160m DIR      # DIR/step143000/: the final checkpoint's revision
    python -m ftdyn.models.stand_ins olmo1b DIR          # DIR/main/

A job then reads it as the real model's final checkpoint: `model=pythia160m model.local_dir=DIR`
(`--revision` writes another one). Nothing a stand-in computes means anything about the real
model; what it shows is whether the real path fits (memory, time, shapes) on a machine.

`CATALOGUE_SHAPES` holds, per model option of `conf/model/`, the transformers model type and the
shape fields of the hub repository's `config.json` (allenai/OLMo-1B-hf, EleutherAI/pythia-*).
`meta_model` builds that shape on the meta device, with no weights, for tests that need the real
tensor sizes without the memory.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

log = logging.getLogger(__name__)

_PYTHIA = dict(vocab_size=50304, max_position_embeddings=2048, rotary_pct=0.25, rotary_emb_base=10000,
               use_parallel_residual=True, tie_word_embeddings=False, hidden_act="gelu", layer_norm_eps=1e-5)

#: model option -> (transformers model type, the shape fields of its hub config.json)
CATALOGUE_SHAPES: dict[str, tuple[str, dict]] = {
    "olmo1b": ("olmo", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=16,
                            num_key_value_heads=16, vocab_size=50304, max_position_embeddings=2048,
                            tie_word_embeddings=True, hidden_act="silu", clip_qkv=None)),
    "pythia160m": ("gpt_neox", dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                    num_attention_heads=12, **_PYTHIA)),
    "pythia410m": ("gpt_neox", dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                    num_attention_heads=16, **_PYTHIA)),
    "pythia1b": ("gpt_neox", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                  num_attention_heads=8, **_PYTHIA)),
}


def real_config(name: str, **changes) -> PretrainedConfig:
    """The transformers config of catalogue model `name` at its real shape (`changes` override fields)."""
    if name not in CATALOGUE_SHAPES:
        raise KeyError(f"no real shape for model {name!r}; catalogue models: {sorted(CATALOGUE_SHAPES)}")
    model_type, shape = CATALOGUE_SHAPES[name]
    return AutoConfig.for_model(model_type, **{**shape, **changes})


def meta_model(name: str) -> PreTrainedModel:
    """Catalogue model `name` at its real shape on the meta device: every tensor's size, no memory."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(real_config(name))


def write(name: str, root: Path, revision: str, seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Save a random model of `name`'s real shape and the tinyworld tokenizer as `root/revision`
    (bf16 on disk, as the hub's checkpoints; a job loads it at `model.dtype`)."""
    from ftdyn.world.tokenizer import tinyworld_tokenizer

    tokenizer = tinyworld_tokenizer()
    config = real_config(name, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    target = root / revision
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    log.info("wrote %s: %s, %s parameters, random weights", target, type(model).__name__,
             f"{model.num_parameters():,}")
    return target


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m ftdyn.models.stand_ins", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(CATALOGUE_SHAPES))
    parser.add_argument("root", type=Path, help="the directory model.local_dir will name")
    parser.add_argument("--revision", default=None,
                        help="the revision to write (default: the model's final checkpoint's, e.g. main)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return write(args.model, args.root, args.revision or final_revision(args.model))


def final_revision(name: str) -> str:
    """The revision a job on model option `name` loads for its final checkpoint (`ckpt=final`)."""
    from ftdyn import config as C
    from ftdyn.config.compose import compose_config

    model = C.to_typed(compose_config([f"model={name}"])).model
    return model.final_revision or model.revision_format.format(step=model.checkpoints[-1])


if __name__ == "__main__":
    main()
