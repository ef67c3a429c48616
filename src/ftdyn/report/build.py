"""The report, top to bottom: find jobs, read rows, derive tables, draw, write the page.

Derived tables use finished jobs only (a failed job's partial rows stay in results.parquet with
status=failed, but would bias an average of complete runs).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from ftdyn import files
from ftdyn.report import before_after, collect, figures, findings, gaussians, inside, laws, mrc, summary
from ftdyn.report.frames import DEFAULT_FORMAT
from ftdyn.report.html import Section, page
from ftdyn.report.wandb_log import log_tables

log = logging.getLogger(__name__)

LEGEND = ("before → after fine-tuning. in-domain, out-of-domain: acc (rougeL for generation), mean over\n"
          "the task's sets (default prompt format); probe: knowledge-probe acc; held-out loss: LM loss on pre-training text (up = forgetting)")


def derived_sections(table: pd.DataFrame, examples: pd.DataFrame, kinds: dict[str, str], out: Path,
                     seed: int = 0, skip_steps: int | None = None) -> list[Section]:
    """Every derived table of the report with its figure (drawn into `out`). The forgetting laws
    leave each run's first steps out (`laws.law_points`, `skip_steps`)."""
    table, interpolated = inside.split_interpolation(table)  # WiSE-FT rows: their own sections only
    ba = before_after.before_after(table, examples, seed)
    changes = mrc.cross_task_changes(table, kinds)
    transfer, points = mrc.mrc(changes), laws.law_points(laws.in_loop(table), skip_steps)
    law, joint = laws.forgetting_law(points), laws.power_laws(points)
    skipped = (f"the first {skip_steps} steps of each run left out" if skip_steps is not None else
               "each run's first 50/260 of its steps left out, as Kalajdzievski leaves out 50 of 260")
    runs = summary.run_summary(table)
    replay, methods = summary.replay(runs), summary.methods(runs)
    bins = summary.reliability(table, examples)
    toy_table = gaussians.gaussians(table)
    ci = "with bootstrap 95% intervals (percentile, 3,000 resamples over per-example scores; " \
         "Amuro & Char report the interval's midpoint)" if "before_lo" in ba else \
         "without intervals: no job wrote per-example scores (examples.jsonl), so nothing to bootstrap"
    sections = [
        Section("before_after", "Before and after fine-tuning",
                "Each eval set's score before (few-shot base checkpoint) and after fine-tuning, per checkpoint "
                f"x task, {ci}.", ba, "no before/after rows",
                figures.performance_by_checkpoint(ba, out),
                "Score across pre-training checkpoints (log x), before dashed / after solid, per eval set."),
        Section("mrc", "Cross-task change (MRC)",
                "MRC_i(t): mean over the other tasks' eval sets d of (Perf_t(d) - Perf_BASE(d)) / Perf_BASE(d), "
                "Perf_BASE the same job's before stage (acc or rougeL), per prompt format. Undefined (empty, "
                "with the reason in `undefined`) where a set's base scored 0 or its stages' shots differ.", transfer,
                "needs cross_task rows (eval.cross_tasks)", figures.mrc_heatmap(transfer, out),
                "MRC per training task x checkpoint; red: fine-tuning hurt the other tasks."),
        *_direction_sections(changes),
        Section("forgetting_law", "Forgetting vs fine-tuning loss",
                "Least-squares line forget_ce = -c * train_loss + s per training task over in-loop steps, every "
                f"rank pooled, {skipped} (Kalajdzievski's Eq. 4; L_f: cross-entropy to the base model's soft "
                "next-token targets).", law,
                "needs in-loop rows (eval.every_n_steps > 0)", figures.forgetting_vs_loss(points, law, out),
                "In-loop (fine-tuning loss, forgetting) points and the fitted line per task."),
        Section("power_laws", "Joint laws in parameters and steps",
                "Fitted to train_loss and forget_ce over LoRA ranks (P trainable parameters, N steps), "
                f"{skipped}: law=additive is Kalajdzievski's Eq. 5-6, L = c((a/P)^alpha + (b/N)^beta)^rho + s "
                "(least squares on L; a, b, c are identified only together, shown with |c| = 1); law=product is "
                "ftdyn's own, L = s + a P^alpha (N + b)^beta (fitted on log L).",
                joint, "needs LoRA jobs at >= 2 ranks with in-loop rows (eval.every_n_steps > 0)",
                figures.power_law_curves(points, joint, out),
                "Loss against step per LoRA rank (points fitted) with each fitted joint law (lines)."),
        Section("replay", "Replay rate", "In-domain gain (after - before, acc or rougeL) and forgetting "
                "(forget_kl after) per share of pre-training text in each batch.", replay,
                "needs >= 2 replay rates (replay.rate)", figures.replay_curves(replay, out),
                "Gain and forgetting against the replay rate."),
        Section("methods", "Method comparison", "Per method: trainable parameters, in-domain and OOD score after, "
                "forget_kl, and ECE / MCE on the in-domain sets before and after temperature scaling (_ts).",
                methods, "needs >= 2 methods", figures.calibration_bars(methods, out),
                "ECE and MCE after fine-tuning, before and after temperature scaling, per method."),
        Section("reliability", "Reliability diagrams", "Per equal-width confidence bin (15) of the in-domain "
                "sets: count, mean confidence and accuracy, per method and stage.", bins,
                "needs per-example confidences (examples.jsonl `confidences`, written for classification "
                "in-domain sets); the method comparison's ECE/MCE bars summarise calibration",
                figures.reliability_diagrams(bins, out),
                "Accuracy against confidence after fine-tuning, per method; the dotted diagonal is perfect calibration."),
        *diagnostic_sections(table, interpolated, laws.in_loop(table), out),  # every step, none skipped
    ]
    if toy_table.empty:  # a language-model sweep: no section for the toy
        return sections
    return sections + [
        Section("gaussians", "The two-Gaussians toy", "Per MLP width x depth x replay rate, after fine-tuning: "
                "mean prediction and squared error on X1 (target moved 0 -> -0.2), mean prediction and drift "
                "(after - before) on X2 (target 1, never trained on), and with ntk_change the NTK's predicted X2 "
                "drift (kernel at the current / frozen weights, the replay rows' part) and its correlation with "
                "the actual per-step change.", toy_table, "needs two-Gaussians runs (model=mlp task=two_gaussians)",
                figures.gaussians_drift(toy_table, out),
                "X2 drift and X1 error against the replay rate, one colour per width, one line style per depth."),
    ]


def diagnostic_sections(table: pd.DataFrame, interpolated: pd.DataFrame, points: pd.DataFrame,
                        out: Path) -> list[Section]:
    """Inside the run (docs/diagnostics.md): the LP-FT diagnostics per method, the NTK spectra,
    and WiSE-FT's learning-forgetting frontier. They are opt-in (eval.diagnostics, eval.interpolate),
    so a section shows only when some job measured it, rather than a 'missing' note on every page."""
    diag, front = inside.diagnostics(table), inside.frontier(interpolated)
    sections = [
        Section("diagnostics", "Features, head and kernel (LP-FT diagnostics)",
                "Per method: classifier norm ||V||_F at the end; feature change against the start checkpoint on the "
                "probe set (mean cosine, mean norm of the difference); Fisher ratio before / after; the NTK split at "
                "the start of backbone training (Frobenius norms of P and F; FT ratio, FT share of the loss decrease).",
                diag, "needs eval.diagnostics (features, ntk) on head methods", figures.diagnostic_bars(diag, out),
                "Classifier norm, feature change and FT ratio per method (Tomihari & Sato: LP-FT keeps features "
                "closer and grows the head more than FT)."),
        Section("classifier_norm", "Classifier norm along training", "||V||_F at every in-loop step.",
                points[[c for c in points if c in ("task", "ckpt_step", "method", "run_key", "step",
                                                    "classifier_norm")]].dropna(subset=["classifier_norm"])
                if "classifier_norm" in points else pd.DataFrame(),
                "needs eval.diagnostics=[head_norm] and eval.every_n_steps > 0", figures.head_norm_curves(points, out),
                "Classifier norm against step, per method."),
        Section("ntk_spectra", "NTK spectra", "Singular values of the pre-train-effective (ntk_pre) and "
                "FT-effective (ntk_ft) parts, each over its largest, per method.", inside.ntk_spectra(table),
                "needs eval.diagnostics=[ntk] on head methods"),
        Section("frontier", "WiSE-FT: learning-forgetting frontier",
                "theta_a = (1 - a) theta_0 + a theta_ft per a of eval.interpolate: in-domain and OOD score, "
                "forget_kl, held-out loss (the head keeps its fine-tuned weights; LoRA: merged).", front,
                "needs eval.interpolate", figures.frontier_curves(front, out),
                "In-domain score against forgetting as a goes 0 -> 1, per method."),
    ]
    return [section for section in sections if not section.table.empty]


def _direction_sections(changes: pd.DataFrame) -> list[Section]:
    """Amuro & Char's direction averages in the default prompt format, then one table per other format."""
    sections = []
    for fmt in [DEFAULT_FORMAT] + [f for f in mrc.formats(changes) if f != DEFAULT_FORMAT]:
        suffix = "" if fmt == DEFAULT_FORMAT else f"_{fmt}"
        sections.append(Section(
            f"mrc_directions{suffix}", f"Cross-task change by task kind ({fmt} format)",
            f"Mean relative change by kind (Amuro & Char's classification -> generation and generation -> "
            f"classification) in the {fmt} prompt format, over every (checkpoint, train task, eval set) entry; "
            "ckpt_<step>: the mean at that checkpoint. Undefined where an entry is (see `undefined`).",
            mrc.mrc_directions(changes, fmt), f"needs cross_task rows in the {fmt} format (eval.cross_tasks)"))
    return sections


def findings_section(found: pd.DataFrame, table: pd.DataFrame) -> Section:
    """The source papers' findings (`findings.findings` of `table`) with ftdyn's number, interval
    across seeds and verdict; the page lists the ones the sweep cannot compute in its caption."""
    seeds = int(table["seed"].nunique()) if "seed" in table else 0
    missing = "" if seeds >= 2 else f" This sweep ran {seeds} seed(s): intervals are missing, so every " \
                                     "verdict is inconclusive (run seed=0,1,2)."
    computed = found["seeds"] > 0
    absent = "; ".join(f"{r.finding}: {r.note}" for r in found[~computed].itertuples())
    absent = f" Not computable from this sweep (findings.csv lists them too): {absent}." if absent else ""
    return Section("findings", "Findings", "Each claim of a source paper, the statistic ftdyn computes for it per "
                   "fine-tuning seed, its mean and 95% Student-t interval across seeds, and the verdict by the "
                   "rule beside it." + missing + absent, found[computed], "no finding is computable from this sweep")


def build_report(dirs: list[Path], out: Path, seed: int = 0,
                 skip_steps: int | None = None) -> tuple[pd.DataFrame, list[collect.Job]]:
    """Write the whole report for `dirs` into `out`; return the results table and the jobs kept."""
    jobs = collect.one_per_run_key(collect.find_jobs(dirs))
    table = collect.read_results(jobs)
    if table.empty:
        raise SystemExit(f"no results.jsonl under {' '.join(map(str, dirs))} ({len(jobs)} job directories)")
    out.mkdir(parents=True, exist_ok=True)
    collect.write_parquet(table, out / "results.parquet")
    collect.write_csv(table, out / "results.csv")
    job_table = collect.job_table(jobs)
    collect.write_csv(job_table, out / "jobs.csv")
    finished = [j for j in jobs if j.status == "finished"]
    kinds = {(j.config.get("task") or {}).get("name"): (j.config.get("task") or {}).get("kind") for j in jobs}
    kinds = {k: v for k, v in kinds.items() if k and v}
    done = table[table["status"] == "finished"]
    found = findings.findings(done, kinds)
    sections = [findings_section(found, done),
                *derived_sections(done, collect.read_examples(finished), kinds, out, seed, skip_steps)]
    collect.write_csv(found, out / "findings.csv")  # every finding, computable or not
    for section in sections[1:]:
        if not section.table.empty:
            collect.write_csv(section.table, out / f"{section.name}.csv")
    jobs_section = Section("jobs", "Jobs", "Every job directory found: finished, failed (with the reason from "
                           "failed.json) or unfinished (running or killed); a re-run's run_key is listed once.",
                           job_table, "no jobs")
    counts = ", ".join(f"{n} {status}" for status, n in job_table["status"].value_counts().items())
    intro = [f"Sweeps: {', '.join(str(Path(d).resolve()) for d in dirs)}",
             f"Jobs: {counts}. Derived tables use finished jobs; results.parquet / results.csv hold every row."]
    files.write_atomic(out / "index.html", page("ftdyn report", intro, [sections[0], jobs_section, *sections[1:]]))
    if "wandb" in collect.job_kinds(jobs):
        project = next((j.config["logger"].get("project") for j in jobs
                        if (j.config.get("logger") or {}).get("project")), "ftdyn")
        log_tables({s.name: s.table for s in [jobs_section, *sections]}, out, project=project)
    return table, jobs


def console_table(headline: pd.DataFrame) -> str:
    """The headline table as text: key columns, then one `before → after` column per measurement."""
    measures = [name for name in before_after.HEADLINE if f"{name} after" in headline]
    keys = [c for c in headline.columns if not c.endswith((" before", " after"))]
    shown = headline[keys].astype(object).where(headline[keys].notna(), "-").rename(columns={"ckpt_step": "ckpt"})
    if "shots" in shown:  # a count, stored as float beside rows without one
        shown["shots"] = [s if s == "-" else int(s) for s in shown["shots"]]
    for name in measures:
        shown[name] = [f"{_number(b)} → {_number(a)}" for b, a in
                       zip(headline[f"{name} before"], headline[f"{name} after"])]
    return shown.to_string(index=False)


def _number(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.3f}"


def main(argv: list[str] | None = None) -> None:
    """Write the report; print the headline table, any failed or unfinished job, and, last,
    `results: DIR` (the rest is in the report's index.html and CSV files)."""
    parser = argparse.ArgumentParser(description="Report of one or more sweeps: tables, figures, index.html.")
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep directories (job directories under them)")
    parser.add_argument("--out", type=Path, help="report directory (default: <first sweep>/report)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--skip-steps", type=int, default=None,
                        help="first steps of each run the forgetting laws leave out (default: 50/260 of "
                             "the run's steps, as Kalajdzievski; 0 keeps every step)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = args.out or args.dirs[0] / "report"
    table, jobs = build_report(args.dirs, out, args.seed, args.skip_steps)
    headline = before_after.headline(inside.split_interpolation(table[table["status"] == "finished"])[0])
    print(LEGEND if not headline.empty else "no finished job: nothing to compare before and after")
    if not headline.empty:
        print(console_table(headline))
    for job in jobs:
        if job.status == "failed":
            print(f"failed job: {job.path} ({job.reason}, step {job.step})")
        elif job.status == "unfinished":
            print(f"unfinished job (running or killed): {job.path}")
    print(f"report (every table and figure): {(out / 'index.html').resolve()}")
    print(f"results: {args.dirs[0].resolve()}")
