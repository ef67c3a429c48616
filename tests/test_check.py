"""The results contract's own check (`ftdyn.runs.check`): rows that hold pass, each kind of broken
row is named with its file and line, and an empty directory is told apart."""

from __future__ import annotations

import json
from pathlib import Path

from ftdyn.runs import check

GOOD = {"run_key": "k1", "model": "micro", "ckpt_step": 40, "task": "syn_nli", "method": "sft", "lora_rank": None,
        "replay_rate": 0.0, "prompt": "default", "seed": 0, "eval_set": "test", "split_kind": "in_domain",
        "stage": "before", "metric": "acc", "value": 0.5}


def _job(root: Path, name: str, rows: list, raw: str = "") -> Path:
    (root / name).mkdir(parents=True)
    path = root / name / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + raw)
    return path


def test_rows_that_hold_pass(tmp_path, capsys):
    _job(tmp_path, "a", [GOOD, {**GOOD, "stage": "step_10", "split_kind": None, "metric": "train_loss"},
                         {**GOOD, "stage": "run", "eval_set": "run", "split_kind": None, "metric": "wall_s", "value": 3}])
    assert check.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out == "1 files, 3 rows, 0 problems\n"


def test_every_kind_of_broken_row_is_named_with_its_file_and_line(tmp_path, capsys):
    path = _job(tmp_path, "a", [
        {k: v for k, v in GOOD.items() if k != "seed"} | {"run_key": "k2"},
        {**GOOD, "split_kind": "held_out"},
        {**GOOD, "stage": "during"},
        {**GOOD, "value": float("nan")},
        {**GOOD, "value": True},
    ], raw="{not json\n")
    _job(tmp_path, "b", [{**GOOD, "seed": 1}])  # the same run key, other run facts
    found = list(check.problems([tmp_path]))
    assert found == [
        (f"{path}:1", "missing columns ['seed']"),
        (f"{path}:2", "split_kind 'held_out': allowed ['in_domain', 'out_of_domain', 'probe', 'pretrain'] or null"),
        (f"{path}:3", "stage 'during': allowed before, after, run or step_<N>"),
        (f"{path}:4", "value nan is not a finite number"),
        (f"{path}:5", "value True is not a finite number"),
        (f"{path}:6", "not a JSON object (Expecting property name enclosed in double quotes)"),
        (f"{tmp_path / 'b' / 'results.jsonl'}:1",
         "run_key k1 has run facts ('micro', 40, 'syn_nli', 'sft', None, 0.0, 1), elsewhere "
         "('micro', 40, 'syn_nli', 'sft', None, 0.0, 0)"),
    ]
    assert check.main([str(tmp_path)]) == 1
    assert capsys.readouterr().out.endswith("2 files, 7 rows, 7 problems\n")


def test_a_directory_without_results_is_told_apart(tmp_path, capsys):
    assert check.main([str(tmp_path)]) == 2
    assert "no results.jsonl under" in capsys.readouterr().out
