#!/bin/bash
# Eight tasks of the smoke preset (300 iterations, 3 rounds, one seed each: a 4-point grid of
# prune.fraction x 2 seed shards) through each executor, as a user runs them: one after
# another, `--jobs 2`, and the one-node Slurm of tests/slurm/cluster.sh (2 at once, 1 CPU
# each; started here if it is not running). Then 8 tasks that train almost nothing (rounds 0
# and 1 of one iteration each) to show each executor's cost per task. Wall seconds from the
# command to the last task complete (Slurm: `lth sweep status` polled every 0.2 s).
# Usage: bash benches/sweep_executors.sh [WORK_DIR]   (default: a fresh folder under /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
lth=$repo/target/release/lth
work=${1:-$(mktemp -d /tmp/lth-sweep-bench.XXXXXX)}
mkdir -p "$work"
eval "$(bash tests/slurm/cluster.sh start | grep '^SLURM_CONF=')"
export SLURM_CONF
cd "$work"
data="$repo/data/fashion-mnist"
cat >train.toml <<TOML
preset = "smoke"
seeds_per_task = 1
set = { "data.dir" = "$data", "train.iterations" = 300, "prune.rounds" = 2 }
[grid]
"prune.fraction" = [0.2, 0.3, 0.4, 0.5]
[slurm]
cpus_per_task = 1
job_name = "lth-bench-train"
TOML
cat >empty.toml <<TOML
preset = "smoke"
seeds_per_task = 1
set = { "data.dir" = "$data", "train.iterations" = 1, "train.eval_every" = 1, "prune.rounds" = 1 }
[grid]
"prune.fraction" = [0.2, 0.3, 0.4, 0.5]
[slurm]
cpus_per_task = 1
job_name = "lth-bench-empty"
TOML
seconds() { python3 -c "import time; print(f'{time.time() - $1:.1f}')"; }
echo "| sweep | executor | wall s | tasks per minute |"
echo "|---|---|---:|---:|"
for sweep in train empty; do
  for executor in sequential jobs2 slurm; do
    rm -rf "runs-$executor"
    start=$(python3 -c 'import time; print(time.time())')
    case $executor in
      sequential) "$lth" sweep run $sweep.toml --runs-dir runs-$executor --quiet ;;
      jobs2) "$lth" sweep run $sweep.toml --runs-dir runs-$executor --jobs 2 --quiet ;;
      slurm)
        "$lth" sweep run $sweep.toml --runs-dir runs-$executor --executor slurm >/dev/null
        until "$lth" sweep status $sweep.toml --runs-dir runs-$executor | grep -q ": 8 done"; do
          sleep 0.2
        done ;;
    esac
    wall=$(seconds "$start")
    echo "| $sweep | $executor | $wall | $(python3 -c "print(f'{8 * 60 / $wall:.1f}')") |"
  done
done
