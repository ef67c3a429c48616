"""From a sweep to findings: one results table, derived tables, figures and an HTML page.

    python -m ftdyn.report SWEEP_DIR [SWEEP_DIR ...] [--out DIR]

Reads every job under the sweep directories (finished, failed and unfinished ones, each listed;
a run_key seen twice kept once), writes `results.parquet`, `results.csv` and one CSV per derived
table, PNG figures and `index.html` into the report directory (default `<first sweep>/report/`),
logs the tables to W&B when the jobs ran with `logger=wandb`, prints the before/after table and
ends with `results: <first sweep directory>`.

Modules, from the rows up:

- `collect`: the sweep's jobs and their rows (results, per-example scores).
- `fits`: bootstrap and Student-t intervals, the linear law, the joint power laws.
- `frames`: the results table's columns and the selections every derived table shares.
- derived tables, one module each: `before_after` (before/after with intervals, the headline),
  `mrc` (cross-task change), `laws` (in-loop points and the forgetting laws), `summary` (per-run
  summary, replay, methods, reliability), `inside` (LP-FT diagnostics, NTK spectra, WiSE-FT),
  `gaussians` (the two-Gaussians toy).
- findings: `verdict` (the rule: interval across seeds against a margin), `per_seed` (the
  statistic of each finding, per fine-tuning seed), `findings` (the catalogue and its evaluation).
- `figures`, `html`, `wandb_log`: the figures, the page, the W&B tables.
- `build`: the whole report, top to bottom; `python -m ftdyn.report` runs its `main`.
"""

from ftdyn.report.build import build_report, main  # noqa: F401
