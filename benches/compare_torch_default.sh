#!/usr/bin/env bash
# Wall time to PyTorch's final acceptance: for each L and seed, the PyTorch peer
# (../shared/peers/torch_ref.py) trains the seed recipe (docs/reference.md#training-recipes),
# then `latflow train --until-acceptance A` with latflow's default method runs with A the
# acceptance PyTorch reached, one after the other on an otherwise idle machine. Prints one
# JSON line per program and run; latflow's `wall` is the whole command (start-up, training,
# acceptance checks and the final 10,000-sample evaluation), PyTorch's `train_seconds` its
# training alone.
#
#   python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch numpy
#   benches/compare_torch_default.sh [L ...]     (default: 8 10; seeds via SEEDS="1 2 3")
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${TORCH_PYTHON:-/tmp/torch-venv/bin/python}
PEER=${PEER:-../shared/peers/torch_ref.py}
SEEDS=${SEEDS:-1}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet
source benches/reference_recipes.sh
for L in ${@:-8 10}; do
  read -r beta hidden blocks batch iters lr <<<"$(recipe "$L")"
  for seed in $SEEDS; do
    torch=$("$PY" "$PEER" "$L" "$beta" 0.5 "$hidden" "$blocks" 8 "$batch" "$iters" "$lr" --seed "$seed")
    echo "torch   L=$L seed=$seed $torch"
    target=$(echo "$torch" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["acceptance"], 3))')
    start=$(date +%s.%N)
    out=$("$TARGET/release/latflow" train --lattice "${L}x${L}" --beta "$beta" --lambda 0.5 \
      --until-acceptance "$target" --seed "$seed" --out "$TARGET/torch_default_L${L}_s${seed}.json" --json --quiet)
    wall=$(python3 -c "import time; print(round(time.time() - $start, 3))")
    echo -n "latflow L=$L seed=$seed "
    echo "$out" | python3 -c "
import json, sys
r = json.load(sys.stdin)
print(json.dumps({'until': $target, 'wall': $wall, **{k: r[k] for k in ['seconds', 'eval_seconds', 'configs_seen', 'acceptance', 'reached_target', 'n_params']}}))"
  done
done
