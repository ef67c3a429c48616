"""`python -m ftdyn.bench` measures what it says: one JSON line per configuration, ratios against
the transformers.Trainer baseline, evaluation against a per-example loop, a whole job."""

from __future__ import annotations

import json

import pytest

from ftdyn.bench import __main__
from ftdyn.bench.train import padding_share
from ftdyn.bench.workload import example_lengths, training_rows


def test_the_workload_has_mnli_like_lengths_and_labels_only_the_answer():
    lengths = example_lengths(2000)
    assert min(lengths) >= 24 and max(lengths) <= 400
    assert 65 <= sorted(lengths)[1000] <= 85  # median ~75
    rows = training_rows(16, vocab=1024)
    assert all(sum(t != -100 for t in r["labels"]) == 3 for r in rows)
    assert padding_share(rows, 8, None) > padding_share(rows, 8, []) >= 0  # packing removes most padding


@pytest.mark.slow
def test_the_tiny_bench_prints_one_json_line_per_configuration(capsys, micro_ladder):
    lines = __main__.main(["--sections", "train,eval,job", "--steps", "6", "--warmup", "2", "--eval-examples", "16",
                        "--job-args", "model=micro task.train_size=32 task.eval_size=16 eval.probe=false"])
    out = capsys.readouterr().out
    printed = [json.loads(line) for line in out.splitlines()]
    assert printed == lines
    train = {line["config"]: line for line in lines if line["bench"] == "train"}
    assert set(train) == {"trainer", "ftdyn-padded", "ftdyn"}
    assert train["trainer"]["ratio_to_trainer"] == 1.0
    baseline = train["trainer"]["real_tokens_per_s"]
    for line in train.values():
        assert line["real_tokens_per_s"] > 0 and line["step_s"] > 0 and 0 < line["mfu"] < 1
        assert line["ratio_to_trainer"] == pytest.approx(line["real_tokens_per_s"] / baseline, rel=1e-2)
    assert train["ftdyn"]["padding"] < train["ftdyn-padded"]["padding"]
    evals = {(line["workload"], line["config"]) for line in lines if line["bench"] == "eval"}
    assert evals == {(w, c) for w in ("label_scoring", "generation") for c in ("batched", "per-example")}
    jobs = {line["config"]: line for line in lines if line["bench"] == "job"}
    assert set(jobs) == {"job-fast", "job-padded"}
    assert jobs["job-fast"]["train_tokens"] == jobs["job-padded"]["train_tokens"] > 0
    assert all(line["eval_before_s"] > 0 and line["eval_after_s"] > 0 for line in jobs.values())
