#!/bin/bash
# One LeNet round dense against sparse (train.sparse_kernels "off" / "on"), one-shot to each
# pruned fraction of the hidden layers (output layer 10%), as whole `lth run` processes one
# after another; prints round 1's timings.csv row and test accuracy per run.
# Usage: bash benches/sparse_sweep.sh [WORK_DIR]   (default: a fresh folder under /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/lth-sparse-sweep.XXXXXX)}
mkdir -p "$work"
echo "fraction pruned, kernels, seconds, replica-steps/s, sparse replicas, test accuracy  (runs in $work)"
for fraction in 0.6 0.7 0.8 0.85 0.9 0.93 0.97 0.99; do
  for kernels in off on; do
    dir=$work/$fraction-$kernels
    rm -rf "$dir"
    ./target/release/lth run --config benches/imp-lenet.toml --set prune.rounds=1 \
      --set prune.fraction=$fraction --set train.sparse_kernels=\"$kernels\" \
      --run-dir "$dir" >"$dir.log" 2>&1
    timing=$(sed -n 3p "$dir/timings.csv" | cut -d, -f4-6)
    accuracy=$(tail -n 1 "$dir/rounds.csv" | cut -d, -f11)
    echo "$fraction, $kernels, $timing, $accuracy"
  done
done
