"""The evaluation and whole-job parts of `python -m ftdyn.bench`.

Evaluation: label-logit scoring (`ftdyn.scoring.choice_logits`: length-sorted, left-padded
batches, one forward pass per batch whose last position gives every label candidate's logit) and
greedy generation (`ftdyn.scoring.generate`: batched, KV cache), each in examples/s, batched at
--eval-batch against the same function one example at a time. Prompts are tinyworld text cut to
MNLI-like lengths; the model is the preset's random one (bf16 on CUDA, as the anchors measured).

Whole job: `ftdyn.train.train` end to end (evaluation before, fine-tuning, evaluation after),
with the fast path as configured by default and with packing off, the evaluation time of each
stage timed apart.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch

from ftdyn.bench import Preset, _device_name, _sync, emit, example_lengths, random_model

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
    start = _sync(device)
    call()
    return n / (_sync(device) - start)


def eval_section(preset: Preset, args, device: str) -> list[dict]:
    """Examples/s of label scoring and of generation, batched and one example at a time."""
    from ftdyn.scoring import choice_logits, generate
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
                    "device": _device_name(device), "batch_size": EVAL_BATCH if config == "batched" else 1,
                    "examples": count, "examples_per_s": round(rate, 2), "ratio_to_loop": round(rate / loop, 2),
                    **({"new_tokens": preset.new_tokens} if name == "generation" else {})}
            emit(line)
            lines.append(line)
    return lines


class _StageTimer:
    """Wraps `ftdyn.train.evaluate_stage` to add up the seconds each stage's evaluation takes."""

    def __init__(self, measure, device: str):
        self.measure, self.device, self.seconds = measure, device, {}

    def __call__(self, model, stage, **kwargs):
        start = _sync(self.device)
        rows = self.measure(model, stage=stage, **kwargs)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + _sync(self.device) - start
        return rows


def job_section(preset: Preset, args, device: str) -> list[dict]:
    """One whole job with the fast path (the defaults) and one with packing off, in that order
    (the first pays any cold cache, so the order does not favour the fast path)."""
    from ftdyn import config as C
    from ftdyn import ladder
    from ftdyn import train as train_module
    from ftdyn.train import compose_config

    overrides = args.job_args.split() or list(preset.job)
    if not overrides:
        log.warning("no job for preset %s: give --job-args", args.preset)
        return []
    run = C.to_typed(compose_config(overrides))
    if run.model.source == C.ModelSource.ladder:
        ladder.ensure(run.model)  # built once, outside the timed jobs
    lines, walls = [], {}
    configs = [(c, e) for c, e in (("job-fast", []), ("job-padded", ["trainer.packing=false"]))
               if not args.job_configs or c in args.job_configs]
    for config, extra in configs:
        timer = _StageTimer(train_module.evaluate_stage, device)
        train_module.evaluate_stage = timer
        try:
            with tempfile.TemporaryDirectory(prefix="ftdyn-bench-job-") as work:
                start = time.perf_counter()
                facts = train_module.train(compose_config([*overrides, *extra, "trainer.checkpoint_every_n_steps=0"]),
                                           Path(work) / "job")
                walls[config] = time.perf_counter() - start
        finally:
            train_module.evaluate_stage = timer.measure
        evals = sum(timer.seconds.values())
        line = {"bench": "job", "preset": args.preset, "config": config, "device": _device_name(device),
                "overrides": [*overrides, *extra], "wall_s": round(walls[config], 2),
                "eval_before_s": round(timer.seconds.get("before", 0.0), 2),
                "eval_after_s": round(timer.seconds.get("after", 0.0), 2),
                "train_and_load_s": round(walls[config] - evals, 2),
                "train_steps": facts.get("run/run/train_steps"), "train_tokens": facts.get("run/run/train_tokens"),
                "ratio_to_padded": None}
        lines.append(line)
    for line in lines:
        if "job-padded" in walls:
            line["ratio_to_padded"] = round(walls["job-padded"] / walls[line["config"]], 3)
        emit(line)
    return lines
