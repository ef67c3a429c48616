"""The report on hand-made job directories in the contract's format (brief, contracts 1-5):
every derived table and figure, numbers checked against hand computations, no job dropped."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PYTHON

from ftdyn import files
from ftdyn.report import before_after, build_report, figures, findings, fits, laws, summary
from ftdyn.runs import results

KIND = {"syn_nli": "classification", "syn_summ": "generation", "syn_para": "classification"}
PLANTED = {"s": 0.5, "a": 30.0, "b": 8.0, "alpha": -0.2, "beta": -0.5}  # train_loss(P, N) of the LoRA jobs


def row(eval_set, split_kind, stage, metric, value, prompt="default"):
    return {"eval_set": eval_set, "split_kind": split_kind, "stage": stage, "prompt": prompt, "metric": metric,
            "value": value}


def facts(key, task="syn_nli", ckpt=40, method="sft", rank=None, replay=0.0):
    return {"run_key": key, "model": "tiny", "ckpt_step": ckpt, "task": task, "method": method,
            "lora_rank": rank, "replay_rate": replay, "seed": 0}


def write_job(root: Path, name: str, run: dict, rows: list[dict], examples: list[dict] = (),
              status: str = "finished", logger: str = "csv", reason: str = "CUDA out of memory") -> Path:
    """A job directory as train() and the resume helper leave it (contract 4)."""
    job = root / name
    job.mkdir(parents=True)
    config = {"task": {"name": run["task"], "kind": KIND[run["task"]]}, "method": {"name": run["method"]},
              "ckpt": {"step": run["ckpt_step"]}, "logger": {"wandb": {"project": "ftdyn"}} if logger == "wandb" else {}}
    (job / "config.yaml").write_text(yaml.safe_dump(config))
    if rows:
        results.write_rows(job, [{**run, **r} for r in rows])
    if examples:
        (job / "examples.jsonl").write_text("".join(json.dumps({"run_key": run["run_key"], **e}) + "\n"
                                                    for e in examples))
    if status == "finished":
        results.mark_done(job, run["run_key"])
    elif status == "failed":
        files.write_json_atomic(job / "failed.json", {"run_key": run["run_key"], "reason": reason, "step": 7})
    return job


def scored(eval_set, split_kind, stage, metric, scores, confidences=None):
    """A result row and its examples.jsonl line, the row's value the mean of the scores."""
    example = {"eval_set": eval_set, "split_kind": split_kind, "stage": stage, "prompt": "default",
               "metric": metric, "scores": list(map(float, scores))}
    if confidences is not None:  # the proposed extension: max-softmax probability per example
        example["confidences"] = list(map(float, confidences))
    return row(eval_set, split_kind, stage, metric, float(np.mean(scores))), example


def cross(eval_set, metric, before, after):
    # jobs write other tasks' sets as out_of_domain; the report names them cross_task by their `<task>/<split>`
    return [row(eval_set, "out_of_domain", "before", metric, before), row(eval_set, "out_of_domain", "after", metric, after)]


def sft_job(root, name, task, ckpt, cross_rows, replay=0.0, params=1000.0, logger="csv"):
    metric = "acc" if KIND[task] == "classification" else "rougeL"
    rng = np.random.default_rng(ckpt)
    rows, examples = [], []
    for stage, p in (("before", 0.4), ("after", 0.8)):
        for eval_set, kind in (("test", "in_domain"), ("ood_templates", "out_of_domain")):
            confidences = rng.uniform(0.4, 1.0, 200) if metric == "acc" else None
            r, e = scored(eval_set, kind, stage, metric, (rng.random(200) < p + replay / 2).astype(float), confidences)
            rows.append(r)
            examples.append(e)
        if metric == "acc":
            rows += [row("test", "in_domain", stage, m, v) for m, v in
                     (("ece", 0.2), ("mce", 0.4), ("ece_ts", 0.05), ("mce_ts", 0.1))]
        rows.append(row("tinyworld_heldout", "pretrain", stage, "forget_kl", 0.0 if stage == "before" else 1 - replay,
                        prompt=None))
    rows += cross_rows + [row("run", None, "run", "trainable_params", params)]
    return write_job(root, name, facts(name, task, ckpt, replay=replay), rows, examples, logger=logger)


def lora_job(root, name, rank, logger="csv"):
    """In-loop rows on a planted power law (train_loss) and a planted line (forget_ce = -1.5 L + 3.5)."""
    params = 1024.0 * rank
    rows = [row("run", None, "run", "trainable_params", params)]
    for step in range(10, 110, 10):
        loss = float(fits.power_law(params, step, **PLANTED))
        rows += [row("train", None, f"step_{step}", "train_loss", loss, prompt=None),
                 row("tinyworld_heldout", "pretrain", f"step_{step}", "forget_ce", -1.5 * loss + 3.5, prompt=None)]
    rows += [row("test", "in_domain", s, m, v) for s, m, v in
             (("before", "acc", 0.4), ("after", "acc", 0.7), ("after", "ece", 0.1), ("after", "ece_ts", 0.02),
              ("after", "mce", 0.3), ("after", "mce_ts", 0.05))]
    return write_job(root, name, facts(name, method="lora", rank=rank), rows, logger=logger)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """Two sweep directories: checkpoints x {nli, summ} with cross-task rows, LoRA ranks with in-loop
    rows, replay rates; a failed job, an unfinished one, and a failed run re-run to completion."""
    first, second = (tmp_path_factory.mktemp(n) for n in ("first", "second"))
    sft_job(first, "0", "syn_nli", 10, cross("syn_summ/test", "rougeL", 0.40, 0.10) + cross("syn_para/test", "acc", 0.5, 0.6))
    sft_job(first, "1", "syn_summ", 10, cross("syn_nli/test", "acc", 0.40, 0.42) + cross("syn_para/test", "acc", 0.5, 0.45))
    sft_job(first, "2", "syn_nli", 40, cross("syn_summ/test", "rougeL", 0.50, 0.25))
    sft_job(first, "3", "syn_summ", 40, cross("syn_nli/test", "acc", 0.50, 0.50))
    for i, rank in enumerate((2, 4, 8, 16)):
        lora_job(first, f"{4 + i}", rank)
    for i, rate in enumerate((0.1, 0.2)):
        sft_job(first, f"rp{i}", "syn_nli", 40, [], replay=rate)
    write_job(first, "failed", facts("k-failed"), [row("test", "in_domain", "before", "acc", 0.9)], status="failed")
    write_job(first, "killed", facts("k-killed"), [], status="unfinished")
    write_job(first, "rerun", facts("k-rerun"), [], status="failed", reason="preempted")
    sft_job(second, "k-rerun", "syn_nli", 20, [])  # the same run key, finished in another sweep
    return first, second


@pytest.fixture(scope="module")
def report(sweeps, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    table, jobs = build_report(list(sweeps), out)
    return out, table, jobs


def read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / f"{name}.csv")


def test_mrc_equals_a_hand_computation(report):
    mrc = read(report[0], "mrc").set_index(["ckpt_step", "task"])["mrc"]
    assert mrc[(10, "syn_nli")] == pytest.approx(((0.10 - 0.40) / 0.40 + (0.6 - 0.5) / 0.5) / 2)  # -0.275
    assert mrc[(10, "syn_summ")] == pytest.approx(((0.42 - 0.40) / 0.40 + (0.45 - 0.5) / 0.5) / 2)  # -0.025
    assert mrc[(40, "syn_nli")] == pytest.approx(-0.5)
    assert mrc[(40, "syn_summ")] == pytest.approx(0.0)
    directions = read(report[0], "mrc_directions").set_index("direction")
    assert directions.loc["classification -> generation", "mean_change"] == pytest.approx((-0.75 - 0.5) / 2)
    assert directions.loc["generation -> classification", "mean_change"] == pytest.approx((0.05 - 0.1 + 0.0) / 3)
    assert directions.loc["classification -> classification", "n"] == 1  # syn_para's kind from conf/task


def test_forgetting_law_and_power_law_recover_planted_rows(report):
    law = read(report[0], "forgetting_law").set_index("task").loc["syn_nli"]
    assert (law["c"], law["s"], law["r2"]) == pytest.approx((1.5, 3.5, 1.0))
    laws = read(report[0], "power_laws")
    assert set(laws["law"]) == {"additive", "product"}  # the paper's form and ftdyn's own, both labelled
    assert laws["form"].str.contains("Kalajdzievski").sum() == 2 and laws["form"].str.contains("ftdyn").sum() == 2
    laws = laws[laws["law"] == "product"].set_index("metric")
    for name, value in PLANTED.items():
        assert laws.loc["train_loss", name] == pytest.approx(value, rel=0.01), name
    assert laws.loc["train_loss", "ranks"] == 4
    ceiling = {"s": 3.5 - 1.5 * PLANTED["s"], "a": -1.5 * PLANTED["a"]}  # forget_ce rises towards 2.75
    for name, value in {**PLANTED, **ceiling}.items():
        assert laws.loc["forget_ce", name] == pytest.approx(value, rel=0.01), name


def test_law_fits_leave_out_each_runs_first_steps(report):
    """The planted runs last 100 steps: round(50 / 260 * 100) = 19 are left out, so fits start at step 20
    (every rank's points pooled: 4 ranks x 9 steps); --skip-steps 0 keeps all 10 steps."""
    assert read(report[0], "forgetting_law").set_index("task").loc["syn_nli", "n"] == 4 * 9
    points = laws.in_loop(report[1][report[1]["status"] == "finished"])
    assert len(laws.law_points(points, 0)) == len(points) == 4 * 10
    assert laws.law_points(points)["step"].min() == 20
    assert laws.law_points(points, 50)["step"].min() == 60


def test_before_after_intervals_bracket_the_mean(report):
    ba = read(report[0], "before_after")
    cells = ba[ba["before_lo"].notna()]
    assert len(cells) >= 8
    assert ((cells["before_lo"] <= cells["before"]) & (cells["before"] <= cells["before_hi"])).all()
    assert ((cells["after_lo"] <= cells["after"]) & (cells["after"] <= cells["after_hi"])).all()
    assert ba[ba["metric"] == "ece"]["before_lo"].isna().all()  # no per-example scores for ECE


def test_reliability_bins_equal_a_hand_computation():
    examples = pd.DataFrame([{"run_key": "k", "eval_set": "test", "split_kind": "in_domain", "stage": "after",
                              "prompt": "default", "metric": "acc", "scores": [0.0, 1.0, 1.0, 1.0],
                              "confidences": [0.1, 0.12, 0.95, 0.99]}])
    runs = pd.DataFrame([{**facts("k"), **row("test", "in_domain", "after", "acc", 0.75)}])
    bins = summary.reliability(runs, examples).set_index("bin")
    assert bins["count"].to_dict() == {1: 2, 14: 2}  # 1/15 < 0.1, 0.12 <= 2/15; 14/15 < 0.95, 0.99 <= 1
    assert bins.loc[1, ["confidence", "accuracy"]].tolist() == pytest.approx([0.11, 0.5])
    assert bins.loc[14, ["confidence", "accuracy"]].tolist() == pytest.approx([0.97, 1.0])
    assert summary.reliability(runs, examples.drop(columns="confidences")).empty


def test_replay_and_methods_tables(report):
    replay = read(report[0], "replay").set_index("replay_rate")
    assert list(replay.index) == [0.0, 0.1, 0.2]
    assert replay["forget_kl"].tolist() == pytest.approx([1.0, 0.9, 0.8])
    methods = read(report[0], "methods").set_index(["ckpt_step", "method", "lora_rank"])
    assert methods.loc[(40, "lora", 8), "ece_ts_after"] == pytest.approx(0.02)
    assert methods.loc[(40, "lora", 8), "trainable_params"] == 8192


def test_every_job_is_listed_and_a_rerun_is_kept_once(report, sweeps):
    out, table, jobs = report
    listed = read(out, "jobs").set_index("run_key")
    assert listed.loc["k-failed", "status"] == "failed"
    assert listed.loc["k-failed", "reason"] == "CUDA out of memory"
    killed = read(out, "jobs").set_index("job").loc[str(sweeps[0] / "killed")]  # no rows: no run key
    assert killed["status"] == "unfinished"
    assert listed.loc["k-rerun", "status"] == "finished" and "second" in listed.loc["k-rerun", "job"]
    assert listed.index.dropna().is_unique
    assert set(table[table["run_key"] == "k-failed"]["status"]) == {"failed"}  # its partial rows are kept
    html = (out / "index.html").read_text()
    assert "k-failed" in html and "CUDA out of memory" in html and "killed</td>" in html
    parquet = pd.read_parquet(out / "results.parquet")
    assert len(parquet) == len(read(out, "results")) == len(table)


def test_index_links_every_figure_and_table_and_needs_no_network(report):
    out = report[0]
    html = (out / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert set(images) == {"performance_by_checkpoint.png", "mrc_heatmap.png", "forgetting_vs_loss.png",
                           "power_law_curves.png", "replay_curves.png", "calibration_bars.png",
                           "reliability_diagrams.png"}
    links = re.findall(r'href="([^"#]+)"', html)
    assert all((out / f).is_file() for f in images + links)
    assert "http" not in html and "<script" not in html
    assert "Not in this sweep" not in html


@pytest.mark.slow  # a subprocess: seconds of imports
def test_command_line_prints_the_table_lists_failures_and_ends_with_the_sweep(sweeps, tmp_path):
    out = subprocess.run([PYTHON, "-m", "ftdyn.report", str(sweeps[0]), "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == f"results: {sweeps[0].resolve()}"
    assert any(line.startswith("failed job: ") and "CUDA out of memory" in line for line in lines)
    assert any(line.startswith("unfinished job (running or killed): ") and "killed" in line for line in lines)
    assert (tmp_path / "r" / "index.html").is_file()


def headline_sweep(root: Path) -> Path:
    """Checkpoints {10, 40} x tasks {syn_nli, syn_para}, SFT, with every headline measurement at
    known values: in-domain 0.4 -> 0.8 + ckpt / 1000, two OOD sets (0.3, 0.5) -> (0.5, 0.7), the
    probe 0.2 -> 0.15, held-out loss 4.0 -> 4.5 (and rows the table leaves out: ECE, forget_kl)."""
    sweep = root / "sweep"
    for i, (task, ckpt) in enumerate(itertools.product(["syn_nli", "syn_para"], [10, 40])):
        rows = []
        for stage, shift in (("before", 0.0), ("after", 1.0)):
            rows += [row("test", "in_domain", stage, "acc", 0.4 + shift * (0.4 + ckpt / 1000)),
                     row("test", "in_domain", stage, "ece", 0.3),
                     row("ood_a", "out_of_domain", stage, "acc", 0.3 + shift * 0.2),
                     row("ood_b", "out_of_domain", stage, "acc", 0.5 + shift * 0.2),
                     row("world_facts", "probe", stage, "acc", 0.2 - shift * 0.05, prompt=None),
                     row("tinyworld_heldout", "pretrain", stage, "pretrain_loss", 4.0 + shift * 0.5, prompt=None),
                     row("tinyworld_heldout", "pretrain", stage, "forget_kl", shift * 0.1, prompt=None)]
        write_job(sweep, str(i), facts(f"k{i}", task, ckpt), rows)
    return sweep


def test_command_line_prints_one_before_after_row_per_checkpoint_and_task(tmp_path, capsys):
    from ftdyn.report.build import main

    sweep = headline_sweep(tmp_path)
    main([str(sweep)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"results: {sweep.resolve()}"
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["task", "ckpt"])
    assert lines[header].split()[2:] == ["in-domain", "out-of-domain", "probe", "held-out", "loss"]
    table = {}
    for line in lines[header + 1:header + 5]:
        task, ckpt, *_ = line.split()
        table[task, int(ckpt)] = re.findall(r"(\d\.\d{3}) → (\d\.\d{3})", line)
    assert table == {(task, ckpt): [("0.400", f"{0.8 + ckpt / 1000:.3f}"), ("0.400", "0.600"), ("0.200", "0.150"),
                                    ("4.000", "4.500")]
                     for task in ("syn_nli", "syn_para") for ckpt in (10, 40)}
    assert len(lines) == header + 5 + 2  # the table, then the report's path and the results line


def test_the_headline_keeps_the_design_a_sweep_varies(report):
    _, table, _ = report
    headline = before_after.headline(table[table["status"] == "finished"])
    assert list(headline.columns[:5]) == ["task", "ckpt_step", "method", "lora_rank", "replay_rate"]
    assert not headline.duplicated(["task", "ckpt_step", "method", "lora_rank", "replay_rate"]).any()
    lora = headline[headline["method"] == "lora"].set_index("lora_rank")
    assert sorted(lora.index) == [2, 4, 8, 16]
    assert lora.loc[8, ["in-domain before", "in-domain after"]].tolist() == pytest.approx([0.4, 0.7])


def shot_row(eval_set, split_kind, stage, metric, value, prompt="default", shots=4):
    return {**row(eval_set, split_kind, stage, metric, value, prompt), "shots": shots}


def format_sweep(root: Path) -> Path:
    """syn_nli and syn_summ jobs at checkpoints 10 and 40, each scored on the other's test set in
    the default and io formats, 4-shot before and after; syn_nli at 40 has a zero base on
    syn_summ/test in io."""
    sweep = root / "formats"
    scores = {  # (task, ckpt, prompt) -> (other task's set, metric, before, after)
        ("syn_nli", 10, "default"): ("syn_summ/test", "rougeL", 0.40, 0.10),
        ("syn_nli", 40, "default"): ("syn_summ/test", "rougeL", 0.50, 0.40),
        ("syn_nli", 10, "io"): ("syn_summ/test", "rougeL", 0.20, 0.30),
        ("syn_nli", 40, "io"): ("syn_summ/test", "rougeL", 0.0, 0.10),
        ("syn_summ", 10, "default"): ("syn_nli/test", "acc", 0.40, 0.50),
        ("syn_summ", 40, "default"): ("syn_nli/test", "acc", 0.50, 0.45),
        ("syn_summ", 10, "io"): ("syn_nli/test", "acc", 0.30, 0.30),
        ("syn_summ", 40, "io"): ("syn_nli/test", "acc", 0.60, 0.30),
    }
    for i, (task, ckpt) in enumerate(itertools.product(["syn_nli", "syn_summ"], [10, 40])):
        rows = []
        for prompt in ("default", "io"):
            eval_set, metric, before, after = scores[task, ckpt, prompt]
            rows += [shot_row(eval_set, "out_of_domain", "before", metric, before, prompt),
                     shot_row(eval_set, "out_of_domain", "after", metric, after, prompt)]
        write_job(sweep, str(i), facts(f"f{i}", task, ckpt), rows)
    return sweep


def test_mrc_per_format_with_an_undefined_entry_for_a_zero_base(tmp_path):
    out = tmp_path / "report"
    build_report([format_sweep(tmp_path)], out)
    mrc = read(out, "mrc").set_index(["ckpt_step", "task", "prompt"])
    assert mrc.loc[(10, "syn_nli", "default"), "mrc"] == pytest.approx(-0.75)  # (0.1 - 0.4) / 0.4
    assert mrc.loc[(10, "syn_nli", "io"), "mrc"] == pytest.approx(0.5)  # (0.3 - 0.2) / 0.2
    assert mrc.loc[(40, "syn_summ", "io"), "mrc"] == pytest.approx(-0.5)
    assert (mrc["shots"] == 4).all()
    zero = mrc.loc[(40, "syn_nli", "io")]
    assert np.isnan(zero["mrc"]) and zero["undefined"] == "syn_summ/test: base score 0: relative change undefined"
    assert mrc["undefined"].notna().sum() == 1

    default = read(out, "mrc_directions").set_index("direction")  # the default format only
    c2g = default.loc["classification -> generation"]
    assert c2g["mean_change"] == pytest.approx((-0.75 - 0.2) / 2) and c2g["n"] == 2
    assert (c2g["ckpt_10"], c2g["ckpt_40"]) == pytest.approx((-0.75, -0.2))
    assert default.loc["generation -> classification", "mean_change"] == pytest.approx((0.25 - 0.1) / 2)
    assert default["undefined"].isna().all()

    io = read(out, "mrc_directions_io").set_index("direction")  # its own table
    assert np.isnan(io.loc["classification -> generation", "mean_change"])  # one entry undefined: so is the mean
    assert io.loc["classification -> generation", "ckpt_10"] == pytest.approx(0.5)
    assert np.isnan(io.loc["classification -> generation", "ckpt_40"])
    assert io.loc["classification -> generation", "undefined"] == \
        "syn_nli at ckpt 40 on syn_summ/test: base score 0: relative change undefined"
    assert io.loc["generation -> classification", "mean_change"] == pytest.approx((0.0 - 0.5) / 2)
    html = (out / "index.html").read_text()
    assert html.count("base score 0: relative change undefined") >= 2  # in MRC and in the io directions


def test_rows_of_different_shots_are_never_compared(tmp_path):
    """Before 4-shot, after 0-shot (fewshot.k_after=0): no gain, no MRC, no before/after pair."""
    sweep = tmp_path / "sweep"
    rows = [shot_row("test", "in_domain", "before", "acc", 0.4),
            shot_row("test", "in_domain", "after", "acc", 0.8, shots=0),
            shot_row("syn_summ/test", "out_of_domain", "before", "rougeL", 0.3),
            shot_row("syn_summ/test", "out_of_domain", "after", "rougeL", 0.0, shots=0),
            shot_row("world_facts", "probe", "before", "acc", 0.2, prompt=None, shots=0),
            shot_row("world_facts", "probe", "after", "acc", 0.1, prompt=None, shots=0)]
    write_job(sweep, "0", facts("s0"), rows)
    out = tmp_path / "report"
    table, _ = build_report([sweep], out)
    ba = read(out, "before_after")
    test = ba[ba["eval_set"] == "test"].set_index("shots")
    assert test.loc[4, "before"] == 0.4 and np.isnan(test.loc[4, "after"])
    assert test.loc[0, "after"] == 0.8 and np.isnan(test.loc[0, "before"])
    mrc = read(out, "mrc").iloc[0]
    assert np.isnan(mrc["mrc"]) and mrc["undefined"] == "syn_summ/test: before 4-shot, after 0-shot: not comparable"
    assert np.isnan(summary.run_summary(table)["in_domain_gain"].iloc[0])
    headline = before_after.headline(table).set_index("shots")
    assert headline.loc[4, "in-domain before"] == 0.4 and np.isnan(headline.loc[4, "in-domain after"])
    assert headline.loc[0, "in-domain after"] == 0.8 and np.isnan(headline.loc[0, "in-domain before"])
    assert (headline["probe before"] == 0.2).all() and (headline["probe after"] == 0.1).all()  # no demonstrations


def test_findings_come_first_and_say_when_intervals_are_missing(report):
    out = report[0]
    found = read(out, "findings").set_index("finding")
    assert list(found.index) == [f.key for f in findings.FINDINGS]
    assert (found["seeds"] <= 1).all() and (found["verdict"] == "inconclusive").all()  # one seed: no interval
    assert found.loc["b_cls_to_gen", "value"] == pytest.approx((-0.75 - 0.5) / 2)  # the mrc_directions number
    html = (out / "index.html").read_text()
    assert html.index('<h2 id="findings">') < html.index('<h2 id="jobs">')
    assert "intervals are missing" in html


def test_before_after_gives_the_interval_across_seeds():
    rows = pd.DataFrame([{"run_key": f"k{seed}", "seed": seed, "task": "syn_nli", "ckpt_step": 600, "method": "sft",
                          "lora_rank": None, "replay_rate": 0.0, "prompt": "default", "shots": 4,
                          "split_kind": "in_domain", "eval_set": "test", "metric": "acc", "stage": stage,
                          "value": value}
                         for seed, after in enumerate((0.6, 0.7, 0.8))
                         for stage, value in (("before", 0.33), ("after", after))])
    ba = before_after.before_after(rows, pd.DataFrame()).iloc[0]
    half = 4.302652729911275 * 0.1 / np.sqrt(3)  # t(0.975, 2) * sd / sqrt(3)
    assert ba["seeds"] == 3 and ba["after"] == pytest.approx(0.7)
    assert (ba["after_seed_lo"], ba["after_seed_hi"]) == pytest.approx((0.7 - half, 0.7 + half))
    assert ba["before_seed_lo"] == pytest.approx(0.33) and ba["before_seed_hi"] == pytest.approx(0.33)


def test_replay_curves_draw_what_the_sweep_measured(tmp_path):
    """A replay sweep run with eval.pretrain_loss=false has gains but no forget_kl: one panel, no error."""
    replay = pd.DataFrame({"task": "syn_nli", "ckpt_step": 600, "replay_rate": [0.0, 0.1], "in_domain_gain": [0.5, 0.4]})
    assert figures.replay_curves(replay, tmp_path) == "replay_curves.png"
    assert (tmp_path / "replay_curves.png").stat().st_size > 1000
