#!/usr/bin/env bash
# latflow's trainer against the PyTorch peer (../shared/peers/torch_ref.py) on the seed
# recipes of docs/reference.md#training-recipes, same recipe and same number of training
# configurations, run one after the other on an otherwise idle machine. Prints one JSON line
# per program and L.
#
#   python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch numpy
#   benches/compare_torch.sh [L ...]        (default: 6 8 10; seeds via SEEDS="1 2 3",
#                                            one side only via PROGRAMS=torch or latflow)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${TORCH_PYTHON:-/tmp/torch-venv/bin/python}
PEER=${PEER:-../shared/peers/torch_ref.py}
SEEDS=${SEEDS:-1}
PROGRAMS=${PROGRAMS:-torch latflow}
[[ $PROGRAMS == *latflow* ]] && cargo build --release --quiet
source benches/reference_recipes.sh
for L in "${@:-6 8 10}"; do
  for l in $L; do
    read -r beta hidden blocks batch iters lr <<<"$(recipe "$l")"
    for seed in $SEEDS; do
      if [[ $PROGRAMS == *torch* && -x "$PY" ]]; then
        echo -n "torch   L=$l seed=$seed "
        "$PY" "$PEER" "$l" "$beta" 0.5 "$hidden" "$blocks" 8 "$batch" "$iters" "$lr" --seed "$seed"
      fi
      [[ $PROGRAMS == *latflow* ]] || continue
      echo -n "latflow L=$l seed=$seed "
      target/release/latflow train --lattice "${l}x${l}" --beta "$beta" --lambda 0.5 \
        --recipe seed --hidden "$hidden" --affine-blocks "$blocks" --segments 8 \
        --batch "$batch" --iterations "$iters" --lr "$lr" --schedule cosine --seed "$seed" \
        --eval-samples 20000 --out "target/model_L${l}_s${seed}.json" --json |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({k: r[k] for k in ["seconds","configs_per_second","acceptance","ess","tau_rej","n_params","configs_seen"]}))'
    done
  done
done
