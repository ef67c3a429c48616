"""Per-example scores (examples.jsonl) and cross-task evaluation, on real micro-ladder jobs."""

from __future__ import annotations

import json
import math

import pytest
from conftest import MICRO
from hydra.errors import ConfigCompositionException

from ftdyn import config as C
from ftdyn.config.compose import compose_config
from ftdyn.runs import check, results
from ftdyn.train import train

CROSS = MICRO + ["task=syn_nli", "method.max_steps=5", "eval.cross_tasks=[syn_para,syn_summ]"]


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def cross_job(micro_ladder, tmp_path_factory):
    job_dir = tmp_path_factory.mktemp("cross")
    metrics = train(compose_config(CROSS), job_dir)
    return job_dir, metrics, _lines(job_dir / "results.jsonl"), _lines(job_dir / "examples.jsonl")


def test_examples_file_holds_one_score_per_example_whose_mean_is_the_row(cross_job):
    job_dir, _, rows, examples = cross_job
    assert (job_dir / "done").is_file()
    columns = ("eval_set", "split_kind", "stage", "prompt", "metric")
    value = {tuple(r[c] for c in columns): r["value"] for r in rows}
    scored = {k for k in value if k[4] in ("acc", "acc_norm", "rougeL")}
    assert {tuple(e[c] for c in columns) for e in examples} == scored  # every such row, and only those
    for e in examples:
        classified = e["metric"] == "acc" and e["split_kind"] != "probe" and "/" not in e["eval_set"] \
            or e["eval_set"] == "syn_para/test"
        assert set(e) == {"run_key", *columns, "scores", *(["confidences"] if classified else [])}
        assert e["run_key"] == rows[0]["run_key"]
        if classified:  # max-softmax over 3 (syn_nli) or 2 (syn_para) labels, one per example
            assert len(e["confidences"]) == len(e["scores"])
            assert all(1 / 3 - 1e-6 <= c <= 1 + 1e-6 for c in e["confidences"])
        mean = math.fsum(e["scores"]) / len(e["scores"])
        assert mean == pytest.approx(value[tuple(e[c] for c in columns)], abs=1e-12)
    sizes = {(e["eval_set"], e["metric"]): len(e["scores"]) for e in examples}
    assert sizes[("test", "acc")] == 60 and sizes[("syn_para/test", "acc")] == 60  # the job's eval_size caps
    assert sizes[("syn_summ/test", "rougeL")] == 60
    assert all(s in (0.0, 1.0) for e in examples if e["metric"] == "acc" for s in e["scores"])
    assert not any("scores" in r for r in rows)  # results.jsonl keeps the contract's columns


def test_cross_task_rows_hold_the_results_contract(cross_job):
    assert list(check.problems([cross_job[0]])) == []


def test_cross_tasks_are_scored_before_and_after_on_their_in_domain_sets(cross_job):
    _, metrics, rows, _ = cross_job
    cross = {(r["stage"], r["eval_set"], r["metric"]) for r in rows if results.is_cross_task(r["eval_set"])}
    assert all(r["split_kind"] == "out_of_domain" for r in rows if results.is_cross_task(r["eval_set"]))
    assert cross == {(stage, s, m) for stage in ("before", "after")
                     for s, m in (("syn_para/test", "acc"), ("syn_summ/test", "rougeL"))}
    assert 0.0 <= metrics["after/syn_summ/test/rougeL"] <= 1.0
    assert 0.0 < metrics["before/syn_para/test/acc"] < 1.0


def test_head_methods_score_cross_tasks_with_the_language_model(micro_ladder, tmp_path):
    """lp trains only its head: the LM is unchanged, so with the same demonstrations before and
    after, a cross-task set (read from the LM's label logits) scores exactly the same."""
    metrics = train(compose_config(MICRO + ["method=lp", "method.max_steps=3", "fewshot.k_after=4",
                                            "eval.cross_tasks=[syn_para]", "eval.probe=false"]), tmp_path)
    assert metrics["after/syn_para/test/acc"] == metrics["before/syn_para/test/acc"]


def test_after_rows_carry_the_same_four_shots_as_before_by_default(cross_job):
    """fewshot.k_after defaults to fewshot.k (4): before and after are scored alike."""
    _, _, rows, _ = cross_job
    shots = {}
    for r in rows:
        shots.setdefault((r["stage"], r["split_kind"]), set()).add(r["shots"])
    for stage in ("before", "after"):
        assert shots[stage, "in_domain"] == shots[stage, "out_of_domain"] == {4}  # own and cross-task sets
        assert shots[stage, "probe"] == {0}  # a cloze without demonstrations
        assert shots[stage, "pretrain"] == {None}  # held-out text: no prompt
    assert shots["run", None] == {None}


def test_zero_shot_after_is_one_override_and_next_word_scoring_runs_a_job(micro_ladder, tmp_path):
    train(compose_config(MICRO + ["task.eval_size=12", "method.max_steps=2", "fewshot.k_after=0",
                                  "eval.label_scoring=next_word", "eval.probe=false", "eval.pretrain_loss=false"]),
          tmp_path)
    rows = _lines(tmp_path / "results.jsonl")
    assert {r["shots"] for r in rows if r["stage"] == "before"} == {4}
    assert {r["shots"] for r in rows if r["stage"] == "after"} == {0}
    after = {r["metric"]: r["value"] for r in rows if r["stage"] == "after" and r["eval_set"] == "test"}
    assert 0.0 <= after["acc"] <= 1.0 and {"ece", "ece_ts", "acc_vs_base"} <= set(after)


def test_unknown_cross_task_is_a_config_error_listing_the_options():
    with pytest.raises(C.ConfigError) as err:
        C.to_typed(compose_config(MICRO + ["eval.cross_tasks=[syn_para,mnlii]"]))
    message = str(err.value)
    assert "eval.cross_tasks" in message and "mnlii" in message and "syn_summ" in message
    assert "syn_para'" not in message.split("unknown")[1].split(";")[0]  # only the bad name is reported


def test_unknown_label_scoring_is_a_config_error():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(MICRO + ["eval.label_scoring=logits"])
    assert "expected one of [first_token, first_token_space, next_word, constrained]" in str(err.value.__cause__)


def test_another_task_option_loads_onto_the_typed_schema():
    from ftdyn.tasks import task_config

    summ = task_config("syn_summ")
    assert isinstance(summ, C.TaskConfig) and summ.kind == "generation" and summ.max_new_tokens == 24
    with pytest.raises(C.ConfigError, match=r"unknown task 'nope'.*syn_nli"):
        task_config("nope")


def test_syn_nli_job_writes_accuracy_calibration_agreement_and_forgetting_before_and_after(cross_job):
    _, metrics, _, _ = cross_job
    for stage in ("before", "after"):
        for metric in ("acc", "ece", "mce", "ece_ts", "mce_ts", "temperature", "acc_vs_base"):
            assert f"{stage}/test/{metric}" in metrics
        for metric in ("forget_ce", "forget_kl", "pretrain_loss"):
            assert f"{stage}/tinyworld_heldout/{metric}" in metrics
    assert metrics["before/test/acc_vs_base"] == 1.0 and metrics["before/tinyworld_heldout/forget_kl"] == 0.0
    assert metrics["after/tinyworld_heldout/forget_kl"] > 0.0


def test_constrained_label_scoring_writes_accuracy_and_agreement_but_no_calibration(micro_ladder, tmp_path):
    metrics = train(compose_config(MICRO + ["task=syn_para", "task.eval_size=16", "method.max_steps=3",
                                            "eval.label_scoring=constrained", "eval.probe=false"]), tmp_path)
    for stage in ("before", "after"):
        assert 0.0 <= metrics[f"{stage}/test/acc"] <= 1.0 and f"{stage}/test/acc_vs_base" in metrics
        assert not any(k.startswith(f"{stage}/test/") and k.split("/")[-1].startswith(("ece", "mce", "temp"))
                       for k in metrics)
    assert metrics["before/test/acc_vs_base"] == 1.0
    examples = _lines(tmp_path / "examples.jsonl")
    assert {len(e["scores"]) for e in examples if e["eval_set"] == "test"} == {16}


def test_multiple_choice_job_writes_acc_and_acc_norm_before_and_after(micro_ladder, tmp_path):
    """syn_mc by log-likelihood, fine-tuned by SFT on the correct continuations."""
    metrics = train(compose_config(MICRO + ["task=syn_mc", "task.train_size=200", "task.eval_size=40", "fewshot.k=0",
                                            "eval.probe=false", "method.lr=3e-3", "method.epochs=2"]), tmp_path)
    rows = _lines(tmp_path / "results.jsonl")
    for stage in ("before", "after"):
        for split, kind in (("test", "in_domain"), ("ood_templates", "out_of_domain")):
            for metric in ("acc", "acc_norm", "acc_vs_base"):
                assert any(r["stage"] == stage and r["eval_set"] == split and r["split_kind"] == kind
                           and r["metric"] == metric for r in rows)
    assert metrics["before/test/acc_vs_base"] == 1.0 and metrics["after/test/acc_vs_base"] < 1.0
    examples = {(e["stage"], e["eval_set"], e["metric"]) for e in _lines(tmp_path / "examples.jsonl")}
    assert ("after", "test", "acc_norm") in examples


def test_instruction_set_trains_on_instructions_and_is_scored_on_multiple_choice_sets(micro_ladder, tmp_path):
    metrics = train(compose_config(MICRO + ["task=syn_instruct", "method.max_steps=3", "fewshot.k=0",
                                            "eval.probe=false", "eval.pretrain_loss=false"]), tmp_path)
    assert metrics["run/run/train_steps"] == 3
    for stage in ("before", "after"):
        assert {f"{stage}/{s}/{m}" for s in ("test", "ood_templates") for m in ("acc", "acc_norm")} <= set(metrics)
    assert not any("rougeL" in k for k in metrics)
    examples = _lines(tmp_path / "examples.jsonl")
    assert {len(e["scores"]) for e in examples} == {60}  # task.eval_size applies to the sets it is scored on


def test_cross_task_without_in_domain_sets_is_refused_and_an_instruction_set_means_its_mc_sets():
    from ftdyn.tasks import load_cross_task
    from ftdyn.world.entities import make_world

    with pytest.raises(C.ConfigError, match=r"eval.cross_tasks: task 'syn_probe' has no in_domain"):
        load_cross_task("syn_probe", make_world(0))
    assert load_cross_task("syn_instruct", make_world(0)).cfg.name == "syn_mc"


def test_also_zero_shot_scores_every_prompted_set_in_both_protocols(micro_ladder, tmp_path):
    train(compose_config(MICRO + ["task.eval_size=12", "method.max_steps=2", "fewshot.also_zero_shot=true",
                                  "eval.probe=false", "eval.pretrain_loss=false"]), tmp_path)
    rows = [r for r in _lines(tmp_path / "results.jsonl") if r["metric"] == "acc"]
    for stage in ("before", "after"):
        by_shots = {s: {r["eval_set"] for r in rows if r["stage"] == stage and r["shots"] == s} for s in (4, 0)}
        assert by_shots[4] == by_shots[0] and "test" in by_shots[0]  # every set, once per protocol
    zero = {r["eval_set"]: r["value"] for r in rows if r["stage"] == "before" and r["shots"] == 0}
    assert all(0.0 <= v <= 1.0 for v in zero.values())
