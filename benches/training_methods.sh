#!/usr/bin/env bash
# The seed recipe (docs/reference.md#training-recipes, total gradient) against latflow's
# default method for `train --until-acceptance` (`latflow::run::default_method`): for each
# L, first the seed recipe for every seed, then the default method with --until-acceptance
# set to the seed recipe's mean final acceptance over those seeds. One JSON line per run
# with the training seconds, the evaluation seconds, the wall seconds of the whole command,
# |Φ_train| and the final acceptance. Run it on an otherwise idle machine.
#
#   benches/training_methods.sh [L ...]      (default: 8 10; seeds via SEEDS="1 2 3")
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-1 2 3}
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/latflow
OUT=${CARGO_TARGET_DIR:-target}
source benches/reference_recipes.sh
report() {
  python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
keys = ["seconds", "eval_seconds", "configs_seen", "iterations", "acceptance", "tau_rej", "reached_target", "n_params"]
print(json.dumps({"method": sys.argv[1], "L": int(sys.argv[2]), "seed": int(sys.argv[3]), "wall": float(sys.argv[4]), **{k: r.get(k) for k in keys}}))' "$@"
}
for L in ${@:-8 10}; do
  read -r beta hidden blocks batch iters lr <<<"$(recipe "$L")"
  sum=0
  for seed in $SEEDS; do
    start=$(date +%s.%N)
    out=$($BIN train --lattice "${L}x${L}" --beta "$beta" --lambda 0.5 --recipe seed \
      --hidden "$hidden" --affine-blocks "$blocks" --segments 8 --batch "$batch" \
      --iterations "$iters" --lr "$lr" --schedule cosine --seed "$seed" --eval-samples 20000 \
      --out "${OUT:-target}/methods_seed_L${L}_s${seed}.json" --json --quiet)
    wall=$(python3 -c "import time; print(time.time() - $start)")
    echo "$out" | report seed-recipe "$L" "$seed" "$wall"
    sum=$(echo "$out" | python3 -c "import json,sys; print($sum + json.load(sys.stdin)['acceptance'])")
  done
  target=$(python3 -c "print(round($sum / len('$SEEDS'.split()), 3))")
  for seed in $SEEDS; do
    start=$(date +%s.%N)
    out=$($BIN train --lattice "${L}x${L}" --beta "$beta" --lambda 0.5 --until-acceptance "$target" \
      --seed "$seed" --out "${OUT:-target}/methods_default_L${L}_s${seed}.json" --json --quiet)
    wall=$(python3 -c "import time; print(time.time() - $start)")
    echo "$out" | report "default (until $target)" "$L" "$seed" "$wall"
  done
done
