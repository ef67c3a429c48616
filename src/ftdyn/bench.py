"""How fast ftdyn trains and evaluates, against a plain `transformers.Trainer`, in one invocation.

    python -m ftdyn.bench                          # preset tiny, on the CPU (make bench)
    python -m ftdyn.bench --preset olmo1b-shape    # random weights of OLMo-1B's shape, on the GPU

Every training configuration runs the same workload on the same device: the same model shape
(random weights, the same for every configuration), the same examples (MNLI-like: lengths drawn
log-normally around 75 tokens, 24-400, the last 3 tokens the labelled answer), the same examples
per optimiser step and the same steps. ftdyn's configurations go through the real training path
(`ftdyn.methods._fit_stage`: `TrainDataModule`, `CausalLMModule`, a Lightning Trainer built from
the trainer config); the baseline is `transformers.Trainer`, padding each batch to its longest
example. Each prints one JSON line: real (non-pad) tokens/s, examples/s, step time, peak memory,
MFU = 6 * N * tokens/s / --peak-flops, and the ratio of its tokens/s to the baseline's.
Real tokens/s = examples/s x the mean example length (every configuration trains on the same
examples, one pass). Timing starts after --warmup steps.

`--sections eval` times label-logit scoring and greedy generation (`ftdyn.scoring`, the code
every job evaluates with) batched against a per-example loop; `--sections job` times whole
jobs (evaluation before, training, evaluation after) with the fast path on and off.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ftdyn.data import IGNORE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    """A workload: model shape, device defaults and the configurations it compares."""

    arch: dict
    precision: str  #: ftdyn's trainer.precision; the baseline uses the same (bf16 autocast or fp32)
    steps: int
    warmup: int
    eval_examples: int  #: examples scored in batches (the per-example loop scores a quarter)
    gen_examples: int  #: examples generated in batches (the per-example loop generates an eighth, at least 4)
    new_tokens: int  #: greedy generation length
    #: configuration name -> (examples per step, ftdyn trainer overrides; None: the Trainer baseline)
    configs: dict = field(default_factory=dict)
    job: tuple[str, ...] = ()  #: overrides of the whole-job figure


TINY_ARCH = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=384,
                 vocab_size=1024, max_position_embeddings=1024)  # ftdyn.config.ArchConfig's defaults
OLMO1B_ARCH = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=16, intermediate_size=8192,
                   vocab_size=50304, max_position_embeddings=2048)  # 1.18B parameters (perf-anchors.md)

PRESETS = {
    "tiny": Preset(TINY_ARCH, "32-true", steps=25, warmup=4, eval_examples=128, gen_examples=64,
                   new_tokens=16, configs={
        "trainer": (8, None),
        "ftdyn-padded": (8, ["trainer.packing=false"]),
        "ftdyn": (8, []),
    }, job=("model=micro", "task.train_size=400", "task.eval_size=60")),
    "olmo1b-shape": Preset(OLMO1B_ARCH, "bf16-mixed", steps=25, warmup=5, eval_examples=512,
                           gen_examples=128, new_tokens=60, configs={
        "trainer": (8, None),
        "ftdyn-padded": (8, ["trainer.packing=false"]),
        "ftdyn": (8, []),
        "ftdyn-bf16-true": (8, ["trainer.precision=bf16-true"]),
        "ftdyn-compile": (8, ["trainer.compile=true", "trainer.pack_width=1024"]),
        "trainer-b128": (128, None),
        "ftdyn-b128": (128, ["trainer.pack_width=2048"]),
        "ftdyn-b128-compile": (128, ["trainer.compile=true", "trainer.pack_width=2048"]),
    }),
}


def example_lengths(n: int, seed: int = 0, median: float = 75, sigma: float = 0.6, low: int = 24,
                    high: int = 400) -> list[int]:
    """MNLI-like prompt+answer lengths: log-normal around `median`, clipped to [low, high]."""
    g = torch.Generator().manual_seed(seed)
    draws = torch.exp(math.log(median) + sigma * torch.randn(n, generator=g))
    return [int(min(high, max(low, round(float(x))))) for x in draws]


def training_rows(n: int, vocab: int, seed: int = 0, answer: int = 3) -> list[dict]:
    """Random tokens of MNLI-like lengths; the last `answer` tokens are the labelled completion."""
    g = torch.Generator().manual_seed(seed + 1)
    rows = []
    for length in example_lengths(n, seed):
        ids = torch.randint(2, vocab, (length,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE] * (length - answer) + ids[-answer:]})
    return rows


def random_model(arch: dict, seed: int = 0) -> LlamaForCausalLM:
    """A Llama of the preset's shape with seeded random weights (speed does not depend on them)."""
    torch.manual_seed(seed)
    config = LlamaConfig(**arch, num_key_value_heads=arch["num_attention_heads"], tie_word_embeddings=True,
                         pad_token_id=0, eos_token_id=1, bos_token_id=1)
    return LlamaForCausalLM(config)


def _sync(device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


class StepClock:
    """Seconds per optimiser step, from the end of step `warmup` to the end of the last one."""

    def __init__(self, device: str, warmup: int):
        self.device, self.warmup = device, warmup
        self.ends: list[float] = []

    def step_end(self) -> None:
        self.ends.append(_sync(self.device))

    def step_s(self) -> float:
        timed = self.ends[self.warmup:]
        if len(timed) < 2:
            raise RuntimeError(f"{len(self.ends)} steps timed: need more than warmup={self.warmup}")
        return (timed[-1] - timed[0]) / (len(timed) - 1)


class _LightningClock(L.Callback):
    def __init__(self, clock: StepClock):
        self.clock = clock

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.clock.step_end()


def run_ftdyn(model, rows, batch: int, steps: int, overrides: list[str], device: str, precision: str,
              clock: StepClock, work: Path) -> None:
    """Train through ftdyn's own stage runner, configured as a job with these overrides would be."""
    from ftdyn import config as C
    from ftdyn.batches import TrainDataModule
    from ftdyn.choices import Trains
    from ftdyn.methods import Stage, _fit_stage
    from ftdyn.train import compose_config

    accelerator = "gpu" if device == "cuda" else "cpu"
    run = C.to_typed(compose_config(["model=micro", f"method.batch_size={batch}", f"method.max_steps={steps}",
                                     "trainer.checkpoint_every_n_steps=0", f"trainer.accelerator={accelerator}",
                                     f"trainer.precision={precision}", *overrides]))
    t = run.trainer
    data = TrainDataModule(rows, batch, pad_id=0, seed=0, packing=t.packing, pack_width=t.pack_width,
                           bucket_by_length=t.bucket_by_length)
    _fit_stage(model, None, data, Stage("ft", Trains.all, run.method.lr, 1), run, work, [_LightningClock(clock)])


def run_trainer(model, rows, batch: int, steps: int, device: str, precision: str, clock: StepClock,
                work: Path) -> None:
    """The baseline: `transformers.Trainer`, batches padded to their longest example, its defaults
    otherwise (AdamW, linear schedule), bf16 autocast when ftdyn's precision is bf16."""
    with contextlib.redirect_stdout(sys.stderr):  # transformers' W&B integration prints on import
        from transformers import Trainer, TrainerCallback, TrainingArguments
        from transformers.trainer_callback import PrinterCallback

    from ftdyn.batches import collate

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.step_end()

    args = TrainingArguments(output_dir=str(work), per_device_train_batch_size=batch, max_steps=steps,
                             learning_rate=5e-4, weight_decay=0.0, warmup_steps=math.ceil(0.03 * steps),
                             bf16=precision.startswith("bf16"), use_cpu=device == "cpu", report_to=[],
                             save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
                             dataloader_num_workers=0, remove_unused_columns=False)

    def pad(batch_rows):
        padded = collate(batch_rows, pad_id=0)
        return {k: padded[k] for k in ("input_ids", "attention_mask", "labels")}

    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=pad, callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)  # it prints the run's summary dict: stdout is JSON lines only
    trainer.train()


def padding_share(rows: list[dict], batch: int, overrides: list[str] | None) -> float:
    """Padded positions / all positions over one pass of the configuration's batches."""
    from ftdyn.batches import ShuffledBatches
    from ftdyn.packing import first_fit

    packing = overrides is not None and "trainer.packing=false" not in overrides
    width = next((int(o.split("=")[1]) for o in overrides or [] if o.startswith("trainer.pack_width=")), 0)
    real = total = 0
    for idx in ShuffledBatches(len(rows), batch, seed=0):
        lengths = [len(rows[i]["input_ids"]) for i in idx]
        real += sum(lengths)
        w = max(width, *lengths) if packing else max(lengths)
        total += w * (len(first_fit(lengths, w)) if packing else len(lengths))
    return 1 - real / total


def train_line(name: str, batch: int, overrides, preset: Preset, args, base_model, device: str) -> dict:
    """Run one training configuration and measure it."""
    rows = training_rows(batch * preset.steps, preset.arch["vocab_size"])
    clock = StepClock(device, preset.warmup)
    model = copy.deepcopy(base_model)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="ftdyn-bench-") as work:
        if overrides is None:
            run_trainer(model, rows, batch, preset.steps, device, preset.precision, clock, Path(work))
        else:
            run_ftdyn(model, rows, batch, preset.steps, overrides, device, preset.precision, clock, Path(work))
    step_s = clock.step_s()
    tokens_s = batch * statistics.fmean(len(r["input_ids"]) for r in rows) / step_s
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"bench": "train", "preset": args.preset, "config": name, "device": _device_name(device),
            "examples_per_step": batch, "steps": preset.steps, "timed_steps": preset.steps - preset.warmup - 1,
            "step_s": round(step_s, 5), "examples_per_s": round(batch / step_s, 2),
            "real_tokens_per_s": round(tokens_s, 1),
            "padding": round(padding_share(rows, batch, overrides), 3),
            "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if device == "cuda" else None,
            "mfu": round(6 * base_model.num_parameters() * tokens_s / args.peak_flops, 5),
            "overrides": overrides}


def train_section(preset: Preset, args, device: str) -> list[dict]:
    """Every training configuration; ratios against the baseline with the same examples per step."""
    base_model = random_model(preset.arch)
    lines, baseline = [], {}
    for name, (batch, overrides) in preset.configs.items():
        if args.configs and name not in args.configs:
            continue
        line = train_line(name, batch, overrides, preset, args, base_model, device)
        if overrides is None:
            baseline[batch] = line["real_tokens_per_s"]
        line["ratio_to_trainer"] = (round(line["real_tokens_per_s"] / baseline[batch], 3)
                                    if batch in baseline else None)
        emit(line)
        lines.append(line)
    return lines


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else f"cpu x{torch.get_num_threads()} threads"


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m ftdyn.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--sections", default="train,eval,job", help="comma list of train, eval, job")
    parser.add_argument("--configs", default="", help="comma list of training configurations (default: all)")
    parser.add_argument("--peak-flops", type=float, default=989e12, help="device peak for MFU (H100/H200 bf16 dense)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--job-args", default="", help="overrides of the whole-job figure (space separated)")
    parser.add_argument("--job-configs", default="", help="comma list of job-fast, job-padded (default: both)")
    parser.add_argument("--steps", type=int, default=0, help="optimiser steps per configuration (0: the preset's)")
    parser.add_argument("--warmup", type=int, default=-1, help="untimed first steps (-1: the preset's)")
    parser.add_argument("--eval-examples", type=int, default=0, help="examples evaluated in batches (0: the preset's)")
    args = parser.parse_args(argv)
    args.configs = [c for c in args.configs.split(",") if c]
    args.job_configs = [c for c in args.job_configs.split(",") if c]
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from ftdyn.train import quiet_libraries

    quiet_libraries()
    preset = dataclasses.replace(PRESETS[args.preset], **{k: v for k, v in (
        ("steps", args.steps), ("warmup", args.warmup), ("eval_examples", args.eval_examples)) if v > 0 or
        (k == "warmup" and v >= 0)})
    sections = args.sections.split(",")
    lines = []
    if "train" in sections:
        lines += train_section(preset, args, device)
    if "eval" in sections:
        from ftdyn.bench_eval import eval_section

        lines += eval_section(preset, args, device)
    if "job" in sections:
        from ftdyn.bench_eval import job_section

        lines += job_section(preset, args, device)
    return lines


if __name__ == "__main__":
    main()
