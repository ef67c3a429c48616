"""Read a sweep's result rows into one table and print the before/after summary.

    python -m ftdyn.report SWEEP_DIR [SWEEP_DIR ...]

Prints, per checkpoint x task, each evaluation set's score before and after fine-tuning (the
first evaluation format), lists jobs that started but never finished, writes `results.csv`
beside the first sweep directory's jobs, and ends with `results: <first sweep directory>`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ftdyn import results

KIND_ORDER = {"in_domain": 0, "out_of_domain": 1, "probe": 2, "pretrain": 3}


def load(dirs: list[Path]) -> pd.DataFrame:
    """Every row of every `results.jsonl` under `dirs`."""
    files = [f for d in dirs for f in sorted(Path(d).rglob("results.jsonl"))]
    return pd.DataFrame(results.read_rows(files))


def unfinished(dirs: list[Path]) -> list[Path]:
    """Job directories with a config but no done marker: failed or still running."""
    configs = [c for d in dirs for c in sorted(Path(d).rglob("config.yaml")) if ".hydra" not in c.parts]
    return [c.parent for c in configs if not results.is_done(c.parent)]


def before_after(table: pd.DataFrame) -> pd.DataFrame:
    """One line per checkpoint x task x eval set x metric: its value before and after."""
    scored = table[table["stage"].isin(["before", "after"])]
    fmt = scored["prompt"].dropna().iloc[0] if scored["prompt"].notna().any() else None
    scored = scored[(scored["prompt"] == fmt) | scored["prompt"].isna()]
    wide = scored.pivot_table(index=["task", "ckpt_step", "split_kind", "eval_set", "metric"],
                              columns="stage", values="value", aggfunc="mean").reset_index()
    wide["kind_order"] = wide["split_kind"].map(KIND_ORDER)
    wide = wide.sort_values(["task", "ckpt_step", "kind_order", "eval_set"]).drop(columns="kind_order")
    return wide[[c for c in ["task", "ckpt_step", "split_kind", "eval_set", "metric", "before", "after"]
                 if c in wide.columns]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    table = load(args.dirs)
    if table.empty:
        raise SystemExit(f"no results.jsonl under {' '.join(map(str, args.dirs))}")
    results.write_atomic(args.dirs[0] / "results.csv", table.to_csv(index=False))
    with pd.option_context("display.max_rows", 500, "display.width", 140, "display.float_format", "{:.3f}".format):
        print(before_after(table).to_string(index=False))
    for job in unfinished(args.dirs):
        print(f"unfinished job (failed or running): {job}")
    print(f"results: {args.dirs[0].resolve()}")


if __name__ == "__main__":
    main()
