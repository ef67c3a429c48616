"""The workloads `python -m ftdyn.bench` measures: presets (model shape, device defaults, the
configurations compared), MNLI-like examples, a seeded random model, a step clock, JSON lines."""


from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ftdyn.data.rows import IGNORE

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


def sync(device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


class StepClock:
    """Seconds per optimiser step, from the end of step `warmup` to the end of the last one."""

    def __init__(self, device: str, warmup: int):
        self.device, self.warmup = device, warmup
        self.ends: list[float] = []

    def step_end(self) -> None:
        self.ends.append(sync(self.device))

    def step_s(self) -> float:
        timed = self.ends[self.warmup:]
        if len(timed) < 2:
            raise RuntimeError(f"{len(self.ends)} steps timed: need more than warmup={self.warmup}")
        return (timed[-1] - timed[0]) / (len(timed) - 1)


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else f"cpu x{torch.get_num_threads()} threads"


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)
