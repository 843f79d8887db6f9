#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (BENCHMARKS.md, "GPU"). Needs gpu-carry/
# from benches/gpu-pack.sh. Writes everything under $OUT (default gpu-out/):
#   nvidia-smi.txt, smoke.log + smoke/ (the smoke preset on CUDA: the engine works there),
#   bench.md (the throughput tables against PyTorch eager, same invocation),
#   figure.log + figure-sample/ (a timed sample of the frankle2019-lenet figure: round 0 and
#   one pruned round, 5 seeds x rewind/reinit/random-prune, at FIGURE_ITERATIONS iterations).
# Each step has its own time limit, so the whole script stays under about 8 minutes.
# Overrides: LTH_DEVICE (cuda), LTH_PYTHON (the machine's PyTorch), BENCH_ARGS, FIGURE_ITERATIONS.
set -uo pipefail
cd "$(dirname "$0")/.."
device=${LTH_DEVICE:-cuda}
py=${LTH_PYTHON:-/opt/torch/.venv/bin/python}
out=${OUT:-gpu-out}
data=gpu-carry/data/fashion-mnist
iterations=${FIGURE_ITERATIONS:-5000}
mkdir -p "$out"
LD_LIBRARY_PATH="$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__) + "/lib")'):${LD_LIBRARY_PATH:-}"
export LD_LIBRARY_PATH
(nvidia-smi || echo "no nvidia-smi") > "$out/nvidia-smi.txt" 2>&1

step() { # name, seconds, command...
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@"
    echo "$name: exit $? after $((SECONDS - t0)) s" | tee -a "$out/steps.txt"
}

step smoke 90 gpu-carry/bin/lth run --preset smoke --device "$device" --quiet \
    --set "data.dir=$data" --run-dir "$out/smoke" --plots-dir "$out/plots" > "$out/smoke.log" 2>&1
step bench 300 gpu-carry/bin/throughput --device "$device" --python "$py" --data-dir "$data" \
    ${BENCH_ARGS:-} > "$out/bench.md" 2>&1
step figure 150 gpu-carry/bin/lth run --preset frankle2019-lenet --device "$device" \
    --set "data.dir=$data" --set prune.rounds=1 --set "train.iterations=$iterations" \
    --run-dir "$out/figure-sample" --plots-dir "$out/plots" > "$out/figure.log" 2>&1
cat "$out/steps.txt"
