"""Bad input ends the job with a message naming the key or file and what is allowed, a failure
record and no done marker; a single run exits non-zero; a sweep's other jobs still finish."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import PYTHON
from omegaconf import OmegaConf

from ftdyn.config.compose import compose_config
from ftdyn.models import checkpoints, ladders
from ftdyn.runs import store
from ftdyn.train import train

FAST = ["model=micro", "task.train_size=32", "task.eval_size=8", "fewshot.k=0", "method.max_steps=2"]

# (case, overrides, fragments the message must contain)
CASES = [
    ("unknown task", ["task=nope"], ["task/nope", "syn_nli"]),  # Hydra lists the available options
    ("unknown model", ["model=nope"], ["model/nope", "micro"]),
    ("unknown method", ["method=nope"], ["method/nope", "lpft"]),
    ("unknown option key", ["+method.rnk=4"], ["unknown key method.rnk", "'rank'"]),
    ("misspelled key", ["method.rnk=4"], ["Could not override 'method.rnk'", "Key 'rnk' not in 'MethodConfig'"]),
    ("unknown method name", ["method.name=sgd"], ["Invalid value 'sgd', expected one of [base, sft, lora, lp, ft, lpft, lorahead, lplora]", "full_key: method.name"]),
    ("unknown task source", ["task.source=s3"], ["Invalid value 's3', expected one of [tinyworld, hub, gaussians]", "full_key: task.source"]),
    ("rank zero", ["method=lora", "method.rank=0"], ["method.rank=0: must be >= 1"]),
    ("rank negative", ["method=lora", "method.rank=-4"], ["method.rank=-4: must be >= 1"]),
    ("replay rate one", ["replay.rate=1.0"], ["replay.rate=1.0: allowed [0, 1)"]),
    ("replay rate one as an int", ["replay.rate=1"], ["replay.rate=1.0: allowed [0, 1)"]),
    ("seed negative", ["seed=-1"], ["seed=-1: must be >= 0"]),
    ("train size negative", ["task.train_size=-5"], ["task.train_size=-5: must be >= 1"]),
    ("replay rate negative", ["replay.rate=-0.1"], ["replay.rate=-0.1: allowed [0, 1)"]),
    ("fewshot k negative", ["fewshot.k=-1"], ["fewshot.k=-1: must be >= 0"]),
    ("learning rate negative", ["method.lr=-0.001"], ["method.lr=-0.001: must be > 0"]),
    ("checkpoint step not in ladder", ["ckpt.step=7"],
     ["ckpt.step=7 is not in the micro ladder; available steps: [5, 10, 20, 40]"]),
    ("keep policy", ["trainer.keep=some"], ["Invalid value 'some', expected one of [none, last, all]", "full_key: trainer.keep"]),
    ("launch flag not boolean", ["+force=maybe"], ["force='maybe': allowed true or false"]),
    ("evaluation set empty after removing train examples", ["task.train_size=2700", "task.eval_size=300"],
     ["split validation: no new example", "lower task.train_size or task.eval_size"]),
    ("task file without eval_sets", ["task=broken"], ["task broken: task.eval_sets is empty"]),
    ("corrupt ladder checkpoint file", ["ckpt.step=40"],  # prepared by _truncated_ladder_copy
     ["step40/model.safetensors is corrupt or truncated", "to rebuild the ladder (python -m ftdyn.pretrain)"]),
]


def _truncated_ladder_copy(micro_ladder: Path, tmp_path: Path, monkeypatch) -> None:
    """A private FTDYN_CACHE holding a copy of the micro ladder whose step40 weights are cut to 100
    bytes (the session's ladder, which other tests use, stays whole)."""
    cache = tmp_path / "cache"
    shutil.copytree(micro_ladder, cache / "ladders" / micro_ladder.name)
    weights = cache / "ladders" / micro_ladder.name / "step40" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    monkeypatch.setenv("FTDYN_CACHE", str(cache))


PREPARE = {"corrupt ladder checkpoint file": _truncated_ladder_copy}  #: cases that need more than overrides


@pytest.fixture
def conf_extra(tmp_path) -> Path:
    """A config dir adding `task=broken`: a task yaml that lacks its evaluation sets."""
    (tmp_path / "extra" / "task").mkdir(parents=True)
    (tmp_path / "extra" / "task" / "broken.yaml").write_text(
        "name: broken\nversion: 1\nfamily: nli\nkind: classification\nlabel_words: [yes, no]\n")
    return tmp_path / "extra"


def _no_done_marker(root: Path) -> None:
    assert not list(root.rglob("done"))


@pytest.mark.parametrize("case, overrides, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_names_the_key_and_what_is_allowed(micro_ladder, tmp_path, monkeypatch, conf_extra,
                                                     case, overrides, fragments):
    monkeypatch.setenv("FTDYN_OUT", str(tmp_path / "out"))
    if case in PREPARE:
        PREPARE[case](micro_ladder, tmp_path, monkeypatch)
    job_dir = tmp_path / "job"
    with pytest.raises(Exception) as caught:
        cfg = compose_config(FAST + overrides + [f"hydra.searchpath=[file://{conf_extra}]"])
        store.run(cfg, job_dir, train)
    message = str(caught.value) + str(caught.value.__cause__ or "")
    for fragment in fragments:
        assert fragment in message
    _no_done_marker(tmp_path)
    if job_dir.exists():  # the job started: it says why it failed
        failed = json.loads((job_dir / "failed.json").read_text())
        assert failed["reason"].split(": ", 1)[1].strip("'\"").startswith(str(caught.value).strip("'\"")[:40])


def _run(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "ftdyn.train", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "FTDYN_OUT": str(cwd / "out"), **env}, timeout=600)


@pytest.mark.slow  # a subprocess: seconds of imports
@pytest.mark.parametrize("overrides, fragment", [
    (["task=nope"], "Could not find 'task/nope'"),
    (["ckpt.step=7"], "ckpt.step=7 is not in the micro ladder; available steps: [5, 10, 20, 40]"),
])
def test_single_run_with_bad_input_exits_nonzero(micro_ladder, tmp_path, overrides, fragment):
    out = _run(FAST + overrides, tmp_path)
    assert out.returncode != 0 and fragment in out.stderr
    _no_done_marker(tmp_path)


@pytest.mark.slow  # a subprocess: seconds of imports
def test_non_finite_loss_stops_the_job_at_that_step_and_records_it(micro_ladder, tmp_path):
    out = _run(FAST + ["method.lr=1e30", "method.max_steps=10"], tmp_path)
    assert out.returncode != 0
    assert "non-finite training loss" in out.stderr and "lower method.lr" in out.stderr
    _no_done_marker(tmp_path)
    records = list(tmp_path.rglob("failed.json"))
    assert len(records) == 2  # the run store and Hydra's run dir
    failed = json.loads(records[0].read_text())
    assert failed["reason"].startswith("TrainingDiverged: non-finite training loss")
    assert 1 <= failed["step"] < 10 and f"at step {failed['step']}:" in failed["reason"]


def test_a_truncated_checkpoint_file_is_named_with_the_ladder_to_delete(micro_ladder, tmp_path, monkeypatch):
    _truncated_ladder_copy(micro_ladder, tmp_path, monkeypatch)
    monkeypatch.setenv("FTDYN_OUT", str(tmp_path / "out"))
    with pytest.raises(ladders.CheckpointError) as caught:
        store.run(compose_config(FAST), tmp_path / "job", train)
    copy = tmp_path / "cache" / "ladders" / micro_ladder.name
    assert f"{copy / 'step40' / 'model.safetensors'} is corrupt or truncated (SafetensorError" in str(caught.value)
    assert f"delete {copy} to rebuild the ladder" in str(caught.value)
    assert json.loads((tmp_path / "job" / "failed.json").read_text())["reason"].startswith("CheckpointError")


@pytest.mark.slow
def test_one_bad_job_fails_and_the_sweep_still_finishes_the_other(micro_ladder, tmp_path):
    sweep = tmp_path / "sweep"
    out = _run(["-m", *FAST, "method=lora", "method.rank=0,4", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert out.returncode != 0
    assert "method.rank=0: must be >= 1" in out.stderr
    failed = json.loads((sweep / "0" / "failed.json").read_text())
    assert "method.rank=0" in failed["reason"] and failed["step"] is None and not (sweep / "0" / "done").exists()
    assert (sweep / "1" / "done").exists() and (sweep / "1" / "results.jsonl").exists()


def _fails_without_done(cfg, tmp_path, monkeypatch) -> tuple[str, dict]:
    """Run `cfg` as a job; return its error message and failure record, checking no done marker."""
    monkeypatch.setenv("FTDYN_OUT", str(tmp_path / "out"))
    with pytest.raises(Exception) as caught:
        store.run(cfg, tmp_path / "job", train)
    _no_done_marker(tmp_path)
    return str(caught.value), json.loads((tmp_path / "job" / "failed.json").read_text())


def test_a_dataset_missing_a_field_fails_the_job_naming_dataset_and_fields(micro_ladder, tmp_path, monkeypatch):
    from test_catalogue_tasks import para_rows, write

    for split in ("train", "validation", "test"):
        write(tmp_path / "data", "google-research-datasets/paws", "labeled_final", split, para_rows(6))
    write(tmp_path / "data", "SetFit/qqp", None, "test", [{"text1": "a", "text2": "b", "label": 1}])
    write(tmp_path / "data", "SetFit/stsb", None, "test", [{"text1": "s", "sentence_b": "t", "label": 4.0}])
    cfg = compose_config(FAST + ["task=paws", f"task.local_dir={tmp_path / 'data'}", "task.train_size=6"])
    message, failed = _fails_without_done(cfg, tmp_path, monkeypatch)
    assert "dataset SetFit/stsb:test has no field ['text2']; its fields are ['text1', 'sentence_b', 'label']" in message
    assert "has no field ['text2']" in failed["reason"] and failed["step"] is None


def test_a_dataset_empty_after_filtering_fails_the_job_naming_it(micro_ladder, tmp_path, monkeypatch):
    from test_catalogue_tasks import nli_rows, write

    data = tmp_path / "data"
    write(data, "nyu-mll/glue", "mnli", "train", nli_rows(40, "train"))
    write(data, "nyu-mll/glue", "mnli", "validation_matched", nli_rows(6, "matched"))
    write(data, "nyu-mll/glue", "mnli", "validation_mismatched", nli_rows(3, "unlabelled", labels=(-1,)))
    write(data, "nyu-mll/glue", "rte", "train", [{"sentence1": "a", "sentence2": "b", "label": 0, "idx": 0}])
    write(data, "pietrolesci/gpt3_nli", None, "train", [{"text_a": "a", "text_b": "b", "label": 0, "guid": 0}])
    cfg = compose_config(FAST + ["task=mnli", f"task.local_dir={data}", "task.train_size=4", "task.eval_size=3"])
    message, failed = _fails_without_done(cfg, tmp_path, monkeypatch)
    assert "nyu-mll/glue/mnli:validation_mismatched is empty after filtering (3 rows read" in message
    assert "empty after filtering" in failed["reason"]


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json"])
def test_each_corrupt_checkpoint_file_is_named(micro_ladder, micro_model_cfg, tmp_path, monkeypatch, name):
    cache = tmp_path / "cache"
    shutil.copytree(micro_ladder, cache / "ladders" / micro_ladder.name)
    broken = cache / "ladders" / micro_ladder.name / "step20" / name
    broken.write_bytes(broken.read_bytes()[:50])
    monkeypatch.setenv("FTDYN_CACHE", str(cache))
    with pytest.raises(ladders.CheckpointError, match=re.escape(f"{broken} is corrupt or truncated")):
        checkpoints.load_checkpoint(micro_model_cfg, 20)


def test_a_dry_run_lists_a_bad_job_as_invalid_naming_the_key(capsys, tmp_path, monkeypatch):
    from hydra import initialize_config_dir

    from ftdyn.config.paths import conf_dir
    from ftdyn.runs import dryrun

    monkeypatch.setenv("FTDYN_OUT", str(tmp_path / "out"))
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        dryrun.print_jobs([FAST + ["method=lora", "method.rank=0"], FAST + ["method=nope"]], "train")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[0] invalid") and "method.rank=0: must be >= 1" in lines[1]
    assert lines[2].startswith("[1] invalid")  # Hydra's MissingConfigException, listed, not raised
    assert lines[4].startswith("2 jobs (2 invalid)")


def test_the_report_lists_a_job_whose_config_it_cannot_read_without_a_run_key(tmp_path, caplog):
    from ftdyn.report import collect

    job = tmp_path / "sweep" / "0"
    job.mkdir(parents=True)
    cfg = compose_config(["method=lora"])
    cfg.method.rank = 0  # a whole config, refused by one bound
    (job / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (job / "failed.json").write_text(json.dumps({"reason": "ConfigError: method.rank=0"}))
    [found] = collect.find_jobs([tmp_path / "sweep"])
    assert found.status == "failed" and found.run_key is None
    assert "cannot compute the run key" in caplog.text and "method.rank=0" in caplog.text
