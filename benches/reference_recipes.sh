# The seed recipe's reference settings per L (docs/reference.md#training-recipes), sourced by
# the training benches: `recipe L` prints "beta hidden affine_blocks batch iterations lr".
recipe() {
  case "$1" in
    6) echo "0.537 36 2 300 350 0.02" ;;
    8) echo "0.576 64 2 500 750 0.01" ;;
    10) echo "0.601 100 3 1250 2000 0.005" ;;
    12) echo "0.616 144 3 4000 5000 0.003" ;;
    14) echo "0.626 196 3 7000 14000 0.001" ;;
    *) echo "no recipe for L = $1" >&2; exit 1 ;;
  esac
}
