#!/bin/bash
# What one scoring pass of each pruning criterion costs, as a user sees it: whole `lth run`
# processes of one seed, one pruning round and one training iteration (so the round trains
# next to nothing), one per criterion (the run's prune.criterion, or an at-init arm in place of
# the rewind arm), each repeated; a criterion's cost is its median wall time less magnitude's
# (whose scoring is a sort). The networks of benches/imp-lenet.toml and
# benches/imp-conv2.toml on Fashion-MNIST.
# Usage: [MODELS="lenet conv2"] [ONLY="magnitude obs"] bash benches/criteria_cost.sh [REPEATS] [WORK_DIR]
#   (default: both networks, every criterion, 3 repeats, a fresh folder under /tmp; ONLY keeps
#   the criteria it names, magnitude first as the baseline)
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
work=${2:-$(mktemp -d /tmp/lth-criteria-cost.XXXXXX)}
mkdir -p "$work"
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
echo "| network | criterion | --set | wall s per run (each repeat) | median | scoring pass s (median - magnitude's) |"
echo "|---|---|---|---|---:|---:|"
# label | --set values separated by ";" (the first is the baseline, magnitude).
specs=(
  "magnitude|prune.criterion=\"magnitude\""
  "taylor|prune.criterion=\"taylor\";prune.score_batches=10"
  "obd|prune.criterion=\"obd\";prune.score_examples=1000"
  "obs|prune.criterion=\"obs\";prune.score_examples=1000"
  "at-init snip|arms=[{name=\"a\",kind=\"at-init\",criterion=\"snip\"}];prune.score_batches=10"
  "at-init grasp|arms=[{name=\"a\",kind=\"at-init\",criterion=\"grasp\"}];prune.score_batches=10"
  "at-init synflow|arms=[{name=\"a\",kind=\"at-init\",criterion=\"synflow\"}]"
)
for model in ${MODELS:-lenet conv2}; do
  base=""
  for spec in "${specs[@]}"; do
    label=${spec%%|*}
    [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $label "* ]] && continue
    setting=${spec#*|}
    # obs refuses Conv-2's fc1 (12,544 inputs): it stays dense there.
    [ "$label" = obs ] && [ "$model" = conv2 ] && setting+=';prune.exclude=["fc1.weight"]'
    IFS=';' read -r -a sets <<<"$setting"
    extra=()
    for s in "${sets[@]}"; do extra+=(--set "$s"); done
    times=()
    for r in $(seq "$repeats"); do
      dir=$work/$model-${label// /-}-$r
      rm -rf "$dir"
      start=$(date +%s.%N)
      ./target/release/lth run --config "benches/imp-$model.toml" --set prune.rounds=1 \
        --set train.iterations=1 --set train.eval_every=1 "${extra[@]}" \
        --run-dir "$dir" --quiet --checkpoint-minutes off --plots-dir "$work/plots"
      end=$(date +%s.%N)
      times+=("$(awk "BEGIN {print $end - $start}")")
    done
    med=$(printf '%s\n' "${times[@]}" | median)
    [ -z "$base" ] && base=$med
    cost=$(awk "BEGIN {print $med - $base}")
    printf '| %s | %s | %s | %s | %.2f | %.2f |\n' "$model" "$label" "$setting" \
      "$(printf '%.2f ' "${times[@]}")" "$med" "$cost"
  done
done
