#!/usr/bin/env bash
# Flows toward the continuum: for each lattice size, the scalable family (the default
# method beyond |Λ| = 100, `latflow::run::scalable_method`, run here with its flags at every
# size; and, with MULTISCALE=1, the same flow arranged in coarse levels) against the dense
# default (`latflow::run::dense_method`: the seed recipe's architecture) on the ξ ≈ L/4 line
# at λ = 0.5: parameters, training configurations and seconds until an acceptance check
# first reads ≥ 0.5 and ≥ 0.7, configurations per second, final acceptance and ESS (10,000
# samples). Then, per family, the training-cost exponent: a power law C ∝ ξ^a (ξ = L/4)
# through the configurations to acceptance COST_TARGET (`examples/power_law_fit.rs`).
# Configurations do not depend on the machine's load; seconds do: run nothing else.
#
#   benches/scalable_flows.sh [L ...]   (default: 8 12 16 20 32 64)
# Environment: SEEDS="1" (seeds per size), TARGET=0.7 (the run stops there), COST_TARGET=0.5,
# TIME_LIMIT=7200 (seconds of training per run), DENSE_UP_TO=20 (largest L of the dense
# default: beyond, it does not fit in memory or time), MULTISCALE=0 (1: also the multiscale
# arrangement with LEVELS_L levels, default log2(L/4)), BETA_L (β at size L; the table below
# holds the measured ξ ≈ L/4 couplings of docs/reference.md; other sizes need BETA_L set).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-1}
TARGET=${TARGET:-0.7}
COST_TARGET=${COST_TARGET:-0.5}
TIME_LIMIT=${TIME_LIMIT:-7200}
DENSE_UP_TO=${DENSE_UP_TO:-20}
MULTISCALE=${MULTISCALE:-0}
cargo build --release --quiet --bin latflow --example power_law_fit
BIN=${CARGO_TARGET_DIR:-target}/release/latflow
FIT=${CARGO_TARGET_DIR:-target}/release/examples/power_law_fit
OUT=${CARGO_TARGET_DIR:-target}/scalable_flows
mkdir -p "$OUT"

beta() {
  local var="BETA_$1"
  if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
  case "$1" in
    6) echo 0.537 ;; 8) echo 0.576 ;; 10) echo 0.601 ;; 12) echo 0.616 ;; 14) echo 0.626 ;;
    16) echo 0.634 ;; 18) echo 0.641 ;; 20) echo 0.645 ;;
    24) echo 0.6524 ;; 32) echo 0.6614 ;; 48) echo 0.6704 ;; 64) echo 0.6745 ;;
    *) echo "set BETA_$1 (the ξ ≈ L/4 coupling at L = $1)" >&2; exit 1 ;;
  esac
}

# The scalable default's flags (run::scalable_method), with --recipe and extra flags.
scalable_flags() {
  local L=$1
  echo "--affine-blocks 2 --channels 16 --depth 2 --spline --segments 8 --free-field classes \
--gradient path --batch 256 --lr 0.003 --schedule cosine --iterations $((40 * L * L)) \
--eval-every 50 --check-samples 2500"
}

# One run: family, L, seed, then the train flags. Prints one JSON line with the figures.
run() {
  local family=$1 L=$2 seed=$3; shift 3
  local model="$OUT/${family}_L${L}_s${seed}.json" log="$OUT/${family}_L${L}_s${seed}.train.csv"
  local b; b=$(beta "$L")
  out=$($BIN train --lattice "${L}x${L}" --beta "$b" --lambda 0.5 "$@" \
    --until-acceptance "$TARGET" --time-limit "$TIME_LIMIT" --seed "$seed" \
    --out "$model" --log "$log" --json --quiet)
  echo "$out" | python3 -c '
import csv, json, sys
r = json.load(sys.stdin)
family, L, seed, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
first = {}
for row in csv.DictReader(open(log)):
    if row["acceptance"] and row["loss"]:
        a = float(row["acceptance"])
        for t in (0.5, 0.7):
            if a >= t and t not in first:
                first[t] = (int(row["configs_seen"]), float(row["seconds"]))
fig = {"family": family, "L": L, "seed": seed, "n_params": r["n_params"],
       "configs_per_second": round(r["configs_per_second"]), "configs_seen": r["configs_seen"],
       "seconds": round(r["seconds"], 1), "acceptance": round(r["acceptance"], 3),
       "ess": round(r["ess"], 3), "reached_target": r["reached_target"]}
for t in (0.5, 0.7):
    c, s = first.get(t, (None, None))
    fig[f"configs_to_{t}"], fig[f"seconds_to_{t}"] = c, s
print(json.dumps(fig))' "$family" "$L" "$seed" "$log"
}

SIZES=${@:-8 12 16 20 32 64}
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
for L in $SIZES; do
  for seed in $SEEDS; do
    # shellcheck disable=SC2046
    run scalable "$L" "$seed" --recipe conv $(scalable_flags "$L") | tee -a "$RESULTS"
    if [ "$MULTISCALE" = 1 ]; then
      var="LEVELS_$L"
      levels=${!var:-$(python3 -c "import math; print(max(1, int(math.log2($L / 4))))")}
      # shellcheck disable=SC2046
      run multiscale "$L" "$seed" --recipe multiscale --levels "$levels" \
        $(scalable_flags "$L") | tee -a "$RESULTS"
    fi
    if [ "$L" -le "$DENSE_UP_TO" ]; then
      # The dense default: `--until-acceptance` alone up to |Λ| = 100 is the dense method;
      # beyond, its flags (run::dense_method) are given explicitly.
      if [ $((L * L)) -le 100 ]; then
        run dense "$L" "$seed" | tee -a "$RESULTS"
      else
        hidden=$((L * L / 2)); batch=1000; period=$(((125 * L * L + 2) / 3))
        iters=$(python3 -c "print(-(-7000 * 14000 // 1000) if $L * $L > 144 else -(-4000 * 5000 // 1000))")
        run dense "$L" "$seed" --recipe seed --hidden "$hidden" --affine-blocks 3 --segments 8 \
          --gradient path --batch "$batch" --lr 0.003 --iterations "$iters" \
          --schedule warm-restarts --restart-period "$period" --restart-growth 2 \
          --eval-every $((period / 9)) --check-samples 2500 | tee -a "$RESULTS"
      fi
    fi
  done
done

# The training-cost exponent per family: configurations to COST_TARGET against ξ = L/4
# (mean over seeds, with the check interval's Δ/√12 as the error of one first crossing).
for family in scalable multiscale dense; do
  points=$(python3 -c '
import json, math, statistics as st, sys
family, target = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(sys.argv[3]) if l.strip()]
by_l = {}
for r in rows:
    c = r.get("configs_to_" + target)
    if r["family"] == family and c is not None:
        by_l.setdefault(r["L"], []).append(c)
for L in sorted(by_l):
    f = by_l[L]
    delta = 50 * 256 if family != "dense" else f[0] / 10
    sem = st.stdev(f) / math.sqrt(len(f)) if len(f) > 1 else 0.0
    print(L / 4, st.mean(f), math.sqrt(sem**2 + delta**2 / 12))' "$family" "$COST_TARGET" "$RESULTS")
  [ "$(echo "$points" | grep -c .)" -ge 2 ] || continue
  echo "$family: configurations to acceptance $COST_TARGET, power law in ξ = L/4 (ξ, C, σ, then the fit):"
  echo "$points"
  echo "$points" | $FIT
done
