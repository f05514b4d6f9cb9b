#!/usr/bin/env bash
# Training cost toward the continuum: the configurations the seed recipe
# (docs/reference.md#training-recipes) and latflow's default method
# (`latflow::run::default_method`) need until an acceptance check first reads >= TARGET, on
# the ξ ≈ L/4 line, then a power law in ξ = L/4 through each method's sizes
# (`examples/power_law_fit.rs`). Each size's estimate is the mean over seeds of the first
# check >= TARGET less half the check interval Δ, with the seeds' standard error and Δ/√12
# in quadrature. Configurations do not depend on the machine's load; seconds do.
#
#   benches/training_cost.sh [L ...]   (default: 8 10 12; SEEDS="1 2 3", TARGET=0.6,
#                                        METHODS="seed default")
# Check intervals (iterations), EVAL_SEED_L / EVAL_DEFAULT_L if set, else: the seed recipe
# every 10, 10, 20, 500, 1000 at L = 6, 8, 10, 12, 14; the default method every 10, 10,
# 50, 200, 907.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-1 2 3}
TARGET=${TARGET:-0.6}
METHODS=${METHODS:-seed default}
cargo build --release --quiet --bin latflow --example power_law_fit
BIN=${CARGO_TARGET_DIR:-target}/release/latflow
FIT=${CARGO_TARGET_DIR:-target}/release/examples/power_law_fit
OUT=${CARGO_TARGET_DIR:-target}/training_cost
mkdir -p "$OUT"
source benches/reference_recipes.sh
seed_interval() {
  case "$1" in 6 | 8) echo 10 ;; 10) echo 20 ;; 12) echo 500 ;; *) echo 1000 ;; esac
}
default_interval() {
  case "$1" in 6 | 8) echo 10 ;; 10) echo 50 ;; 12) echo 200 ;; 14) echo 907 ;; *) echo 1000 ;; esac
}
for method in $METHODS; do
  points=""
  for L in ${@:-8 10 12}; do
    read -r beta hidden blocks batch iters lr <<<"$(recipe "$L")"
    firsts=""
    for seed in $SEEDS; do
      if [ "$method" = seed ]; then
        var="EVAL_SEED_$L"; every=${!var:-$(seed_interval "$L")}
        out=$($BIN train --lattice "${L}x${L}" --beta "$beta" --lambda 0.5 --recipe seed \
          --hidden "$hidden" --affine-blocks "$blocks" --segments 8 --batch "$batch" \
          --iterations "$iters" --lr "$lr" --schedule cosine --until-acceptance "$TARGET" \
          --check-samples 2500 --eval-every "$every" --seed "$seed" \
          --out "$OUT/seed_L${L}_s${seed}.json" --json --quiet)
        step=$batch
      else
        var="EVAL_DEFAULT_$L"; every=${!var:-$(default_interval "$L")}
        out=$($BIN train --lattice "${L}x${L}" --beta "$beta" --lambda 0.5 \
          --until-acceptance "$TARGET" --eval-every "$every" --seed "$seed" \
          --out "$OUT/default_L${L}_s${seed}.json" --json --quiet)
        step=$(echo "$out" | python3 -c "import json,sys; r=json.load(sys.stdin); print(r['configs_seen'] // r['iterations'])")
      fi
      echo "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
keys = ["configs_seen", "seconds", "eval_seconds", "reached_target", "acceptance", "tau_rej"]
print(json.dumps({"method": sys.argv[1], "L": int(sys.argv[2]), "seed": int(sys.argv[3]), **{k: r[k] for k in keys}}))' "$method" "$L" "$seed"
      if [ "$(echo "$out" | python3 -c "import json,sys; print(json.load(sys.stdin)['reached_target'])")" != True ]; then
        echo "$method at L = $L, seed $seed: target $TARGET not reached within the budget" >&2
        continue
      fi
      firsts="$firsts $(echo "$out" | python3 -c "import json,sys; print(json.load(sys.stdin)['configs_seen'])")"
    done
    [ -n "$firsts" ] || continue
    points="$points$(python3 -c '
import math, statistics as st, sys
L, delta = float(sys.argv[1]), float(sys.argv[2])
f = [float(v) for v in sys.argv[3:]]
m = st.mean(f) - delta / 2
sem = st.stdev(f) / math.sqrt(len(f)) if len(f) > 1 else 0.0
print(L / 4, m, math.sqrt(sem**2 + delta**2 / 12))' "$L" "$(( every * step ))" $firsts)
"
  done
  echo "$method: configurations to acceptance $TARGET, power law in ξ = L/4 (ξ, C, σ per size, then the fit):"
  printf "%s" "$points"
  printf "%s" "$points" | $FIT
done
