"""A job's result files and its done marker (the results contract: docs/results.md).

A job directory holds `config.yaml` (the resolved config), `results.jsonl` (one JSON object per
row), `examples.jsonl` (per-example scores of the acc, acc_norm and rougeL rows) and, written
last, `done`. Every file is written to a temporary name and renamed (`ftdyn.files`), so a
reader never sees half a file and a failed job never looks done.
"""

from __future__ import annotations

import json
from pathlib import Path

from ftdyn import config as C
from ftdyn.files import write_atomic, write_json_atomic


def is_cross_task(eval_set: str) -> bool:
    """Another task's set scored in this job (`eval.cross_tasks`): named `<task>/<split>`, with
    split_kind out_of_domain, one of the row contract's four kinds (docs/results.md)."""
    return "/" in eval_set


def run_facts(cfg: C.TrainConfig, key: str, adapted: list[str] | None = None) -> dict:
    """The columns every row of a run carries; `lora_targets` names the modules LoRA adapted
    (`adapted`, comma-joined; None without LoRA)."""
    return {"run_key": key, "model": cfg.model.name, "ckpt_step": cfg.ckpt_step, "task": cfg.task.name,
            "method": str(cfg.method.name), "lora_rank": cfg.method.rank if cfg.method.spec.lora else None,
            "lora_targets": ",".join(adapted) if adapted else None, "replay_rate": cfg.replay.rate,
            "seed": cfg.seed}


#: run facts that time the job (`wall_s`, each stage's evaluation): the only rows two runs of one job never share
TIMINGS = ("wall_s", "eval_before_s", "eval_after_s")

#: per-example lists a row may carry; they go to examples.jsonl, never to results.jsonl
PER_EXAMPLE = ("scores", "confidences")


def write_rows(job_dir: Path, rows: list[dict]) -> Path:
    """results.jsonl; per-example lists a row carries (`PER_EXAMPLE`) go to examples.jsonl instead."""
    path = job_dir / "results.jsonl"
    write_atomic(path, "".join(json.dumps({k: v for k, v in r.items() if k not in PER_EXAMPLE}) + "\n"
                               for r in rows))
    return path


EXAMPLE_COLUMNS = ("eval_set", "split_kind", "stage", "prompt", "metric")


def write_examples(job_dir: Path, key: str, rows: list[dict]) -> Path:
    """examples.jsonl: the per-example scores of every row that has them (acc, acc_norm, rougeL),
    one object per row, so the report can bootstrap confidence intervals; classification acc
    lines also carry each example's max-softmax `confidences` (reliability diagrams)."""
    path = job_dir / "examples.jsonl"
    lines = [{"run_key": key, **{c: r[c] for c in EXAMPLE_COLUMNS}, **{c: r[c] for c in PER_EXAMPLE if c in r}}
             for r in rows if "scores" in r]
    write_atomic(path, "".join(json.dumps(line) + "\n" for line in lines))
    return path


def mark_done(job_dir: Path, key: str) -> None:
    write_json_atomic(job_dir / "done", {"run_key": key})


def is_done(job_dir: Path) -> bool:
    return (job_dir / "done").exists()


def read_rows(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for p in paths for line in p.read_text().splitlines() if line.strip()]
