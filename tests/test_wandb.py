"""logger=wandb: a real offline multirun, read back from the runs' transaction logs.

Offline, wandb 0.31 writes everything (run record, config, history, summary, exit) into the
run's `run-<id>.wandb` file: a LevelDB-style log of `wandb_internal_pb2.Record` protobufs
(7-byte header ':W&B' + magic + version, then 32 KiB blocks of records, each with a 7-byte
header: crc, length, type FULL/FIRST/MIDDLE/LAST). `wandb sync` reads the same file.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import PYTHON
from wandb.proto import wandb_internal_pb2 as pb

from ftdyn import config as C
from ftdyn.config.compose import compose_config
from ftdyn.launch import wandb_runs

BLOCK, HEADER, FULL, LAST = 32768, 7, 1, 4


def records(path: Path):
    """Every record of a run's .wandb transaction log, in order."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, chunk = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a record header is padding
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def _key(item) -> str:
    """An item's key: `key`, or its `nested_key` parts joined by '/'."""
    return item.key or "/".join(item.nested_key)


def read_run(run_dir: Path) -> dict:
    """What an offline run recorded: its run record, config, final summary, history keys, exit code."""
    (log,) = run_dir.glob("run-*.wandb")
    out = {"config": {}, "summary": {}, "history_keys": set(), "exit_code": None}
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            out["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "history":
            out["history_keys"] |= {_key(i) for i in record.history.item}
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


@pytest.mark.slow
def test_offline_multirun_logs_one_finished_run_per_job_with_its_config_curves_and_results(micro_ladder, tmp_path,
                                                                                           outputs):
    sweep, wandb_dir = tmp_path / "study_x", tmp_path / "wandb"
    wandb_dir.mkdir()
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir)}
    env.pop("WANDB_API_KEY", None)
    out = subprocess.run([PYTHON, "-m", "ftdyn.train", "-m", "logger=wandb", "model=micro", "task.train_size=32",
                          "task.eval_size=10", "method.max_steps=4", "trainer.log_every_n_steps=1",
                          "method=sft,lora", f"hydra.sweep.dir={sweep}"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted(wandb_dir.glob("wandb/offline-run-*"))
    assert len(runs) == 2  # one run per job: the second job did not log into the first's run
    seen = {}
    for run_dir in runs:
        run = read_run(run_dir)
        method = run["config"]["method"]["name"]
        (job,) = [p.parent for p in sweep.glob("*/done")
                  if json.loads(p.read_text())["run_key"] == run["config"]["run_key"]]
        rows = [json.loads(line) for line in (job / "results.jsonl").read_text().splitlines()]
        store = outputs / "jobs" / run["config"]["run_key"]  # the job's run store keeps its W&B id
        assert run["run"].run_id == (store / "wandb_id").read_text().strip()
        assert run_dir.name.endswith(run["run"].run_id)
        assert run["run"].run_group == "study_x"  # the sweep's name
        assert run["run"].job_type == method
        assert set(run["run"].tags) == {"task:syn_nli", "ckpt:40", "model:micro"}
        assert run["config"]["task"]["name"] == "syn_nli" and run["config"]["method"]["name"] == rows[0]["method"]
        for row in rows:
            assert run["summary"][f"{row['stage']}/{row['eval_set']}/{row['metric']}"] == pytest.approx(row["value"])
        stage = "lora" if method == "lora" else "ft"
        assert f"{stage}-train/loss" in run["history_keys"]  # the training curve, per stage
        (table,) = run_dir.glob("files/media/table/results_*.table.json")  # the rows as a table
        table = json.loads(table.read_text())
        assert table["columns"] == list(wandb_runs.RESULT_COLUMNS) and len(table["data"]) == len(rows)
        assert any(key.startswith("results/") for key in run["history_keys"])
        assert run["exit_code"] == 0  # finished
        seen[method] = run["run"].run_id
    assert set(seen) == {"sft", "lora"} and len(set(seen.values())) == 2


def test_mode_is_offline_without_an_api_key_and_online_with_one(monkeypatch, tmp_path):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    auto = {"project": "ftdyn", "mode": None}
    assert wandb_runs.resolve_mode(auto) == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123456789\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_runs.resolve_mode(auto) == "online"
    (tmp_path / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "0123456789")
    assert wandb_runs.resolve_mode(auto) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_runs.resolve_mode(auto) == "disabled"
    assert wandb_runs.resolve_mode({"mode": "offline"}) == "offline"


def test_run_id_is_kept_in_the_state_directory_and_reused(tmp_path):
    first = wandb_runs.run_id(tmp_path)
    assert len(first) == 8 and (tmp_path / "wandb_id").read_text().strip() == first
    assert wandb_runs.run_id(tmp_path) == first


def test_bad_logger_values_name_the_key_and_what_is_allowed():
    with pytest.raises(C.ConfigError) as error:
        C.to_typed(compose_config(["logger=wandb", "logger.wandb.mode=sometimes", "logger.csv._target_=''"]))
    assert "logger.csv._target_ is missing" in str(error.value)
    assert "logger.wandb.mode='sometimes': allowed ['online', 'offline', 'disabled'] or null" in str(error.value)
