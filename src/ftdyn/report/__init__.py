"""From a sweep to findings: one results table, derived tables, figures and an HTML page.

    python -m ftdyn.report SWEEP_DIR [SWEEP_DIR ...] [--out DIR]

Reads every job under the sweep directories (finished, failed and unfinished ones, each listed;
a run_key seen twice kept once), writes `results.parquet`, `results.csv` and one CSV per derived
table, PNG figures and `index.html` into the report directory (default `<first sweep>/report/`),
logs the tables to W&B when the jobs ran with `logger=wandb`, prints the before/after table and
ends with `results: <first sweep directory>`. Modules: `collect` (jobs and rows), `tables`
(derived tables), `fits` (bootstrap, linear and power-law fits), `figures`, `html`, `wandb_log`,
`build` (the whole report, top to bottom).
"""

from ftdyn.report.build import build_report, main  # noqa: F401
