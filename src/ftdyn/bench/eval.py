"""Evaluation against a per-example loop (`--sections eval` of `python -m ftdyn.bench`).

Label-logit scoring (`ftdyn.eval.scoring.choice_logits`: length-sorted, left-padded batches, one
forward pass per batch whose last position gives every label candidate's logit) and greedy
generation (`ftdyn.eval.scoring.generate`: batched, KV cache), each in examples/s, batched at
--eval-batch against the same function one example at a time. Prompts are tinyworld text cut to
MNLI-like lengths; the model is the preset's random one (bf16 on CUDA, as the anchors measured).
"""

from __future__ import annotations

import logging

import torch

from ftdyn.bench.workload import Preset, device_name, emit, example_lengths, random_model, sync

log = logging.getLogger(__name__)

EVAL_BATCH = 64


def bench_tokenizer():
    """The tinyworld BPE tokenizer (`ftdyn.world.tokenizer.tinyworld_tokenizer`) and text to cut prompts from."""
    from ftdyn.world.corpus import corpus
    from ftdyn.world.entities import make_world
    from ftdyn.world.tokenizer import tinyworld_tokenizer

    return tinyworld_tokenizer(), corpus(make_world(0, 20), 1, 2000)


def bench_prompts(tokenizer, texts: list[str], n: int, seed: int = 2) -> list[str]:
    """`n` prompts of MNLI-like token lengths: windows of the tokenised text, decoded."""
    ids = tokenizer(" ".join(texts[:400]), add_special_tokens=False)["input_ids"]
    prompts, at = [], 0
    for length in example_lengths(n, seed):
        if at + length > len(ids):
            at = 0
        prompts.append(tokenizer.decode(ids[at:at + length]))
        at += length
    return prompts


def _rate(device: str, n: int, call) -> float:
    start = sync(device)
    call()
    return n / (sync(device) - start)


def eval_section(preset: Preset, args, device: str) -> list[dict]:
    """Examples/s of label scoring and of generation, batched and one example at a time."""
    from ftdyn.eval.scoring import choice_logits, generate
    from ftdyn.world.tasks import NLI_LABELS

    tokenizer, texts = bench_tokenizer()
    model = random_model(preset.arch).to(device).eval()
    if device == "cuda":
        model = model.to(torch.bfloat16)
    n = max(preset.eval_examples, preset.gen_examples)
    prompts = bench_prompts(tokenizer, texts, n)
    choices = [list(NLI_LABELS)] * n
    workloads = {  # name: (call, examples batched, examples one at a time)
        "label_scoring": (lambda p, b: choice_logits(model, tokenizer, p, choices[:len(p)], batch_size=b),
                          preset.eval_examples, max(8, preset.eval_examples // 4)),
        "generation": (lambda p, b: generate(model, tokenizer, p, preset.new_tokens, batch_size=b),
                       preset.gen_examples, max(4, preset.gen_examples // 8)),
    }
    lines = []
    for name, (work, n, loop_n) in workloads.items():
        work(prompts[:4], 4)  # warm-up: kernels, allocator
        batched = _rate(device, n, lambda: work(prompts[:n], EVAL_BATCH))
        loop = _rate(device, loop_n, lambda: work(prompts[:loop_n], 1))
        for config, rate, count in (("batched", batched, n), ("per-example", loop, loop_n)):
            line = {"bench": "eval", "preset": args.preset, "workload": name, "config": config,
                    "device": device_name(device), "batch_size": EVAL_BATCH if config == "batched" else 1,
                    "examples": count, "examples_per_s": round(rate, 2), "ratio_to_loop": round(rate / loop, 2),
                    **({"new_tokens": preset.new_tokens} if name == "generation" else {})}
            emit(line)
            lines.append(line)
    return lines


