#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (BENCHMARKS.md, "GPU"). Needs gpu-carry/
# from benches/gpu-pack.sh (rebuild it at the commit to be measured: steps.txt names the
# commit the binaries came from). Runs four steps, each under its own time limit (9 minutes in
# all), working in $WORK (default /tmp/lth-gpu), and copies eight files flat into $OUT
# (default gpu-out/; the device tool brings back at most eight):
#   steps.txt       the binaries' commit, then each step's exit status and seconds
#   nvidia-smi.txt  the GPU
#   smoke.log, smoke-rounds.csv        the smoke preset on CUDA (the engine works there)
#   bench.md        the throughput tables against PyTorch eager, same invocation (IEEE
#                   float32), then a Conv-2 table with TF32 allowed in both engines
#   figure.log, figure-timings.csv, figure-rounds.csv
#                   a timed sample of the frankle2019-lenet figure: round 0 and one pruned
#                   round (5 seeds x rewind/reinit/random-prune) at FIGURE_ITERATIONS
# It first removes its own runs in $WORK and its eight files in $OUT, so that a second try
# (after a fix, on a warm machine) neither resumes the first try's runs nor reports its files.
# If the smoke run leaves no rounds.csv, the script stops there (exit 1), so that most of the
# device time is left for a fix and a second try.
# Overrides: LTH_DEVICE (cuda), LTH_PYTHON (the machine's PyTorch), BENCH_ARGS,
# TF32_BENCH_ARGS, FIGURE_ITERATIONS (5000).
set -uo pipefail
cd "$(dirname "$0")/.."
device=${LTH_DEVICE:-cuda}
py=${LTH_PYTHON:-/opt/torch/.venv/bin/python}
[ -x "$py" ] || py=/opt/torch/.venv/bin/python3
[ -x "$py" ] || py=python3
out=${OUT:-gpu-out}
work=${WORK:-/tmp/lth-gpu}
data=gpu-carry/data/fashion-mnist
iterations=${FIGURE_ITERATIONS:-5000}
# A second try starts afresh: no run of the first to resume, no file of it to report.
rm -rf "$work/smoke" "$work/figure" "$work/plots"
(cd "$out" 2>/dev/null && rm -f steps.txt nvidia-smi.txt smoke.log smoke-rounds.csv bench.md \
    figure.log figure-timings.csv figure-rounds.csv)
mkdir -p "$out" "$work"
chmod +x gpu-carry/bin/* 2>/dev/null
echo "binaries built at commit $(cat gpu-carry/COMMIT 2>/dev/null || echo unknown); python $py" > "$out/steps.txt"
LD_LIBRARY_PATH="$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__) + "/lib")'):${LD_LIBRARY_PATH:-}"
export LD_LIBRARY_PATH
(nvidia-smi || echo "no nvidia-smi") > "$out/nvidia-smi.txt" 2>&1

step() { # name, seconds, command...
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@"
    echo "$name: exit $? after $((SECONDS - t0)) s" >> "$out/steps.txt"
}

step smoke 60 gpu-carry/bin/lth run --preset smoke --device "$device" \
    --set "data.dir=$data" --run-dir "$work/smoke" --plots-dir "$work/plots" > "$out/smoke.log" 2>&1
cp "$work/smoke/rounds.csv" "$out/smoke-rounds.csv" 2>/dev/null
if [ ! -s "$out/smoke-rounds.csv" ]; then
    # The engine does not run on this device: stop here and leave the device time for a fix
    # and a second try (smoke.log holds the error).
    echo "smoke failed: bench and figure skipped" >> "$out/steps.txt"
    cat "$out/steps.txt"
    exit 1
fi
# shellcheck disable=SC2086 # BENCH_ARGS is a list of options
step bench 300 gpu-carry/bin/throughput --device "$device" --python "$py" --data-dir "$data" \
    ${BENCH_ARGS:-} > "$out/bench.md" 2>&1
echo >> "$out/bench.md"
# shellcheck disable=SC2086 # TF32_BENCH_ARGS is a list of options
step bench-tf32 60 gpu-carry/bin/throughput --device "$device" --python "$py" --data-dir "$data" \
    --tf32 ${TF32_BENCH_ARGS:---models conv2 --conv-sizes 1,16 --conv-steps 300} >> "$out/bench.md" 2>&1
step figure 120 gpu-carry/bin/lth run --preset frankle2019-lenet --device "$device" \
    --set "data.dir=$data" --set prune.rounds=1 --set "train.iterations=$iterations" \
    --run-dir "$work/figure" --plots-dir "$work/plots" > "$out/figure.log" 2>&1
cp "$work/figure/timings.csv" "$out/figure-timings.csv" 2>/dev/null
cp "$work/figure/rounds.csv" "$out/figure-rounds.csv" 2>/dev/null
cat "$out/steps.txt"
