"""A/B on the CPU: the default study's training step (tiny ladder, final checkpoint, syn_nli, batch 8),
packed vs padded, in one process, alternating blocks of 30 steps; CPU time per step, which other
processes on a shared machine disturb less than wall time. docs/performance.md quotes it.

    PYTHONPATH=src python scripts/ab_study_step.py      # needs the tiny ladder (make run builds it)
"""

from __future__ import annotations

import time
import warnings

import torch

from ftdyn import config as C
from ftdyn import ladder, tasks
from ftdyn.batches import collate
from ftdyn.methods import _rows
from ftdyn.methods.module import CausalLMModule
from ftdyn.packing import collate_packed
from ftdyn.train import compose_config
from ftdyn.world.entities import make_world

BLOCK, ROUNDS = 30, 4


def main() -> None:
    torch.set_num_threads(1)  # as the study runs its jobs (trainer.threads=1)
    warnings.filterwarnings("ignore")
    run = C.to_typed(compose_config(["model=tiny", "task=syn_nli"]))
    model, tokenizer = ladder.load_checkpoint(run.model, run.ckpt_step)
    task = tasks.load(run.task, make_world(0, run.model.pretrain.n_people), seed=0)
    rows = _rows(task, tokenizer, run, run.model.arch.max_position, False)
    batches = [rows[i:i + 8] for i in range(0, 8 * BLOCK * ROUNDS, 8)]
    padded = sum(max(len(r["input_ids"]) for r in b) * len(b) for b in batches)
    print(f"padding in padded batches: {1 - sum(len(r['input_ids']) for b in batches for r in b) / padded:.3f}")
    model.train()
    module, optimizer = CausalLMModule(model, None, None), torch.optim.AdamW(model.parameters(), lr=1e-5)
    layouts = {"packed": lambda b: collate_packed(b, tokenizer.pad_token_id),
               "padded": lambda b: collate(b, tokenizer.pad_token_id)}
    cpu = dict.fromkeys(layouts, 0.0)
    for block in range(ROUNDS):
        for name in (("packed", "padded") if block % 2 == 0 else ("padded", "packed")):
            start = time.process_time()
            for batch in batches[block * BLOCK:(block + 1) * BLOCK]:
                module.training_step(layouts[name](batch), 0).backward()
                optimizer.step()
                optimizer.zero_grad()
            cpu[name] += time.process_time() - start
    print("CPU ms per step:", {name: round(1000 * s / (BLOCK * ROUNDS), 2) for name, s in cpu.items()})


if __name__ == "__main__":
    main()
