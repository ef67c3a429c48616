"""ftdyn's training path against a plain `transformers.Trainer` on one workload (`--sections train`).

Every training configuration runs the same workload on the same device: the same model shape
(random weights, the same for every configuration), the same examples (MNLI-like: lengths drawn
log-normally around 75 tokens, 24-400, the last 3 tokens the labelled answer), the same examples
per optimiser step and the same steps. ftdyn's configurations go through the real training path
(`ftdyn.methods.fit.fit_stage`: `TrainDataModule`, `CausalLMModule`, a Lightning Trainer built
from the trainer config); the baseline is `transformers.Trainer`, padding each batch to its
longest example. Each prints one JSON line: real (non-pad) tokens/s, examples/s, step time, peak
memory, MFU = 6 * N * tokens/s / --peak-flops, and the ratio of its tokens/s to the baseline's.
Real tokens/s = examples/s x the mean example length (every configuration trains on the same
examples, one pass). Timing starts after --warmup steps.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import math
import statistics
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch

from ftdyn.bench.workload import Preset, StepClock, device_name, emit, random_model, training_rows


class _LightningClock(L.Callback):
    def __init__(self, clock: StepClock):
        self.clock = clock

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.clock.step_end()


def run_ftdyn(model, rows, batch: int, steps: int, overrides: list[str], device: str, precision: str,
              clock: StepClock, work: Path) -> None:
    """Train through ftdyn's own stage runner, configured as a job with these overrides would be."""
    from ftdyn import config as C
    from ftdyn.config.choices import Trains
    from ftdyn.config.compose import compose_config
    from ftdyn.data.batches import TrainDataModule
    from ftdyn.methods.fit import fit_phase
    from ftdyn.methods.plan import Phase

    accelerator = "gpu" if device == "cuda" else "cpu"
    run = C.to_typed(compose_config(["model=micro", f"method.batch_size={batch}", f"method.max_steps={steps}",
                                     "trainer.checkpoint_every_n_steps=0", f"trainer.accelerator={accelerator}",
                                     f"trainer.precision={precision}", *overrides]))
    t = run.trainer
    data = TrainDataModule(rows, batch, pad_id=0, seed=0, packing=t.packing, pack_width=t.pack_width,
                           bucket_by_length=t.bucket_by_length)
    fit_phase(model, None, data, Phase("ft", Trains.all, run.method.lr, 1), run, work, [_LightningClock(clock)])


def run_trainer(model, rows, batch: int, steps: int, device: str, precision: str, clock: StepClock,
                work: Path) -> None:
    """The baseline: `transformers.Trainer`, batches padded to their longest example, its defaults
    otherwise (AdamW, linear schedule), bf16 autocast when ftdyn's precision is bf16."""
    with contextlib.redirect_stdout(sys.stderr):  # transformers' W&B integration prints on import
        from transformers import Trainer, TrainerCallback, TrainingArguments
        from transformers.trainer_callback import PrinterCallback

    from ftdyn.data.batches import collate

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
    from ftdyn.data.batches import ShuffledBatches
    from ftdyn.data.packing import first_fit

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
    return {"bench": "train", "preset": args.preset, "config": name, "device": device_name(device),
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
