"""The results contract, checked: `python -m ftdyn.runs.check DIR [DIR ...]`.

Every `results.jsonl` under the directories is read line by line, and every row must hold
(docs/results.md):

- the columns every row carries (`REQUIRED`);
- a split kind the contract knows (`SPLIT_KINDS`, or none) and a stage that is `before`, `after`,
  `run` or `step_<N>`;
- a finite number as its value;
- one set of run facts (`RUN_FACTS`: model, checkpoint, task, method, rank, replay rate, seed) per
  run key, whichever job directory a row comes from.

It prints one line per broken row, then a summary, and exits 0 when every row holds, 1 when
some do not, 2 when there is nothing to read.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path

REQUIRED = ("run_key", "model", "ckpt_step", "task", "method", "lora_rank", "replay_rate", "prompt", "seed",
            "eval_set", "split_kind", "stage", "metric", "value")
SPLIT_KINDS = ("in_domain", "out_of_domain", "probe", "pretrain", None)
STAGE = re.compile(r"(before|after|run|step_\d+)")
RUN_FACTS = ("model", "ckpt_step", "task", "method", "lora_rank", "replay_rate", "seed")


def row_problems(row: dict) -> list[str]:
    """What breaks the contract in one row (empty if nothing)."""
    problems = []
    missing = [c for c in REQUIRED if c not in row]
    if missing:
        problems.append(f"missing columns {missing}")
    if row.get("split_kind") not in SPLIT_KINDS:
        problems.append(f"split_kind {row.get('split_kind')!r}: allowed {[k for k in SPLIT_KINDS if k]} or null")
    if not STAGE.fullmatch(str(row.get("stage", ""))):
        problems.append(f"stage {row.get('stage')!r}: allowed before, after, run or step_<N>")
    value = row.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        problems.append(f"value {value!r} is not a finite number")
    return problems


def problems(dirs: list[Path]) -> Iterator[tuple[str, str]]:
    """(where, what) for every row under `dirs` that breaks the contract, file and line named."""
    facts: dict[str, tuple] = {}
    for path in (f for d in dirs for f in sorted(Path(d).rglob("results.jsonl"))):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield where, f"not a JSON object ({err.msg})"
                continue
            for problem in row_problems(row):
                yield where, problem
            these = tuple(row.get(c) for c in RUN_FACTS)
            first = facts.setdefault(row.get("run_key"), these)
            if first != these:
                yield where, f"run_key {row.get('run_key')} has run facts {these}, elsewhere {first}"


def main(argv: list[str] | None = None) -> int:
    dirs = [Path(d) for d in (argv if argv is not None else sys.argv[1:]) or ["."]]
    files = [f for d in dirs for f in d.rglob("results.jsonl")]
    if not files:
        print(f"no results.jsonl under {' '.join(map(str, dirs))}")
        return 2
    found = list(problems(dirs))
    for where, what in found:
        print(f"{where}: {what}")
    rows = sum(1 for f in files for line in f.read_text().splitlines() if line.strip())
    print(f"{len(files)} files, {rows} rows, {len(found)} problems")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
