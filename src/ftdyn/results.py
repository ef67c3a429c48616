"""Result rows, run keys, done markers and atomic writes (the results contract, DESIGN.md).

A job directory holds `config.yaml` (the resolved config), `results.jsonl` (one JSON object per
row), `examples.jsonl` (per-example scores of the acc, acc_norm and rougeL rows) and, written
last, `done`. Every file is written to a temporary name and renamed, so a
reader never sees half a file and a failed job never looks done.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ftdyn import choices, settings
from ftdyn import config as C


def run_key(cfg: C.TrainConfig) -> str:
    """A stable hash of what the job computes (`run_spec`)."""
    return hashlib.sha256(json.dumps(run_spec(cfg), sort_keys=True).encode()).hexdigest()[:16]


def run_spec(cfg: C.TrainConfig) -> dict[str, object]:
    """Every setting of what the job computes, by dotted key: the schema's launch settings
    (`setting(launch=True)`: threads, logging, evaluation batch size, checkpoint cadence, paths)
    and the method fields the method never reads (`method.rank` of sft) are left out."""
    method = cfg.method.spec
    unused = {f"method.{k}" for k in ((() if method.lora else choices.LORA_FIELDS)
                                      + (() if method.probe else choices.PROBE_FIELDS))}
    unused.add("model.lora_targets")  # what LoRA adapts enters as method.targets, resolved
    spec = {key: settings.json_safe(value) for key, _, value in settings.leaves(cfg)
            if key not in unused and not settings.is_launch(cfg, key)}
    spec["ckpt.step"] = cfg.ckpt_step  # ckpt=final and ckpt.step=<final> are the same run
    if method.lora:
        spec["method.targets"] = cfg.lora_targets
    return spec


def is_cross_task(eval_set: str) -> bool:
    """Another task's set scored in this job (`eval.cross_tasks`): named `<task>/<split>`, with
    split_kind out_of_domain, one of the row contract's four kinds (shared DESIGN.md)."""
    return "/" in eval_set


def run_facts(cfg: C.TrainConfig, key: str, adapted: list[str] | None = None) -> dict:
    """The columns every row of a run carries; `lora_targets` names the modules LoRA adapted
    (`adapted`, comma-joined; None without LoRA)."""
    return {"run_key": key, "model": cfg.model.name, "ckpt_step": cfg.ckpt_step, "task": cfg.task.name,
            "method": str(cfg.method.name), "lora_rank": cfg.method.rank if cfg.method.spec.lora else None,
            "lora_targets": ",".join(adapted) if adapted else None, "replay_rate": cfg.replay.rate,
            "seed": cfg.seed}


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None):
    """Hold an exclusive fcntl lock on `path` (created with its directory); `on_wait` runs first
    if another process holds it, e.g. to log that this one waits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json_atomic(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


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
