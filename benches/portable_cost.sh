#!/bin/bash
# What `reproducibility = "portable"` costs, as a user sees it: whole `lth run` processes of a
# preset (default: smoke) in machine mode (libtorch's own thread count) and in portable mode
# (pinned code paths, one thread), alternating, REPEATS times each in one invocation (the
# machine drifts between minutes, so the pairs are what to compare). Wall seconds per run.
# Usage: bash benches/portable_cost.sh [PRESET] [REPEATS]   (default: smoke 3)
set -euo pipefail
cd "$(dirname "$0")/.."
lth=$PWD/target/release/lth
preset=${1:-smoke}
repeats=${2:-3}
work=$(mktemp -d /tmp/lth-portable-bench.XXXXXX)
seconds() { python3 -c "import time; print(f'{time.time() - $1:.1f}')"; }
echo "| repeat | machine s | portable s | portable / machine |"
echo "|---:|---:|---:|---:|"
for i in $(seq 1 "$repeats"); do
  times=()
  for mode in machine portable; do
    rm -rf "$work/$mode"
    start=$(python3 -c 'import time; print(time.time())')
    "$lth" run --preset "$preset" --set "reproducibility=\"$mode\"" --run-dir "$work/$mode" \
      --plots-dir "$work/plots" --quiet >/dev/null
    times+=("$(seconds "$start")")
  done
  ratio=$(python3 -c "print(f'{${times[1]} / ${times[0]}:.2f}x')")
  echo "| $i | ${times[0]} | ${times[1]} | $ratio |"
done
rm -rf "$work"
