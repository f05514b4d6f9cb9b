#!/usr/bin/env bash
# Strong scaling of data-parallel training on one machine: the same training step (seed
# recipe shape, fixed batch) as 1 rank × 2 threads (one process, two chunks) and as
# 2 ranks × 1 thread (mpirun, one chunk per rank), then the cost of the gradient sum alone
# (examples/mpi_allreduce.rs). Prints one line per L and configuration: parameters, batch,
# milliseconds per step, the part of it spent in the gradient sum over ranks, and the part
# spent waiting for the slower rank before it.
#
#   benches/mpi_scaling.sh [L ...]        (default: 8 12 16; needs mpirun)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cargo build --release --quiet --features mpi --bin latflow --example mpi_allreduce
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/latflow
OUT=$(mktemp -d)
shape() {
  # beta hidden affine-blocks batch iterations
  case "$1" in
    8) echo "0.576 64 2 500 200" ;;
    12) echo "0.616 144 3 4000 24" ;;
    16) echo "0.634 256 3 8000 10" ;;
    *) echo "no shape for L = $1" >&2; exit 1 ;;
  esac
}
step_line() {
  python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
it = r["iterations"]
step = r["seconds"] / it * 1e3
comm = r["communication_seconds"] / it * 1e3
wait = r["wait_seconds"] / it * 1e3
params = r["n_params"]
print(f"L={sys.argv[2]:>2} {sys.argv[3]:<18} params {params:>8}  batch {sys.argv[4]:>5}  "
      f"step {step:9.2f} ms  gradient sum {comm*1e3:8.1f} µs ({100*comm/step:5.2f} %)  "
      f"wait {wait*1e3:8.1f} µs ({100*wait/step:5.2f} %)")
' "$@"
}
[ $# -gt 0 ] || set -- 8 12 16
for L in "$@"; do
  read -r beta hidden blocks batch iters <<<"$(shape "$L")"
  args=(train --lattice "${L}x${L}" --beta "$beta" --lambda 0.5 --recipe seed --hidden "$hidden"
        --affine-blocks "$blocks" --segments 8 --batch "$batch" --iterations "$iters"
        --lr 0.001 --seed 1 --eval-samples 100 --quiet --json)
  RAYON_NUM_THREADS=2 "$BIN" "${args[@]}" --chunks 2 --out "$OUT/one.json" > "$OUT/one.out"
  step_line "$OUT/one.out" "$L" "1 rank × 2 threads" "$batch"
  mpirun -np 2 -x RAYON_NUM_THREADS=1 "$BIN" "${args[@]}" --chunks 1 --out "$OUT/two.json" \
    > "$OUT/two.out"
  step_line "$OUT/two.out" "$L" "2 ranks × 1 thread" "$batch"
done
mpirun -np 2 "$TARGET/release/examples/mpi_allreduce"
rm -rf "$OUT"
