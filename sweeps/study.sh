# Sourced by the named studies in sweeps/: build the ladder, run the grid, report, copy figures.
#
#   run_study <name> <multirun overrides...>
#
# Jobs go to ${FTDYN_OUT:-outputs}/studies/<name>/ (a fixed directory, so re-running a study skips
# its done jobs), the report to .../report/, and the figures to docs/figures/<name>/.
# LAUNCHER says how jobs run: by default two one-thread jobs at a time on this machine; on a
# cluster e.g. LAUNCHER="hydra/launcher=slurm hydra.launcher.partition=gpu trainer=gpu".
# The report runs even when some jobs failed (it lists them); the study then exits non-zero.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}

run_study() {
  local name=$1; shift
  local dir=${FTDYN_OUT:-outputs}/studies/$name
  local launcher=${LAUNCHER:-"hydra/launcher=joblib hydra.launcher.n_jobs=2 trainer.threads=1"}
  local status=0
  "$PY" -m ftdyn.ladder   # build the ladder first, with every core, before jobs fan out
  # shellcheck disable=SC2086  # the launcher is a list of overrides
  "$PY" -m ftdyn.train -m $launcher hydra.sweep.dir="$dir" "$@" || status=$?
  "$PY" -m ftdyn.report "$dir" --out "$dir/report"
  mkdir -p "docs/figures/$name" && rm -f "docs/figures/$name"/*.png && cp "$dir"/report/*.png "docs/figures/$name/"
  return "$status"
}
